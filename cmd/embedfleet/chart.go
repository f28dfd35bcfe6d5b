package main

import (
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"sort"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// prCurve is the precision-recall curve of pooled predictions ranked by
// score: one point per correct prediction.
func prCurve(truth map[string]string, results map[string][]scored) (recall, precision []float64) {
	type pred struct {
		hit   bool
		score float64
	}
	var preds []pred
	positives := 0
	for q, want := range truth {
		if want != "" {
			positives++
		}
		for _, r := range results[q] {
			preds = append(preds, pred{want != "" && r.ref == want, r.score})
		}
	}
	if positives == 0 {
		return nil, nil
	}
	sort.Slice(preds, func(i, j int) bool { return preds[i].score > preds[j].score })
	hits := 0
	for i, p := range preds {
		if p.hit {
			hits++
			recall = append(recall, float64(hits)/float64(positives))
			precision = append(precision, float64(hits)/float64(i+1))
		}
	}
	return recall, precision
}

var palette = []color.RGBA{{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {148, 103, 189, 255}}

// writeChart draws precision-recall curves (left) and images/s bars
// (right) for each model into a PNG.
func writeChart(path string, rs []cdResult, curves [][2][]float64) error {
	const w, h = 960, 420
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	black := color.RGBA{0, 0, 0, 255}
	text := func(x, y int, s string, c color.Color) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	line := func(x0, y0, x1, y1 int, c color.Color) {
		dx, dy := abs(x1-x0), -abs(y1-y0)
		sx, sy := sign(x1-x0), sign(y1-y0)
		err := dx + dy
		for {
			img.Set(x0, y0, c)
			img.Set(x0, y0+1, c)
			if x0 == x1 && y0 == y1 {
				return
			}
			e2 := 2 * err
			if e2 >= dy {
				err += dy
				x0 += sx
			}
			if e2 <= dx {
				err += dx
				y0 += sy
			}
		}
	}
	// Left: precision (y) against recall (x).
	ox, oy, pw, ph := 60, 370, 360, 320
	line(ox, oy, ox+pw, oy, black)
	line(ox, oy, ox, oy-ph, black)
	text(ox+pw/2-20, oy+30, "recall", black)
	text(8, oy-ph/2, "prec.", black)
	text(ox, 30, "precision-recall (pooled predictions)", black)
	for i, c := range curves {
		col := palette[i%len(palette)]
		px, py := ox, oy-ph
		for j := range c[0] {
			x, y := ox+int(c[0][j]*float64(pw)), oy-int(c[1][j]*float64(ph))
			line(px, py, x, y, col)
			px, py = x, y
		}
		text(ox+pw-150, 60+16*i, rs[i].Model, col)
	}
	// Right: img/s bars per model (index, query).
	bx, bw := 540, 360
	maxv := 1.0
	for _, r := range rs {
		maxv = max(maxv, r.IndexImgS, r.QueryImgS)
	}
	line(bx, oy, bx+bw, oy, black)
	text(bx, 30, "images/s: index (solid), query (light)", black)
	slot := bw / max(1, len(rs))
	for i, r := range rs {
		col := palette[i%len(palette)]
		light := color.RGBA{col.R/2 + 127, col.G/2 + 127, col.B/2 + 127, 255}
		for k, v := range []float64{r.IndexImgS, r.QueryImgS} {
			c := col
			if k == 1 {
				c = light
			}
			x0 := bx + i*slot + 10 + k*(slot/2-10)
			bar := int(v / maxv * float64(ph))
			draw.Draw(img, image.Rect(x0, oy-bar, x0+slot/2-20, oy), image.NewUniform(c), image.Point{}, draw.Src)
		}
		text(bx+i*slot+10, oy+30, r.Model, col)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}
