package controllers_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/partnerops/customer-operator/internal/operator"
)

// unstructuredObj adapts a map for kstatus.
type unstructuredObj = unstructured.Unstructured

// withoutWebhook runs f with the named webhook removed from the validating webhook
// configuration, as if it were bypassed, and restores it.
func withoutWebhook(name string, f func()) {
	GinkgoHelper()
	var list admissionregistrationv1.ValidatingWebhookConfigurationList
	Expect(admin.List(ctx, &list)).To(Succeed())
	for i := range list.Items {
		cfg := &list.Items[i]
		original := cfg.DeepCopy()
		kept := cfg.Webhooks[:0:0]
		for _, w := range cfg.Webhooks {
			if w.Name != name {
				kept = append(kept, w)
			}
		}
		if len(kept) == len(cfg.Webhooks) {
			continue
		}
		cfg.Webhooks = kept
		Expect(admin.Update(ctx, cfg)).To(Succeed())
		defer func() {
			Expect(admin.Get(ctx, client.ObjectKeyFromObject(cfg), cfg)).To(Succeed())
			cfg.Webhooks = original.Webhooks
			Expect(admin.Update(ctx, cfg)).To(Succeed())
		}()
	}
	f()
}

// updateFresh reads obj anew, applies mutate and updates it as admin, again on a
// conflict: the operator writes finalizers and status concurrently, and a test
// about validation must see the validation error, not a stale resourceVersion.
func updateFresh(obj client.Object, mutate func()) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := admin.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate()
		return admin.Update(ctx, obj)
	})
}

// metricSum adds up every series of the controller-runtime registry's metric name
// (a counter or a gauge) that has all of labels.
func metricSum(name string, labels map[string]string) float64 {
	GinkgoHelper()
	families, err := crmetrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// restartAndSettle restarts the manager (restartManager) and waits until the new
// one's controller has worked through its initial list: it reconciled at least as
// many times as list holds objects, and its queue is empty. Only then can a
// Consistently say that the new manager does nothing more (a duplicate mail would
// come from those reconciles).
func restartAndSettle(controller string, list client.ObjectList, mutate func(*operator.Options)) {
	GinkgoHelper()
	stopManager()
	// Read once the old manager has stopped: its last reconciles must not count for
	// the new one, and the depth gauge, shared by the old queue and the new one of
	// the same name, may keep what the old queue held when it was shut down.
	Expect(admin.List(ctx, list)).To(Succeed())
	objects := float64(meta.LenList(list))
	reconciles := map[string]string{"controller": controller}
	depth := map[string]string{"name": controller}
	before, leftOver := metricSum("controller_runtime_reconcile_total", reconciles), metricSum("workqueue_depth", depth)
	opts := managerOptions
	if mutate != nil {
		mutate(&opts)
	}
	startManager(opts)
	Eventually(func(g Gomega) {
		g.Expect(metricSum("controller_runtime_reconcile_total", reconciles)-before).To(BeNumerically(">=", objects), "reconciles of the initial list")
		g.Expect(metricSum("workqueue_depth", depth)).To(BeNumerically("<=", leftOver), "the new queue drained")
	}, "60s").Should(Succeed())
}
