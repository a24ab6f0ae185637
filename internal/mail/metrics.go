package mail

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The counters live on controller-runtime's registry, so the manager's metrics
// endpoint serves them next to the reconcile metrics.
var (
	mailsSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "customer_operator_mails_sent_total",
		Help: "Mails accepted by the SMTP server, by kind (invitation, notice).",
	}, []string{"kind"})

	mailsFailed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "customer_operator_mails_failed_total",
		Help: "Mail delivery attempts that failed, by kind (invitation, notice) and reason: " +
			"refused (the server refused this mail for good, e.g. no such mailbox) " +
			"or error (anything else: unreachable, authentication, 4xx; retried with backoff).",
	}, []string{"kind", "reason"})
)

// The reason label of customer_operator_mails_failed_total. A refusal is about one
// mail (a mistyped address), an error about the server or our configuration, so
// the alert on failing mail tells them apart (config/prometheus).
const (
	reasonRefused = "refused"
	reasonError   = "error"
)

func init() {
	metrics.Registry.MustRegister(mailsSent, mailsFailed)
	// Start every known series at zero, so that rate() and alerts see them before
	// the first mail.
	for _, kind := range []Kind{KindInvitation, KindNotice} {
		mailsSent.WithLabelValues(string(kind))
		mailsFailed.WithLabelValues(string(kind), reasonRefused)
		mailsFailed.WithLabelValues(string(kind), reasonError)
	}
}

// kindLabel keeps the label's cardinality fixed whatever callers pass.
func kindLabel(kind Kind) string {
	switch kind {
	case KindInvitation, KindNotice:
		return string(kind)
	}
	return "other"
}

func recordSend(kind Kind, err error) {
	if err != nil {
		reason := reasonError
		if IsPermanent(err) {
			reason = reasonRefused
		}
		mailsFailed.WithLabelValues(kindLabel(kind), reason).Inc()
		return
	}
	mailsSent.WithLabelValues(kindLabel(kind)).Inc()
}

// WithMetrics counts every send through s in customer_operator_mails_sent_total
// and customer_operator_mails_failed_total. The operator wraps whatever sender it
// runs with, so that every failure counts, whatever its cause (no SMTP server
// configured too) and the alert on failing mail fires.
func WithMetrics(s Sender) Sender { return countingSender{s} }

type countingSender struct{ Sender }

func (c countingSender) Send(ctx context.Context, m Message) error {
	err := c.Sender.Send(ctx, m)
	recordSend(m.Kind, err)
	return err
}
