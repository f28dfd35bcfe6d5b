package main

import (
	"bytes"
	"image"
	"image/png"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/testimages"
)

func jetstreamSubjects(subj string) jetstream.StreamInfoOpt { return jetstream.WithSubjectFilter(subj) }

var pngHeaderClaiming = testimages.PNGHeaderClaiming

// stripPNG is a valid w x h grey PNG: a huge strip with almost no pixels.
func stripPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	m := image.NewGray(image.Rect(0, 0, w, h))
	for i := range m.Pix {
		m.Pix[i] = byte(i)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
