package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/jobs"
)

// Runs returns the run records kept in the runs bucket, newest first.
func (c *Coordinator) Runs(ctx context.Context) ([]jobs.Run, error) {
	js, t := c.JS, c.Topology
	kv, err := js.KeyValue(ctx, t.RunsBucket())
	if err != nil {
		return nil, fmt.Errorf("runs bucket %s: %w", t.RunsBucket(), err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var runs []jobs.Run
	for k := range keys.Keys() {
		if !strings.HasPrefix(k, "run_") {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		r, err := jobs.Decode[jobs.Run](e.Value())
		if err != nil {
			continue
		}
		runs = append(runs, r)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].Started.After(runs[j].Started) })
	return runs, nil
}

// GetRun returns the record of run id.
func (c *Coordinator) GetRun(ctx context.Context, id string) (jobs.Run, error) {
	js, t := c.JS, c.Topology
	kv, err := js.KeyValue(ctx, t.RunsBucket())
	if err != nil {
		return jobs.Run{}, err
	}
	e, err := kv.Get(ctx, RunKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return jobs.Run{}, fmt.Errorf("no run %s", id)
	}
	if err != nil {
		return jobs.Run{}, err
	}
	return jobs.Decode[jobs.Run](e.Value())
}

// Status reads the results and dead letters of rec received so far, without
// waiting for more.
func (c *Coordinator) Status(ctx context.Context, rec jobs.Run) (Summary, error) {
	js, t := c.JS, c.Topology
	sum := Summary{Run: rec.ID, Listed: rec.Listed, Jobs: rec.Jobs, Elapsed: time.Since(rec.Started)}
	seen := map[int64]bool{}
	// drain reads the messages on subject that the stream holds now.
	drain := func(stream, subject string, fn func([]byte)) error {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			return err
		}
		want := info.State.Subjects[subject]
		if want == 0 {
			return nil
		}
		c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
		if err != nil {
			return err
		}
		for got := uint64(0); got < want; {
			msgs, err := c.Fetch(int(min(want-got, 256)), jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				return err
			}
			n := 0
			for m := range msgs.Messages() {
				n++
				fn(m.Data())
			}
			if n == 0 {
				return nil // the stream lost messages meanwhile (age limit); report what we have
			}
			got += uint64(n)
		}
		return nil
	}
	err := drain(t.ResultsStream(), t.ResultSubject(rec.ID), func(b []byte) {
		r, err := jobs.Decode[jobs.Result](b)
		if err != nil || seen[r.Seq] {
			return
		}
		seen[r.Seq] = true
		sum.Done++
		sum.Stored += int64(r.Stored)
		sum.Failed = append(sum.Failed, r.Failed...)
	})
	if err != nil {
		return sum, fmt.Errorf("results of %s: %w", rec.ID, err)
	}
	err = drain(t.DeadStream(), t.DeadSubject(rec.ID), func(b []byte) {
		var d jobs.Dead
		if json.Unmarshal(b, &d) != nil || seen[d.Job.Seq] {
			return
		}
		seen[d.Job.Seq] = true
		sum.Dead++
		for _, it := range d.Job.Items {
			sum.Failed = append(sum.Failed, jobs.Failure{Key: it.Key, Reason: "dead-lettered: " + d.Reason})
		}
	})
	if err != nil {
		return sum, fmt.Errorf("dead letters of %s: %w", rec.ID, err)
	}
	sum.Complete = rec.Enumerated && int64(len(seen)) >= rec.Jobs
	return sum, nil
}
