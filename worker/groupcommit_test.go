package worker

import (
	"testing"

	"github.com/embedfleet/embedfleet/shared/engine"
)

func batchOf(first, n int) []engine.Result {
	b := make([]engine.Result, n)
	for i := range b {
		b[i].Tag = first + i
	}
	return b
}

// TestGroupCommit: batches that wait while a write is in flight go
// together in the next write, in order, never past maxRows except by one
// whole batch, and nothing is dropped or repeated.
func TestGroupCommit(t *testing.T) {
	queue := make(chan []engine.Result, 16)
	started, release := make(chan struct{}), make(chan struct{})
	var writes [][]int
	done := make(chan struct{})
	go func() {
		defer close(done)
		groupCommit(queue, 20, func(group []engine.Result) {
			tags := make([]int, len(group))
			for i, r := range group {
				tags[i] = r.Tag.(int)
			}
			writes = append(writes, tags)
			if len(writes) == 1 {
				close(started)
				<-release // the first write is slow: the next batches queue up
			}
		})
	}()
	queue <- batchOf(0, 8)
	<-started // the first batch is written alone
	for i := 1; i < 6; i++ {
		queue <- batchOf(i*8, 8)
	}
	close(release)
	close(queue)
	<-done
	// 1 batch, then 8+8+8 (24 >= 20 stops the group), then 8+8.
	want := []int{8, 24, 16}
	if len(writes) != len(want) {
		t.Fatalf("writes of %v rows, want %v", lens(writes), want)
	}
	next := 0
	for i, w := range writes {
		if len(w) != want[i] {
			t.Fatalf("writes of %v rows, want %v", lens(writes), want)
		}
		for _, tag := range w {
			if tag != next {
				t.Fatalf("write %d holds %d where %d comes next: %v", i, tag, next, writes)
			}
			next++
		}
	}
}

// TestGroupCommitFastWrites: when each write finishes before the next
// batch comes, every batch is its own write.
func TestGroupCommitFastWrites(t *testing.T) {
	queue := make(chan []engine.Result)
	got := make(chan int, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		groupCommit(queue, 1024, func(group []engine.Result) { got <- len(group) })
	}()
	for i := range 5 {
		queue <- batchOf(i*4, 4)
		if n := <-got; n != 4 {
			t.Fatalf("write %d has %d rows, want the one batch of 4", i, n)
		}
	}
	close(queue)
	<-done
}

func lens(ws [][]int) []int {
	out := make([]int, len(ws))
	for i, w := range ws {
		out[i] = len(w)
	}
	return out
}
