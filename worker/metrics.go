package worker

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/embedfleet/embedfleet/shared/imageprep"
	"github.com/embedfleet/embedfleet/shared/jobs"
	"github.com/embedfleet/embedfleet/shared/objstore"
)

// Metrics are the worker's Prometheus metrics. A nil *Metrics records
// nothing.
type Metrics struct {
	jobs       *prometheus.CounterVec
	items      *prometheus.CounterVec
	failures   *prometheus.CounterVec
	images     *prometheus.CounterVec
	stage      *prometheus.HistogramVec
	batchFill  prometheus.Histogram
	upsertRows prometheus.Histogram
	busy       *prometheus.CounterVec
}

// NewMetrics registers the worker's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "embedfleet_worker_jobs_total",
			Help: "Jobs handled, by outcome: acked, retried (nak'd for later), dead (dead-lettered), handed_back (shutdown)."}, []string{"outcome"}),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "embedfleet_worker_items_total",
			Help: "Items of acked jobs, by outcome: stored (in every model's collection) or failed (permanently)."}, []string{"outcome"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "embedfleet_worker_item_failures_total",
			Help: "Permanent item failures by reason."}, []string{"reason"}),
		images: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "embedfleet_worker_images_embedded_total",
			Help: "Images embedded, by model; rate() of it is the model's img/s."}, []string{"model"}),
		stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "embedfleet_worker_stage_seconds",
			Help:    "Time per job in each stage: prepare (fetch, decode, preprocess), embed, upsert, per model for embed and upsert.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"stage", "model"}),
		batchFill: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "embedfleet_worker_batch_fill_ratio",
			Help: "Images per inference call over --batch-size.", Buckets: prometheus.LinearBuckets(0.125, 0.125, 8)}),
		upsertRows: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "embedfleet_worker_upsert_rows",
			Help:    "Rows per Milvus write: one inference batch when writes keep up, several grouped when they are slower (up to --upsert-rows).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		busy: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "embedfleet_worker_engine_busy_seconds_total",
			Help: "Seconds each model's engine spent in inference calls; rate() of it is the engine's busy share of wall time (1: never idle)."}, []string{"model"}),
	}
	reg.MustRegister(m.jobs, m.items, m.failures, m.images, m.stage, m.batchFill, m.upsertRows, m.busy)
	return m
}

func (m *Metrics) job(outcome string) {
	if m != nil {
		m.jobs.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) result(stored int, failed []string) {
	if m == nil {
		return
	}
	m.items.WithLabelValues("stored").Add(float64(stored))
	m.items.WithLabelValues("failed").Add(float64(len(failed)))
	for _, r := range failed {
		m.failures.WithLabelValues(r).Inc()
	}
}

func (m *Metrics) observe(stage, model string, seconds float64) {
	if m != nil {
		m.stage.WithLabelValues(stage, model).Observe(seconds)
	}
}

func (m *Metrics) embedded(model string, n, batch int, seconds float64) {
	if m != nil {
		m.images.WithLabelValues(model).Add(float64(n))
		m.batchFill.Observe(float64(n) / float64(batch))
		m.busy.WithLabelValues(model).Add(seconds)
	}
}

func (m *Metrics) upserted(rows int) {
	if m != nil {
		m.upsertRows.Observe(float64(rows))
	}
}

// reasonOf names a failure's kind for the failures metric.
func reasonOf(err error) string {
	switch {
	case errors.Is(err, imageprep.ErrCorrupt):
		return jobs.KindCorrupt
	case errors.Is(err, imageprep.ErrUnsupported):
		return jobs.KindUnsupported
	case errors.Is(err, imageprep.ErrTooLarge), errors.Is(err, objstore.ErrTooLarge):
		return jobs.KindTooLarge
	case errors.Is(err, objstore.ErrNotFound):
		return "not_found"
	case errors.Is(err, objstore.ErrAccessDenied):
		return "access_denied"
	}
	return "other"
}
