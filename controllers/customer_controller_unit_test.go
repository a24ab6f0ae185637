package controllers

import (
	"context"
	"slices"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// unitScheme knows Kubernetes' kinds and the operator's, for the fake client.
func unitScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	NewWithT(t).Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	NewWithT(t).Expect(v1alpha1.AddToScheme(scheme)).To(Succeed())
	return scheme
}

// A merge patch replaces the whole finalizer list. Written from a cached copy that
// has not yet seen another writer's finalizer, it must conflict rather than drop it.
// The envtest cannot hold the cache behind on demand; the fake client can.
func TestCustomerFinalizerKeepsAFinalizerTheCacheHasNotSeen(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	const foreign = "example.com/keep"
	customer := &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: "acme", Finalizers: []string{foreign}},
		Spec:       v1alpha1.CustomerSpec{Identifier: "acme", DisplayName: "Acme"},
	}
	stale := true
	builder := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithObjects(customer).
		WithStatusSubresource(&v1alpha1.Customer{}).
		WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				if err := c.Get(ctx, key, obj, opts...); err != nil {
					return err
				}
				if cu, ok := obj.(*v1alpha1.Customer); ok && stale {
					// The cache's copy from before the other writer's finalizer.
					cu.Finalizers = slices.DeleteFunc(cu.Finalizers, func(f string) bool { return f == foreign })
					cu.ResourceVersion = "1"
				}
				return nil
			},
		})
	g.Expect(SetupIndexes(ctx, builderIndexer{builder})).To(Succeed())
	c := builder.Build()
	r := &CustomerReconciler{Client: c, Recorder: events.NewFakeRecorder(10), Clock: clocktesting.NewFakeClock(now), DefaultMaxProjects: 5}
	finalizers := func() []string {
		var got v1alpha1.Customer
		g.Expect(c.Get(ctx, types.NamespacedName{Name: "acme"}, &got)).To(Succeed())
		return got.Finalizers
	}

	_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: "acme"}})
	g.Expect(err).NotTo(HaveOccurred(), "a conflict waits for the newer version's event; it is no error")
	stale = false
	g.Expect(finalizers()).To(Equal([]string{foreign}), "nothing written from the stale copy")

	_, err = r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: "acme"}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(finalizers()).To(ConsistOf(foreign, v1alpha1.CustomerFinalizer))
}
