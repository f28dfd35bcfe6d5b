package coordinator_test

import (
	"context"
	"fmt"

	"github.com/embedfleet/embedfleet/coordinator"
	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/objstore"
)

// Publish one run of a bucket prefix and follow it to completion. Needs
// NATS JetStream, S3 and running workers.
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
	src, err := objstore.Open("s3://photos/2024/", objstore.S3Config{Endpoint: "localhost:9000", PathStyle: true}, objstore.Filter{})
	if err != nil {
		fmt.Println(err)
		return
	}
	rec, err := coordinator.Run(ctx, coordinator.Config{JS: js, Topology: topo, Source: src, Models: []string{"clip-vit-b32"}})
	if err != nil {
		fmt.Println(err) // bus.ErrLeaseHeld when another run of the source is going on
		return
	}
	sum, err := coordinator.New(js, topo).Wait(ctx, rec, func(s coordinator.Summary) { fmt.Println(s.Done, "of", s.Jobs, "jobs") })
	fmt.Println(sum.Stored, "stored,", len(sum.Failed), "failed", err)
}
