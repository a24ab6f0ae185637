package quota

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The ledger's latencies, on controller-runtime's registry (the manager's
// metrics endpoint). The webhook's own histogram has decade buckets; these are
// fine enough to read a median from, and they split a project create's wait into
// the reservation write and everything around it (the per-customer batch queue,
// conflicts and their re-reads).
var (
	reserveSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "customer_operator_quota_reserve_seconds",
		Help:    "Time from a project create's arrival at the quota ledger to its decision, by outcome (reserved, denied, error).",
		Buckets: latencyBuckets,
	}, []string{"outcome"})

	writeSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "customer_operator_quota_write_seconds",
		Help:    "Latency of the ledger's reservation writes (one optimistic-lock PATCH of a Customer's status), by result (ok, conflict, error).",
		Buckets: latencyBuckets,
	}, []string{"result"})
)

var latencyBuckets = []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5}

func init() {
	metrics.Registry.MustRegister(reserveSeconds, writeSeconds)
	for _, o := range []string{"reserved", "denied", "error"} {
		reserveSeconds.WithLabelValues(o)
	}
	for _, r := range []string{"ok", "conflict", "error"} {
		writeSeconds.WithLabelValues(r)
	}
}

func observeReserve(start time.Time, d Decision, err error) {
	outcome := "denied"
	switch {
	case err != nil:
		outcome = "error"
	case d.Allowed():
		outcome = "reserved"
	}
	reserveSeconds.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
}

func observeWrite(start time.Time, err error) {
	result := "ok"
	switch {
	case apierrors.IsConflict(err):
		result = "conflict"
	case err != nil:
		result = "error"
	}
	writeSeconds.WithLabelValues(result).Observe(time.Since(start).Seconds())
}
