package controllers_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
