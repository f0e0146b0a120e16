package serve

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Prometheus figures of /metrics, labelled by model and
// version. Latency buckets run from 50µs to 30s in steps of about 25%, so
// p50/p95/p99 read from them are within a bucket's width of the truth —
// close enough to gate a rollout on, which is what they are for.
type metrics struct {
	requests  *prometheus.CounterVec
	successes *prometheus.CounterVec
	errors    *prometheus.CounterVec
	rejects   *prometheus.CounterVec
	degraded  *prometheus.CounterVec
	queueWait *prometheus.HistogramVec
	compute   *prometheus.HistogramVec
	batch     *prometheus.HistogramVec
	queueLen  *prometheus.GaugeVec
}

var latencyBuckets = prometheus.ExponentialBucketsRange(50e-6, 30, 60)

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "edgefleet", "serve"
	mv := []string{"model", "version"}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Inference requests received, by model and version (the active one for requests that did not run)."}, mv),
		successes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "successes_total",
			Help: "Inference requests answered with outputs."}, mv),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "errors_total",
			Help: "Inference requests that were admitted or parsed but failed, by kind (expired, bad_input, run_error, canceled, unavailable)."},
			append(mv, "kind")),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rejects_total",
			Help: "Inference requests rejected at admission with 429, by reason (queue_full, deadline_unmeetable)."},
			append(mv, "reason")),
		degraded: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "degraded_total",
			Help: "Requests for model routed to its lighter variant under sustained overload."}, []string{"model", "variant"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "queue_wait_seconds",
			Help: "Time requests spent queued before their run started.", Buckets: latencyBuckets}, mv),
		compute: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "compute_seconds",
			Help: "Duration of the backend run each request was part of.", Buckets: latencyBuckets}, mv),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "batch_size",
			Help: "Number of requests per backend run, observed once per request.", Buckets: []float64{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64}}, mv),
		queueLen: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "queue_length",
			Help: "Requests waiting in the model's queue."}, []string{"model"}),
	}
	reg.MustRegister(m.requests, m.successes, m.errors, m.rejects, m.degraded, m.queueWait, m.compute, m.batch, m.queueLen)
	return m
}

func (m *metrics) record(ev Event) {
	// Per-version series are labelled with the model that actually ran, so
	// a variant's version never appears under the model it stood in for.
	model := ev.Model
	if ev.ServedBy != "" {
		model = ev.ServedBy
		m.degraded.WithLabelValues(ev.Model, ev.ServedBy).Inc()
	}
	m.requests.WithLabelValues(model, ev.Version).Inc()
	switch {
	case ev.Outcome == OutcomeOK:
		m.successes.WithLabelValues(model, ev.Version).Inc()
	case ev.Outcome.Rejected():
		m.rejects.WithLabelValues(model, ev.Version, string(ev.Outcome)).Inc()
	default:
		m.errors.WithLabelValues(model, ev.Version, string(ev.Outcome)).Inc()
	}
	if ev.Batch > 0 {
		m.queueWait.WithLabelValues(model, ev.Version).Observe(ev.Queue.Seconds())
		m.compute.WithLabelValues(model, ev.Version).Observe(ev.Compute.Seconds())
		m.batch.WithLabelValues(model, ev.Version).Observe(float64(ev.Batch))
	}
}

// keptVersions is how many replaced versions of a model keep their series
// in /metrics; older ones are deleted so that a device that goes through
// many rollouts does not grow its metrics without bound.
const keptVersions = 3

// forgetVersion deletes every series of one model version.
func (m *metrics) forgetVersion(model, version string) {
	l := prometheus.Labels{"model": model, "version": version}
	for _, c := range []*prometheus.CounterVec{m.requests, m.successes, m.errors, m.rejects} {
		c.DeletePartialMatch(l)
	}
	for _, h := range []*prometheus.HistogramVec{m.queueWait, m.compute, m.batch} {
		h.DeletePartialMatch(l)
	}
}
