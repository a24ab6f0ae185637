package certrotation

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// servingExpiry is when the certificate this replica serves to the API server
// expires. Renewal starts RenewBefore ahead; a value that comes within that of now
// means renewal keeps failing (the log says why), and when it passes, every
// admission request, and with failurePolicy Fail every project create, fails.
//
// A vector without labels, so that the series exists only once a certificate is
// served: a plain gauge is exported as 0 from the start, which the shipped alert
// (config/prometheus) reads as a certificate that expired in 1970, for good when
// cert-manager serves the certificates and the Rotator never runs.
var servingExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "customer_operator_webhook_certificate_expiry_timestamp_seconds",
	Help: "When the webhook serving certificate this replica serves expires (Unix seconds); absent before it serves one, and with cert-manager.",
}, nil)

func init() {
	metrics.Registry.MustRegister(servingExpiry)
}

// recordServing notes the expiry of the certificate now served.
func recordServing(notAfter time.Time) {
	servingExpiry.WithLabelValues().Set(float64(notAfter.Unix()))
}
