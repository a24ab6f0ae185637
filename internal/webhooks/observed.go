package webhooks

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// admissionErrors counts the webhooks' own failures: an answer with code 500 or
// more (the cache or the API server could not be read, a write failed), not a
// refusal. controller-runtime answers every admission request with HTTP 200 and
// puts the code inside the AdmissionReview, so its request counter cannot tell.
var admissionErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "customer_operator_admission_errors_total",
	Help: "Admission requests a webhook of the operator could not decide (its answer's code is 500 or more), by webhook.",
}, []string{"webhook"})

// webhookNames are the label values of admissionErrors: one per validating webhook.
var webhookNames = []string{"customer", "customerquota", "namespace", "customermembership", "customermessage", "messageacknowledgement"}

func init() {
	metrics.Registry.MustRegister(admissionErrors)
	for _, name := range webhookNames {
		admissionErrors.WithLabelValues(name)
	}
}

// observed is a validator whose own failures are logged and counted: with
// failurePolicy Fail such a failure refuses the request like a denial would, and
// without a log line the manager shows nothing of it.
type observed[T runtime.Object] struct {
	webhook string
	admission.Validator[T]
}

func observe[T runtime.Object](webhook string, v admission.Validator[T]) admission.Validator[T] {
	return observed[T]{webhook: webhook, Validator: v}
}

func (o observed[T]) ValidateCreate(ctx context.Context, obj T) (admission.Warnings, error) {
	w, err := o.Validator.ValidateCreate(ctx, obj)
	return w, o.note(ctx, "CREATE", err)
}

func (o observed[T]) ValidateUpdate(ctx context.Context, oldObj, newObj T) (admission.Warnings, error) {
	w, err := o.Validator.ValidateUpdate(ctx, oldObj, newObj)
	return w, o.note(ctx, "UPDATE", err)
}

func (o observed[T]) ValidateDelete(ctx context.Context, obj T) (admission.Warnings, error) {
	w, err := o.Validator.ValidateDelete(ctx, obj)
	return w, o.note(ctx, "DELETE", err)
}

func (o observed[T]) note(ctx context.Context, operation string, err error) error {
	var status apierrors.APIStatus
	if errors.As(err, &status) && status.Status().Code >= 500 {
		admissionErrors.WithLabelValues(o.webhook).Inc()
		log.FromContext(ctx).Error(err, "Admission request failed; with failurePolicy Fail it was refused",
			"webhook", o.webhook, "operation", operation)
	}
	return err
}
