package controllers

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
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

// The quota ledger and the acknowledgement webhook write these objects' status
// too, so a conflicting status write is routine: the watch event of the other
// write reconciles the object again. It must not come back as a reconcile error
// (a "Reconciler error" with a stack trace, a count in
// controller_runtime_reconcile_errors_total that the documented alert watches, and
// a backoff retry on top of the event), nor leave a ReconcileError behind.
func TestStatusConflictIsNoReconcileError(t *testing.T) {
	customer := &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: "acme", Finalizers: []string{v1alpha1.CustomerFinalizer}},
		Spec:       v1alpha1.CustomerSpec{Identifier: "acme", DisplayName: "Acme"},
	}
	quota := &v1alpha1.CustomerQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "acme"},
		Spec:       v1alpha1.CustomerQuotaSpec{Customer: "acme"},
	}
	message := &v1alpha1.CustomerMessage{
		ObjectMeta: metav1.ObjectMeta{Name: "outage", UID: "0e4b2f6a-1c3d-4e5f-8a9b-0c1d2e3f4a5b"},
		Spec:       v1alpha1.CustomerMessageSpec{Customer: "acme", Title: "Outage", Body: "Tonight.", ReadPolicy: v1alpha1.AllMustRead},
	}
	ack := &v1alpha1.MessageAcknowledgement{
		ObjectMeta: metav1.ObjectMeta{Name: "outage-dana"},
		Spec:       v1alpha1.MessageAcknowledgementSpec{Message: "outage", User: "dana@example.com"},
	}
	for _, tc := range []struct {
		name string
		obj  client.Object
		run  func(client.Client) (ctrl.Result, error)
	}{
		{"Customer", customer, func(c client.Client) (ctrl.Result, error) {
			r := &CustomerReconciler{Client: c, Recorder: events.NewFakeRecorder(10), Clock: clocktesting.NewFakeClock(now), DefaultMaxProjects: 5}
			return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "acme"}})
		}},
		{"CustomerQuota", quota, func(c client.Client) (ctrl.Result, error) {
			r := &CustomerQuotaReconciler{Client: c, Recorder: events.NewFakeRecorder(10)}
			return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "acme"}})
		}},
		{"CustomerMessage", message, func(c client.Client) (ctrl.Result, error) {
			r := &CustomerMessageReconciler{Client: c, Recorder: events.NewFakeRecorder(10), Clock: clocktesting.NewFakeClock(now)}
			return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "outage"}})
		}},
		{"MessageAcknowledgement", ack, func(c client.Client) (ctrl.Result, error) {
			r := &MessageAcknowledgementReconciler{Client: c}
			return r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "outage-dana"}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			conflicts := 0
			builder := fake.NewClientBuilder().WithScheme(unitScheme(t)).
				WithObjects(customer.DeepCopy(), quota.DeepCopy(), message.DeepCopy(), ack.DeepCopy()).
				WithStatusSubresource(&v1alpha1.Customer{}, &v1alpha1.CustomerQuota{}, &v1alpha1.CustomerMessage{}, &v1alpha1.MessageAcknowledgement{}).
				WithInterceptorFuncs(interceptor.Funcs{
					SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
						if obj.GetName() == tc.obj.GetName() && reflect.TypeOf(obj) == reflect.TypeOf(tc.obj) {
							conflicts++
							return apierrors.NewConflict(schema.GroupResource{Group: v1alpha1.GroupName}, obj.GetName(), errors.New("the object has been modified"))
						}
						return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
					},
				})
			g.Expect(SetupIndexes(context.Background(), builderIndexer{builder})).To(Succeed())
			_, err := tc.run(builder.Build())
			g.Expect(conflicts).To(BeNumerically(">", 0), "the status write was tried")
			g.Expect(err).NotTo(HaveOccurred())
		})
	}
}

// After a leader handover the new leader's Namespace informer can lag its
// Customer informer: it must not lower status.projects below a project the old
// leader counted there (and released the reservation of) before its own cache has
// seen the project; the admission webhooks count max(their cache, status.projects).
// A drop is written only once an uncached read agrees.
func TestProjectCountDropsOnlyWhenTheAPIServerAgrees(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	customer := &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: "acme", Finalizers: []string{v1alpha1.CustomerFinalizer}},
		Spec:       v1alpha1.CustomerSpec{Identifier: "acme", DisplayName: "Acme"},
		Status:     v1alpha1.CustomerStatus{Projects: 2},
	}
	project := func(name string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.CustomerLabel: "acme"}}}
	}
	lagging := true
	builder := fake.NewClientBuilder().WithScheme(unitScheme(t)).
		WithObjects(customer, project("acme-web"), project("acme-api")).
		WithStatusSubresource(&v1alpha1.Customer{}).
		WithInterceptorFuncs(interceptor.Funcs{
			// The cache: it has not seen acme-api yet.
			List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				if err := c.List(ctx, list, opts...); err != nil {
					return err
				}
				if namespaces, ok := list.(*corev1.NamespaceList); ok && lagging {
					namespaces.Items = slices.DeleteFunc(namespaces.Items, func(ns corev1.Namespace) bool { return ns.Name == "acme-api" })
				}
				return nil
			},
		})
	g.Expect(SetupIndexes(ctx, builderIndexer{builder})).To(Succeed())
	cached := builder.Build()
	uncached := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithObjects(project("acme-web"), project("acme-api")).Build()
	r := &CustomerReconciler{Client: cached, APIReader: uncached, Recorder: events.NewFakeRecorder(10), Clock: clocktesting.NewFakeClock(now), DefaultMaxProjects: 5}
	projects := func() int32 {
		var got v1alpha1.Customer
		g.Expect(cached.Get(ctx, types.NamespacedName{Name: "acme"}, &got)).To(Succeed())
		return got.Status.Projects
	}

	_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: "acme"}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(projects()).To(Equal(int32(2)), "the API server still has both: no drop from a lagging cache")

	// acme-api is deleted for real; the cache has caught up.
	lagging = false
	g.Expect(cached.Delete(ctx, project("acme-api"))).To(Succeed())
	g.Expect(uncached.Delete(ctx, project("acme-api"))).To(Succeed())
	_, err = r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: "acme"}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(projects()).To(Equal(int32(1)), "a drop the API server confirms is written")
}
