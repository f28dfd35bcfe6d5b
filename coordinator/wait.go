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

// WaitOptions tune Wait. Zero values take the defaults.
type WaitOptions struct {
	Progress Progress
	// Journal holds the run's jobs. A job with no result that is no longer
	// in the jobs stream (so no worker has it) for LostAfter is lost: it is
	// published again from the journal, at most MaxRepublish times, then
	// its items are reported as failed ("lost").
	Journal      *Journal
	LostAfter    time.Duration // default 30 s
	MaxRepublish int           // default 3
}

// Wait follows the results of run rec (an enumerated run) until every job
// has a result or was dead-lettered, or ctx ends. Results delivered twice
// (a job redelivered after its result was sent) count once.
func Wait(ctx context.Context, js jetstream.JetStream, t bus.Topology, rec jobs.Run, progress Progress) (Summary, error) {
	return WaitWith(ctx, js, t, rec, WaitOptions{Progress: progress})
}

// WaitWith is Wait with options: it also recovers lost jobs.
func WaitWith(ctx context.Context, js jetstream.JetStream, t bus.Topology, rec jobs.Run, o WaitOptions) (Summary, error) {
	if o.LostAfter <= 0 {
		o.LostAfter = 30 * time.Second
	}
	if o.MaxRepublish <= 0 {
		o.MaxRepublish = 3
	}
	progress := o.Progress
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
	lastResult := time.Now()
	republished := map[int64]int{}
	jobStream, err := js.Stream(ctx, t.JobsStream())
	if err != nil {
		return sum, fmt.Errorf("coordinator: jobs stream: %w", err)
	}
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
				lastResult = time.Now()
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
				lastResult = time.Now()
				sum.Dead++
				for _, it := range d.Job.Items {
					sum.Failed = append(sum.Failed, jobs.Failure{Key: it.Key, Reason: "dead-lettered: " + d.Reason})
				}
			}
		}
		if time.Since(lastResult) > o.LostAfter {
			lastResult = time.Now()
			if err := recoverLost(ctx, js, t, rec, jobStream, seen, republished, o, &sum); err != nil {
				return sum, err
			}
		}
		if progress != nil && time.Since(last) > time.Second {
			last = time.Now()
			sum.Elapsed = time.Since(start)
			progress(sum)
		}
	}
}

// recoverLost republishes the jobs that have no result and are no longer in
// the jobs stream, once nothing of the run is left in the stream.
func recoverLost(ctx context.Context, js jetstream.JetStream, t bus.Topology, rec jobs.Run, st jetstream.Stream,
	seen map[int64]bool, republished map[int64]int, o WaitOptions, sum *Summary) error {
	subj := t.JobSubject(rec.ID)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return fmt.Errorf("coordinator: jobs stream: %w", err)
	}
	if info.State.Subjects[subj] > 0 {
		return nil // workers still have jobs of this run; they are slow, not lost
	}
	for seq := int64(1); seq <= rec.Jobs; seq++ {
		if seen[seq] {
			continue
		}
		data, ok := o.Journal.get(seq)
		if !ok || republished[seq] >= o.MaxRepublish {
			reason := "lost: no result, and the job is not in the stream"
			if ok {
				reason = fmt.Sprintf("lost: no result after %d republishes", republished[seq])
			}
			seen[seq] = true
			sum.Dead++
			var job jobs.Job
			if json.Unmarshal(data, &job) == nil && len(job.Items) > 0 {
				for _, it := range job.Items {
					sum.Failed = append(sum.Failed, jobs.Failure{Key: it.Key, Reason: reason})
				}
			} else {
				sum.Failed = append(sum.Failed, jobs.Failure{Key: fmt.Sprintf("job %d of run %s", seq, rec.ID), Reason: reason})
			}
			continue
		}
		republished[seq]++
		id := fmt.Sprintf("%s.%d.r%d", rec.ID, seq, republished[seq])
		if _, err := js.Publish(ctx, subj, data, jetstream.WithMsgID(id)); err != nil {
			return fmt.Errorf("coordinator: republish job %d: %w", seq, err)
		}
	}
	return nil
}
