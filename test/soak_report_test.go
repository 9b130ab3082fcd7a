package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// soakPlotted are the maps whose fill the chart shows: one entry per
// object of the churn, and the flows of its traffic.
var soakPlotted = []string{"endpoints", "ifaces", "publications", "held_ports", "source_ranges", "ct", "ct_new"}

// writeSoakReport puts soak.png (the daemon's memory, goroutines, open
// files and map fill over the run, beside the sandboxes it had),
// soak.json (the samples) and soak.md (the run in a few lines) in
// cfg.out, as make soak asks.
func writeSoakReport(cfg soakConfig, samples []soakSample, ops map[string]int, trafficOK, trafficFailed int, base, end soakSample) error {
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(samples, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cfg.out, "soak.json"), data, 0o644); err != nil {
		return err
	}
	total := 0
	var names []string
	for op, n := range ops {
		total += n
		names = append(names, fmt.Sprintf("%s %d", op, n))
	}
	slices.Sort(names)
	var peak soakSample
	for _, smp := range samples {
		if smp.Sandboxes >= peak.Sandboxes {
			peak = smp
		}
	}
	md := fmt.Sprintf(`# Soak: %s

make soak SOAK_TIME=%s SOAK_SEED=%d (up to %d sandboxes on %d networks, up to %.0f operations/s)

- operations: %d (%.1f/s): %s
- traffic meanwhile: %d probes answered, %d not (the churn removes their ends)
- the daemon, start → peak (%d sandboxes) → everything removed: RSS %.1f → %.1f → %.1f MB; goroutines %.0f → %.0f → %.0f; open files %.0f → %.0f → %.0f

![the daemon over the run](soak.png)
`, cfg.duration, cfg.duration, cfg.seed, cfg.sandboxes, cfg.networks, cfg.rate,
		total, float64(total)/cfg.duration.Seconds(), strings.Join(names, ", "), trafficOK, trafficFailed,
		peak.Sandboxes, base.RSS/1e6, peak.RSS/1e6, end.RSS/1e6, base.Goroutines, peak.Goroutines, end.Goroutines, base.FDs, peak.FDs, end.FDs)
	if err := os.WriteFile(filepath.Join(cfg.out, "soak.md"), []byte(md), 0o644); err != nil {
		return err
	}
	return soakChart(samples, filepath.Join(cfg.out, "soak.png"))
}

// soakChart draws four panels over time, one above the other.
func soakChart(samples []soakSample, path string) error {
	series := func(f func(soakSample) float64) plotter.XYs {
		var pts plotter.XYs
		for _, s := range samples {
			pts = append(pts, plotter.XY{X: s.At.Minutes(), Y: f(s)})
		}
		return pts
	}
	panel := func(title, ylabel string, lines ...any) (*plot.Plot, error) {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = "minutes"
		p.Y.Label.Text = ylabel
		p.Y.Min = 0
		p.Legend.Top = true
		return p, plotutil.AddLines(p, lines...)
	}
	sandboxes := series(func(s soakSample) float64 { return float64(s.Sandboxes) })
	var mapLines []any
	for _, name := range soakPlotted {
		mapLines = append(mapLines, name, series(func(s soakSample) float64 { return float64(s.MapEntries[name]) }))
	}
	var plots []*plot.Plot
	for _, p := range []struct {
		title, ylabel string
		lines         []any
	}{
		{"Sandboxes and the daemon's goroutines", "count", []any{"sandboxes", sandboxes,
			"goroutines", series(func(s soakSample) float64 { return s.Goroutines })}},
		{"The daemon's open files", "count", []any{"open files", series(func(s soakSample) float64 { return s.FDs }),
			"sandboxes", sandboxes}},
		{"The daemon's resident memory", "MB", []any{"RSS", series(func(s soakSample) float64 { return s.RSS / 1e6 })}},
		{"Map entries", "entries", mapLines},
	} {
		pl, err := panel(p.title, p.ylabel, p.lines...)
		if err != nil {
			return err
		}
		plots = append(plots, pl)
	}
	const w, h = 8 * vg.Inch, 12 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadY: vg.Millimeter * 4, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	grid := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		grid[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(grid, tiles, dc)
	for i, p := range plots {
		p.Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		return err
	}
	return f.Close()
}
