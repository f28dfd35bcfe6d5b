package imageprep_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/embedfleet/embedfleet/shared/imageprep"
)

type fixtureCase struct {
	Image             string             `json:"image"`
	Model             string             `json:"model"`
	Width             int                `json:"width"`
	Height            int                `json:"height"`
	PixelValuesSHA256 string             `json:"pixel_values_sha256"`
	CropSHA256        string             `json:"crop_sha256"`
	Samples           map[string]float64 `json:"samples"`
}

func loadFixtures(t *testing.T) []fixtureCase {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "manifest.json"))
	if err != nil {
		t.Fatalf("parity fixtures: %v (regenerate with `make fixtures`)", err)
	}
	var m struct {
		Cases []fixtureCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Cases) == 0 {
		t.Fatal("parity fixtures: manifest has no cases")
	}
	return m.Cases
}

var params = map[string]imageprep.Params{
	"clip-vit-b32": imageprep.CLIP,
	"dinov2-base":  imageprep.DINOv2,
}

// TestParityWithHuggingFace decodes each fixture image and preprocesses it
// for each model, and checks that the 8-bit crop and the float32 tensor are
// bit for bit what the Hugging Face processors (Pillow underneath) computed.
func TestParityWithHuggingFace(t *testing.T) {
	dec := imageprep.NewDecoder(imageprep.Limits{})
	defer dec.Close()
	for _, tc := range loadFixtures(t) {
		t.Run(tc.Image+"/"+tc.Model, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "images", tc.Image))
			if err != nil {
				t.Fatal(err)
			}
			img, _, err := dec.Decode(data)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if img.Width != tc.Width || img.Height != tc.Height {
				t.Fatalf("decoded %dx%d, reference %dx%d", img.Width, img.Height, tc.Width, tc.Height)
			}
			pp, err := imageprep.NewPreprocessor(params[tc.Model])
			if err != nil {
				t.Fatal(err)
			}
			crop := make([]byte, 224*224*3)
			if err := pp.Crop(img, crop); err != nil {
				t.Fatal(err)
			}
			pv := make([]float32, pp.Size())
			if err := pp.Run(img, pv); err != nil {
				t.Fatal(err)
			}
			for k, want := range tc.Samples {
				i, _ := strconv.Atoi(k)
				if math.Abs(float64(pv[i])-want) > 1e-6 {
					t.Errorf("pixel_values[%d] = %v, reference %v", i, pv[i], want)
				}
			}
			if got := sum(crop); got != tc.CropSHA256 {
				t.Errorf("8-bit crop differs from Pillow's (sha256 %s, want %s)", got[:12], tc.CropSHA256[:12])
			}
			raw := make([]byte, 4*len(pv))
			for i, v := range pv {
				binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
			}
			if got := sum(raw); got != tc.PixelValuesSHA256 {
				t.Errorf("pixel_values differ from the processor's (sha256 %s, want %s)", got[:12], tc.PixelValuesSHA256[:12])
			}
		})
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
