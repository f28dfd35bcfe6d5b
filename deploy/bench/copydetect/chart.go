package copydetect

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Curve is one model's precision-recall curve, as PRCurve returns it.
type Curve struct {
	Recall, Precision []float64
}

var palette = []color.RGBA{{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {148, 103, 189, 255}, {255, 127, 14, 255}}

// Chart sizes, in pixels of the PNG.
const (
	ChartWidth  = 960
	ChartHeight = 420
)

// WriteChart draws, for each result, its precision-recall curve (left:
// axes from 0 to 1 with ticks, a legend naming the models) and its
// images/s (right: one bar per model with its value on it) into a PNG.
func WriteChart(path string, rs []Result, curves []Curve) error {
	pr := plot.New()
	pr.Title.Text = "precision-recall (pooled predictions)"
	pr.X.Label.Text = "recall"
	pr.Y.Label.Text = "precision"
	pr.X.Min, pr.X.Max, pr.Y.Min, pr.Y.Max = 0, 1, 0, 1.02
	pr.Add(plotter.NewGrid())
	pr.Legend.Top, pr.Legend.Left = false, true
	for i, c := range curves {
		if len(c.Recall) == 0 {
			continue
		}
		xys := make(plotter.XYs, len(c.Recall))
		for j := range c.Recall {
			xys[j] = plotter.XY{X: c.Recall[j], Y: c.Precision[j]}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color, l.Width = palette[i%len(palette)], vg.Points(2)
		pr.Add(l)
		name := fmt.Sprintf("%s (AP %.3f)", rs[i].Model, rs[i].MicroAP)
		pr.Legend.Add(name, l)
	}

	speed := plot.New()
	speed.Title.Text = "images/s (index and query)"
	speed.Y.Label.Text = "img/s"
	speed.Y.Min = 0
	names := make([]string, len(rs))
	var labels plotter.XYLabels
	top := 0.0
	for i, r := range rs {
		names[i] = r.Model
		top = max(top, r.ImgPerSec)
		bars, err := plotter.NewBarChart(barAt(i, len(rs), r.ImgPerSec), vg.Points(60))
		if err != nil {
			return err
		}
		bars.Color, bars.LineStyle.Width = palette[i%len(palette)], 0
		speed.Add(bars)
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(i), Y: r.ImgPerSec})
		labels.Labels = append(labels.Labels, fmt.Sprintf("%.1f", r.ImgPerSec))
	}
	speed.Y.Max = top * 1.15
	speed.NominalX(names...)
	if len(rs) > 0 {
		l, err := plotter.NewLabels(labels)
		if err != nil {
			return err
		}
		for i := range l.TextStyle {
			l.TextStyle[i].XAlign = draw.XCenter
		}
		l.Offset = vg.Point{Y: vg.Points(4)}
		speed.Add(l)
	}

	// vgimg draws at 96 dpi; a point is 1/72 inch.
	img := vgimg.New(vg.Points(ChartWidth*72/96), vg.Points(ChartHeight*72/96))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(24), PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(8)}
	canvases := plot.Align([][]*plot.Plot{{pr, speed}}, tiles, dc)
	pr.Draw(canvases[0][0])
	speed.Draw(canvases[0][1])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// barAt is a bar chart's values with v at position i of n and nothing
// elsewhere, so that each model's bar has its own colour and place.
func barAt(i, n int, v float64) plotter.Values {
	vals := make(plotter.Values, n)
	vals[i] = v
	return vals
}
