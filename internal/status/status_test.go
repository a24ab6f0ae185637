package status

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

func newScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMarkHelpersFollowKstatusConventions(t *testing.T) {
	g := NewWithT(t)
	c := &v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Generation: 3}}

	MarkReconciling(c, v1alpha1.ReconcileErrorReason, "boom")
	g.Expect(IsTrue(c, v1alpha1.ReconcilingCondition)).To(BeTrue())
	g.Expect(Get(c, v1alpha1.ReadyCondition).Status).To(Equal(metav1.ConditionFalse))
	g.Expect(Get(c, v1alpha1.ReadyCondition).ObservedGeneration).To(Equal(int64(3)))

	MarkStalled(c, v1alpha1.CustomerNotFoundReason, "gone")
	g.Expect(IsTrue(c, v1alpha1.StalledCondition)).To(BeTrue())
	g.Expect(Get(c, v1alpha1.ReconcilingCondition)).To(BeNil(), "Reconciling is removed, never False")

	MarkReady(c, "fine")
	g.Expect(IsTrue(c, v1alpha1.ReadyCondition)).To(BeTrue())
	g.Expect(Get(c, v1alpha1.StalledCondition)).To(BeNil())
	g.Expect(Get(c, v1alpha1.ReconcilingCondition)).To(BeNil())
	g.Expect(c.Status.Conditions).To(HaveLen(1))
}

func TestPatcherWritesOnlyChangedStatusWithOptimisticLock(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	c := &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: "acme", Generation: 1},
		Spec:       v1alpha1.CustomerSpec{Identifier: "acme", DisplayName: "ACME"},
	}
	var patches []client.Patch
	cl := fake.NewClientBuilder().WithScheme(newScheme(t)).WithObjects(c).
		WithStatusSubresource(&v1alpha1.Customer{}).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				patches = append(patches, patch)
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	g.Expect(cl.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())

	// Unchanged status: no write at all.
	p := NewPatcher(c)
	g.Expect(p.PatchStatus(ctx, cl, c)).To(Succeed())
	g.Expect(patches).To(BeEmpty())

	// A changed status is written once, carrying the resourceVersion (the lock).
	c.Status.Projects = 2
	MarkReady(c, "ok")
	g.Expect(p.PatchStatus(ctx, cl, c)).To(Succeed())
	g.Expect(patches).To(HaveLen(1))
	data, err := patches[0].Data(c)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(data)).To(ContainSubstring(`"resourceVersion"`))

	// Writing the same status again is free.
	g.Expect(p.PatchStatus(ctx, cl, c)).To(Succeed())
	g.Expect(patches).To(HaveLen(1))

	// Someone else wrote in between: the stale patch conflicts instead of overwriting.
	other := &v1alpha1.Customer{}
	g.Expect(cl.Get(ctx, client.ObjectKeyFromObject(c), other)).To(Succeed())
	other.Status.Members = 7
	g.Expect(cl.Status().Update(ctx, other)).To(Succeed())
	c.Status.Projects = 3
	err = p.PatchStatus(ctx, cl, c)
	g.Expect(apierrors.IsConflict(err)).To(BeTrue(), "got %v", err)
}
