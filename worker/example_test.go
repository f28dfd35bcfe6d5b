package worker_test

import (
	"context"
	"fmt"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/embed"
	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/vecstore"
	"github.com/embedfleet/embedfleet/worker"
)

// Run a worker until ctx ends: it pulls jobs, embeds their images with
// every model and upserts the vectors. Needs NATS JetStream, Milvus, S3 and
// ONNX Runtime.
func Example() {
	ctx := context.Background()
	nc, js, err := bus.Connect(bus.Config{URL: "nats://localhost:4222"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	topo := bus.Topology{Prefix: "EMBEDFLEET"}
	if err := topo.Ensure(ctx, js, bus.StreamOptions{}); err != nil {
		fmt.Println(err)
		return
	}
	cons, err := topo.WorkerConsumer(ctx, js, bus.ConsumerOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	store, err := vecstore.Connect(ctx, vecstore.Config{Address: "localhost:19530"})
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := embed.Init(embed.LibraryPath("")); err != nil {
		fmt.Println(err)
		return
	}
	m, err := embed.Open("models/clip-vit-b32", embed.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	s3 := objstore.S3Config{Endpoint: "localhost:9000", PathStyle: true}
	w, err := worker.New(ctx, worker.Config{JS: js, Topology: topo, Consumer: cons, Models: []engine.ImageEncoder{m}, Store: store,
		OpenSource: func(uri string) (objstore.Source, error) { return objstore.Open(uri, s3, objstore.Filter{}) }})
	if err != nil {
		fmt.Println(err) // a collection holding another version of the model fails here
		return
	}
	fmt.Println(w.Run(ctx)) // returns once ctx ends and the jobs in hand are finished or handed back
}
