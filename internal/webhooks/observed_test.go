package webhooks

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// answering is a validator that answers every request with err.
type answering struct{ err error }

func (a answering) ValidateCreate(context.Context, *v1alpha1.Customer) (admission.Warnings, error) {
	return nil, a.err
}

func (a answering) ValidateUpdate(context.Context, *v1alpha1.Customer, *v1alpha1.Customer) (admission.Warnings, error) {
	return nil, a.err
}

func (a answering) ValidateDelete(context.Context, *v1alpha1.Customer) (admission.Warnings, error) {
	return nil, a.err
}

// A webhook's own failure (500) is counted and logged; a refusal or an admission is
// neither, and every answer passes through unchanged.
func TestObservedCountsAndLogsOnlyFailures(t *testing.T) {
	g := NewWithT(t)
	var logged []string
	ctx := log.IntoContext(context.Background(), funcr.New(func(prefix, args string) {
		logged = append(logged, args)
	}, funcr.Options{}))
	errorsOf := func() float64 {
		var m dto.Metric
		g.Expect(admissionErrors.WithLabelValues("customer").Write(&m)).To(Succeed())
		return m.GetCounter().GetValue()
	}
	before := errorsOf()

	internal := apierrors.NewInternalError(errors.New("listing the projects: the cache is gone"))
	v := observe[*v1alpha1.Customer]("customer", answering{internal})
	_, err := v.ValidateDelete(ctx, &v1alpha1.Customer{})
	g.Expect(err).To(BeIdenticalTo(internal))
	g.Expect(errorsOf()).To(Equal(before + 1))
	g.Expect(logged).To(HaveLen(1))
	g.Expect(logged[0]).To(And(ContainSubstring(`"webhook"="customer"`), ContainSubstring(`"operation"="DELETE"`),
		ContainSubstring("the cache is gone")))

	refusal := apierrors.NewForbidden(schema.GroupResource{Group: v1alpha1.GroupName, Resource: "customers"}, "acme", errors.New("has projects"))
	for _, answer := range []error{refusal, nil, errors.New("plain errors are refusals (403) in controller-runtime")} {
		v := observe[*v1alpha1.Customer]("customer", answering{answer})
		_, created := v.ValidateCreate(ctx, &v1alpha1.Customer{})
		_, updated := v.ValidateUpdate(ctx, &v1alpha1.Customer{}, &v1alpha1.Customer{})
		if answer == nil {
			g.Expect(created).NotTo(HaveOccurred())
			g.Expect(updated).NotTo(HaveOccurred())
			continue
		}
		g.Expect(created).To(BeIdenticalTo(answer))
		g.Expect(updated).To(BeIdenticalTo(answer))
	}
	g.Expect(errorsOf()).To(Equal(before+1), "refusals and admissions are not failures")
	g.Expect(strings.Join(logged, "\n")).NotTo(ContainSubstring("has projects"))

	families, err := metrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	var series []string
	for _, f := range families {
		if f.GetName() == "customer_operator_admission_errors_total" {
			for _, m := range f.GetMetric() {
				series = append(series, m.GetLabel()[0].GetValue())
			}
		}
	}
	g.Expect(series).To(ConsistOf(webhookNames), "every webhook's series is served from the start, so rate() sees it")
}
