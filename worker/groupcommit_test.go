package worker

import (
	"errors"
	"strings"
	"testing"

	"github.com/embedfleet/embedfleet/shared/engine"
	"github.com/embedfleet/embedfleet/shared/objstore"
	"github.com/embedfleet/embedfleet/shared/vecstore"
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

// TestPlanGroup: a group becomes one write per collection, in order of
// first appearance; an object that comes twice in a group (a redelivered
// job's copy) is one row carrying the later vector, while both entries
// still learn the outcome; a failed embedding finishes its job at once and
// writes nothing.
func TestPlanGroup(t *testing.T) {
	src, err := objstore.Open(t.TempDir(), objstore.S3Config{}, objstore.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	newJob := func(keys ...string) *jobState {
		st := &jobState{src: src, pending: len(keys), done: make(chan struct{})}
		for _, k := range keys {
			st.items = append(st.items, item{key: k, etag: "e-" + k})
		}
		return st
	}
	colA, colB := &vecstore.Collection{}, &vecstore.Collection{}
	first := newJob("a.jpg", "b.jpg", "c.jpg")
	redelivered := newJob("a.jpg")
	failed := newJob("d.jpg")
	res := func(st *jobState, idx int, col *vecstore.Collection, v float32) engine.Result {
		return engine.Result{Tag: entry{st: st, idx: idx, col: col}, Vec: []float32{v}}
	}
	bad := engine.Result{Tag: entry{st: failed, idx: 0, col: colA}, Err: errors.New("bad tensor")}
	group := []engine.Result{
		res(first, 0, colA, 1), res(first, 1, colB, 2), bad, res(first, 2, colA, 3), res(redelivered, 0, colA, 4),
	}
	writes := planGroup("m", group)
	if len(writes) != 2 || writes[0].col != colA || writes[1].col != colB {
		t.Fatalf("want one write for A then one for B, got %d writes", len(writes))
	}
	a := writes[0]
	if len(a.rows) != 2 || len(a.ents) != 3 {
		t.Fatalf("collection A: %d rows for %d entries, want 2 rows (a once, c) for 3 entries", len(a.rows), len(a.ents))
	}
	if a.rows[0].URI != src.ObjectURI("a.jpg") || a.rows[0].Vector[0] != 4 || a.rows[1].Vector[0] != 3 {
		t.Fatalf("collection A rows %+v: want a.jpg with the later vector (4), then c.jpg (3)", a.rows)
	}
	if a.rows[0].ID != vecstore.ID(src.ObjectURI("a.jpg")) {
		t.Fatalf("row ID %q is not the ID of its URI", a.rows[0].ID)
	}
	if b := writes[1]; len(b.rows) != 1 || b.rows[0].ETag != "e-b.jpg" {
		t.Fatalf("collection B rows %+v, want b.jpg alone", b.rows)
	}
	select {
	case <-failed.done:
		if failed.err == nil || !strings.Contains(failed.err.Error(), "embed m: bad tensor") {
			t.Fatalf("failed job's error %v", failed.err)
		}
	default:
		t.Fatal("the failed embedding did not finish its job")
	}
	if first.pending != 3 || redelivered.pending != 1 {
		t.Fatalf("planning finished entries it should leave to the write: pending %d and %d", first.pending, redelivered.pending)
	}
}
