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
	Dead     int64         // jobs dead-lettered
	Elapsed  time.Duration // since the run's start (its record's Started): jobs are embedded while the listing goes on
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
func (c *Coordinator) Wait(ctx context.Context, rec jobs.Run, progress Progress) (Summary, error) {
	return c.WaitWith(ctx, rec, WaitOptions{Progress: progress})
}

// WaitWith is Wait with options: it also recovers lost jobs.
func (c *Coordinator) WaitWith(ctx context.Context, rec jobs.Run, o WaitOptions) (Summary, error) {
	js, t := c.JS, c.Topology
	if o.LostAfter <= 0 {
		o.LostAfter = 30 * time.Second
	}
	if o.MaxRepublish <= 0 {
		o.MaxRepublish = 3
	}
	// From the run's start, not this call's: at a million objects the
	// listing, during which jobs are already being embedded, takes minutes.
	start := rec.Started
	if start.IsZero() || start.After(time.Now()) {
		start = time.Now()
	}
	w := &waiter{js: js, t: t, rec: rec, o: o, sum: Summary{Run: rec.ID, Listed: rec.Listed, Jobs: rec.Jobs},
		seen: make(map[int64]bool, rec.Jobs), republished: map[int64]int{}}
	if rec.Jobs == 0 {
		w.sum.Complete = true
		return w.sum, nil
	}
	results, err := js.OrderedConsumer(ctx, t.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{t.ResultSubject(rec.ID)},
	})
	if err != nil {
		return w.sum, fmt.Errorf("coordinator: follow results: %w", err)
	}
	dead, err := js.OrderedConsumer(ctx, t.DeadStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{t.DeadSubject(rec.ID)},
	})
	if err != nil {
		return w.sum, fmt.Errorf("coordinator: follow dead letters: %w", err)
	}
	if w.jobStream, err = js.Stream(ctx, t.JobsStream()); err != nil {
		return w.sum, fmt.Errorf("coordinator: jobs stream: %w", err)
	}
	last, lastResult := time.Now(), time.Now()
	for {
		if int64(len(w.seen)) >= rec.Jobs {
			w.sum.Complete = true
			w.sum.Elapsed = time.Since(start)
			return w.sum, nil
		}
		if err := ctx.Err(); err != nil {
			w.sum.Elapsed = time.Since(start)
			return w.sum, err
		}
		if msgs, err := results.Fetch(64, jetstream.FetchMaxWait(200*time.Millisecond)); err == nil {
			if w.takeResults(msgs) {
				lastResult = time.Now()
			}
		} else if !errors.Is(err, context.DeadlineExceeded) {
			return w.sum, fmt.Errorf("coordinator: results: %w", err)
		}
		if msgs, err := dead.Fetch(64, jetstream.FetchMaxWait(10*time.Millisecond)); err == nil {
			if w.takeDead(msgs) {
				lastResult = time.Now()
			}
		}
		if time.Since(lastResult) > o.LostAfter {
			lastResult = time.Now()
			if err := w.recoverLost(ctx); err != nil {
				return w.sum, err
			}
		}
		if o.Progress != nil && time.Since(last) > time.Second {
			last = time.Now()
			w.sum.Elapsed = time.Since(start)
			o.Progress(w.sum)
		}
	}
}

// waiter is what following one run keeps: the jobs with an outcome, the
// republish counts, the running summary.
type waiter struct {
	js          jetstream.JetStream
	t           bus.Topology
	rec         jobs.Run
	o           WaitOptions
	jobStream   jetstream.Stream
	seen        map[int64]bool // jobs with a result or given up
	republished map[int64]int
	sum         Summary
}

// takeResults counts a batch of results; it reports whether any was new.
func (w *waiter) takeResults(msgs jetstream.MessageBatch) bool {
	fresh := false
	for m := range msgs.Messages() {
		r, err := jobs.Decode[jobs.Result](m.Data())
		if err != nil || w.seen[r.Seq] {
			continue
		}
		w.seen[r.Seq], fresh = true, true
		w.sum.Done++
		w.sum.Stored += int64(r.Stored)
		w.sum.Failed = append(w.sum.Failed, r.Failed...)
	}
	return fresh
}

// takeDead counts a batch of dead letters; it reports whether any was new.
func (w *waiter) takeDead(msgs jetstream.MessageBatch) bool {
	fresh := false
	for m := range msgs.Messages() {
		var d jobs.Dead
		if json.Unmarshal(m.Data(), &d) != nil || w.seen[d.Job.Seq] {
			continue
		}
		w.seen[d.Job.Seq], fresh = true, true
		w.sum.Dead++
		for _, it := range d.Job.Items {
			w.sum.Failed = append(w.sum.Failed, jobs.Failure{Key: it.Key, Reason: "dead-lettered: " + d.Reason})
		}
	}
	return fresh
}

// recoverLost republishes the jobs that have no result and are no longer in
// the jobs stream, once nothing of the run is left in the stream.
func (w *waiter) recoverLost(ctx context.Context) error {
	rec, o := w.rec, w.o
	subj := w.t.RunJobSubject(rec)
	info, err := w.jobStream.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return fmt.Errorf("coordinator: jobs stream: %w", err)
	}
	if info.State.Subjects[subj] > 0 {
		return nil // workers still have jobs of this run; they are slow, not lost
	}
	for seq := int64(1); seq <= rec.Jobs; seq++ {
		if w.seen[seq] {
			continue
		}
		data, ok := o.Journal.get(seq)
		if !ok || w.republished[seq] >= o.MaxRepublish {
			reason := "lost: no result, and the job is not in the stream"
			if ok {
				reason = fmt.Sprintf("lost: no result after %d republishes", w.republished[seq])
			}
			w.seen[seq] = true
			w.sum.Dead++
			var job jobs.Job
			if json.Unmarshal(data, &job) == nil && len(job.Items) > 0 {
				for _, it := range job.Items {
					w.sum.Failed = append(w.sum.Failed, jobs.Failure{Key: it.Key, Reason: reason})
				}
			} else {
				w.sum.Failed = append(w.sum.Failed, jobs.Failure{Key: fmt.Sprintf("job %d of run %s", seq, rec.ID), Reason: reason})
			}
			continue
		}
		w.republished[seq]++
		id := fmt.Sprintf("%s.%d.r%d", rec.ID, seq, w.republished[seq])
		if _, err := w.js.Publish(ctx, subj, data, jetstream.WithMsgID(id)); err != nil {
			return fmt.Errorf("coordinator: republish job %d: %w", seq, err)
		}
	}
	return nil
}
