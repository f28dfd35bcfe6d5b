// Command inferbench measures ONNX Runtime inference throughput of one model
// by batch size, on preprocessed input, as `make bench-embed` runs it:
//
//	go run ./deploy/bench/inferbench --model DIR --batches 1,8,32 --seconds 20
//
// It prints `infer MODEL batch=B threads=T img_s=X runs=N` per batch size.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/embedfleet/embedfleet/shared/embed"
)

func main() {
	dir := flag.String("model", "", "model folder with spec.json and model.onnx (required)")
	batches := flag.String("batches", "1,8,32", "comma-separated batch sizes")
	seconds := flag.Float64("seconds", 20, "time per batch size (after one warm-up run)")
	threads := flag.Int("threads", 0, "ONNX Runtime intra-op threads; 0 = one per core")
	ortLib := flag.String("ort-lib", os.Getenv("EMBEDFLEET_ORT_LIB"), "ONNX Runtime library")
	device := flag.String("device", "cpu", "cpu, or cuda:N (then --ort-lib is the GPU build, default EMBEDFLEET_ORT_GPU_LIB)")
	flag.Parse()
	if err := run(*dir, *batches, *seconds, *threads, *ortLib, *device); err != nil {
		fmt.Fprintln(os.Stderr, "inferbench:", err)
		os.Exit(1)
	}
}

func run(dir, batches string, seconds float64, threads int, ortLib, device string) error {
	if dir == "" {
		return fmt.Errorf("--model is required")
	}
	opts := embed.Options{IntraOpThreads: threads, SkipHashCheck: true}
	lib := embed.LibraryPath(ortLib)
	if dev, ok := strings.CutPrefix(device, "cuda:"); ok {
		id, err := strconv.Atoi(dev)
		if err != nil {
			return fmt.Errorf("--device %q: want cpu or cuda:N", device)
		}
		opts.Provider, opts.DeviceID = embed.ProviderCUDA, id
		if ortLib == "" || ortLib == os.Getenv("EMBEDFLEET_ORT_LIB") {
			lib = embed.GPULibraryPath(os.Getenv("EMBEDFLEET_ORT_GPU_LIB"))
		}
	} else if device != "cpu" {
		return fmt.Errorf("--device %q: want cpu or cuda:N", device)
	}
	if _, err := embed.Init(lib); err != nil {
		return err
	}
	m, err := embed.Open(dir, opts)
	if err != nil {
		return err
	}
	defer m.Close()
	for _, s := range strings.Split(batches, ",") {
		b, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || b < 1 {
			return fmt.Errorf("bad batch size %q", s)
		}
		in := make([]float32, b*m.InputSize())
		for i := range in {
			in[i] = rand.Float32()*4 - 2
		}
		out := make([]float32, b*m.Spec().Dim)
		if err := m.Embed(in, b, out); err != nil { // warm-up
			return err
		}
		runs := 0
		start := time.Now()
		for time.Since(start).Seconds() < seconds || runs < 2 {
			if err := m.Embed(in, b, out); err != nil {
				return err
			}
			runs++
		}
		el := time.Since(start).Seconds()
		fmt.Printf("infer %s precision=%s device=%s batch=%d threads=%d img_s=%.1f runs=%d\n", m.Spec().Name, precision(m.Spec()), device, b, threads, float64(runs*b)/el, runs)
	}
	return nil
}

func precision(s embed.Spec) string {
	if s.Precision == "" {
		return embed.PrecisionFP32
	}
	return s.Precision
}
