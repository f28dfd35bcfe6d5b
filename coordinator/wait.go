package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/embedfleet/embedfleet/shared/bus"
	"github.com/embedfleet/embedfleet/shared/jobs"
)

// Summary is what a run came to.
type Summary struct {
	Run      string
	Listed   int64
	Jobs     int64
	Done     int64 // jobs with a result
	Stored   int64 // items stored in every model's collection
	Failed   []jobs.Failure
	Dead     int64 // jobs dead-lettered
	Elapsed  time.Duration
	Complete bool
}

// Progress receives the running summary about every second.
type Progress func(Summary)

// Wait follows the results of run rec (an enumerated run) until every job
// has a result or was dead-lettered, or ctx ends. Results delivered twice
// (a job redelivered after its result was sent) count once.
func Wait(ctx context.Context, js jetstream.JetStream, t bus.Topology, rec jobs.Run, progress Progress) (Summary, error) {
	start := time.Now()
	sum := Summary{Run: rec.ID, Listed: rec.Listed, Jobs: rec.Jobs}
	if rec.Jobs == 0 {
		sum.Complete = true
		return sum, nil
	}
	results, err := js.OrderedConsumer(ctx, t.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{t.ResultSubject(rec.ID)},
	})
	if err != nil {
		return sum, fmt.Errorf("coordinator: follow results: %w", err)
	}
	dead, err := js.OrderedConsumer(ctx, t.DeadStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{t.DeadSubject(rec.ID)},
	})
	if err != nil {
		return sum, fmt.Errorf("coordinator: follow dead letters: %w", err)
	}
	seen := make(map[int64]bool, rec.Jobs)
	last := time.Now()
	for {
		if int64(len(seen)) >= rec.Jobs {
			sum.Complete = true
			sum.Elapsed = time.Since(start)
			return sum, nil
		}
		if err := ctx.Err(); err != nil {
			sum.Elapsed = time.Since(start)
			return sum, err
		}
		if msgs, err := results.Fetch(64, jetstream.FetchMaxWait(200*time.Millisecond)); err == nil {
			for m := range msgs.Messages() {
				r, err := jobs.Decode[jobs.Result](m.Data())
				if err != nil || seen[r.Seq] {
					continue
				}
				seen[r.Seq] = true
				sum.Done++
				sum.Stored += int64(r.Stored)
				sum.Failed = append(sum.Failed, r.Failed...)
			}
		} else if !errors.Is(err, context.DeadlineExceeded) {
			return sum, fmt.Errorf("coordinator: results: %w", err)
		}
		if msgs, err := dead.Fetch(64, jetstream.FetchMaxWait(10*time.Millisecond)); err == nil {
			for m := range msgs.Messages() {
				var d jobs.Dead
				if json.Unmarshal(m.Data(), &d) != nil || seen[d.Job.Seq] {
					continue
				}
				seen[d.Job.Seq] = true
				sum.Dead++
				for _, it := range d.Job.Items {
					sum.Failed = append(sum.Failed, jobs.Failure{Key: it.Key, Reason: "dead-lettered: " + d.Reason})
				}
			}
		}
		if progress != nil && time.Since(last) > time.Second {
			last = time.Now()
			sum.Elapsed = time.Since(start)
			progress(sum)
		}
	}
}
