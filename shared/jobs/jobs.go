// Package jobs holds the wire types that the coordinator and the workers
// exchange over NATS JetStream (the subjects and streams are shared/bus's). Every message
// carries Schema; a reader refuses a schema newer than it knows.
//
// A Job is many items (object keys with their ETag and size) and the models
// to embed them with; its JetStream message id is "<run>.<seq>", so a
// coordinator that publishes the same job twice (after a crash) is
// deduplicated by the stream. A Result reports, per job, how many items were
// stored in every model's collection and which failed permanently, and why.
package jobs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Schema is the version of the wire types below.
const Schema = 1

// Item is one object to embed.
type Item struct {
	Key  string `json:"key"`
	ETag string `json:"etag,omitempty"`
	Size int64  `json:"size,omitempty"`
}

// Job is one unit of work.
type Job struct {
	Schema int      `json:"schema"`
	Run    string   `json:"run"`
	Seq    int64    `json:"seq"`
	Source string   `json:"source"` // s3://bucket/prefix or a folder, as objstore.Open takes it
	Models []string `json:"models"`
	// Versions, when set, are the model versions the job must be embedded
	// with, by target: a worker holding another version hands it back.
	Versions map[string]string `json:"versions,omitempty"`
	Items    []Item            `json:"items"`
}

// MsgID is the JetStream deduplication id of the job.
func (j Job) MsgID() string { return j.Run + "." + strconv.FormatInt(j.Seq, 10) }

// Failure is one item that cannot be embedded, for good.
type Failure struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
	// Kind sorts the reason: corrupt, unsupported, too_large, not_found,
	// access_denied or other. Empty from workers before it was added.
	Kind string `json:"kind,omitempty"`
}

// Kinds of failure that belong to the object's bytes: the same bytes fail
// the same way, so they are recorded (FailureRecord) and retried only when
// the object's ETag changes. Other kinds (not found, access denied) are not
// about the bytes and are retried by the next run.
const (
	KindCorrupt     = "corrupt"
	KindUnsupported = "unsupported"
	KindTooLarge    = "too_large"
)

// Permanent reports whether failures of kind are recorded per ETag.
func Permanent(kind string) bool {
	return kind == KindCorrupt || kind == KindUnsupported || kind == KindTooLarge
}

// FailureRecord is kept in the failures KV bucket, keyed by the object's
// row id, for every object whose bytes cannot be embedded: verify counts
// such an object as failed, not missing, while its ETag is the recorded one.
type FailureRecord struct {
	Schema int       `json:"schema"`
	URI    string    `json:"uri"`
	ETag   string    `json:"etag"`
	Kind   string    `json:"kind"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Result is what a worker reports after acking a job.
type Result struct {
	Schema   int       `json:"schema"`
	Run      string    `json:"run"`
	Seq      int64     `json:"seq"`
	Worker   string    `json:"worker"`
	Stored   int       `json:"stored"` // items stored in every model's collection
	Failed   []Failure `json:"failed,omitempty"`
	Millis   int64     `json:"ms"` // time the worker spent on the job
	Attempts uint64    `json:"attempts"`
}

// Dead is a job given up after MaxDeliver attempts.
type Dead struct {
	Schema int       `json:"schema"`
	Job    Job       `json:"job"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Run is the record of one coordinator run, kept in the runs KV bucket.
type Run struct {
	Schema int      `json:"schema"`
	ID     string   `json:"id"`
	Source string   `json:"source"`
	Models []string `json:"models"`
	// Pool is the worker pool whose workers take the run's jobs; "" for
	// the default pool.
	Pool string `json:"pool,omitempty"`
	// Versions are the model versions the run embeds with, by target.
	Versions   map[string]string `json:"versions,omitempty"`
	Started    time.Time         `json:"started"`
	Listed     int64             `json:"listed"`     // items enumerated so far
	Jobs       int64             `json:"jobs"`       // jobs published so far
	LastKey    string            `json:"last_key"`   // checkpoint: every key <= this is published
	Enumerated bool              `json:"enumerated"` // listing finished, Listed and Jobs are final
	Finished   time.Time         `json:"finished,omitzero"`
	Stored     int64             `json:"stored"`
	Failed     int64             `json:"failed"`

	Incremental bool                  `json:"incremental,omitempty"`
	Diff        map[string]DiffCounts `json:"diff,omitempty"` // per model, for incremental runs
}

// DiffCounts is what an incremental run found for one model.
type DiffCounts struct {
	New       int64 `json:"new"`
	Changed   int64 `json:"changed"`
	Unchanged int64 `json:"unchanged"`
	Deleted   int64 `json:"deleted"`
	Upgraded  bool  `json:"upgraded,omitempty"` // the model's version changed: everything re-embedded
}

// Decode parses a message of type T and checks its schema.
func Decode[T interface{ schema() int }](data []byte) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return v, fmt.Errorf("jobs: decode %T: %w", v, err)
	}
	if s := v.schema(); s < 1 || s > Schema {
		return v, fmt.Errorf("jobs: %T has schema %d; this build reads up to %d", v, s, Schema)
	}
	return v, nil
}

func (j Job) schema() int           { return j.Schema }
func (r Result) schema() int        { return r.Schema }
func (r Run) schema() int           { return r.Schema }
func (d Dead) schema() int          { return d.Schema }
func (f FailureRecord) schema() int { return f.Schema }
