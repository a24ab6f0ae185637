package status

import (
	"context"
	"encoding/json"
	"testing"
	"time"

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

// storedCustomer returns a Customer named name with status st, as read from a fake
// client that holds it and records the data of every status patch sent through it.
func storedCustomer(t *testing.T, name string, st v1alpha1.CustomerStatus) (*v1alpha1.Customer, client.Client, *[][]byte) {
	t.Helper()
	c := &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec:       v1alpha1.CustomerSpec{Identifier: name, DisplayName: name},
		Status:     st,
	}
	var patches [][]byte
	cl := fake.NewClientBuilder().WithScheme(newScheme(t)).WithObjects(c).
		WithStatusSubresource(&v1alpha1.Customer{}).
		WithInterceptorFuncs(interceptor.Funcs{
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				data, err := patch.Data(obj)
				if err != nil {
					return err
				}
				patches = append(patches, data)
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	if err := cl.Get(context.Background(), client.ObjectKeyFromObject(c), c); err != nil {
		t.Fatal(err)
	}
	return c, cl, &patches
}

func TestPatcherWritesOnlyChangedStatusWithOptimisticLock(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	c, cl, patches := storedCustomer(t, "acme", v1alpha1.CustomerStatus{})

	// Unchanged status: no write at all.
	p := NewPatcher(c)
	g.Expect(p.PatchStatus(ctx, cl, c)).To(Succeed())
	g.Expect(*patches).To(BeEmpty())

	// A changed status is written once, carrying the resourceVersion (the lock).
	c.Status.Projects = 2
	MarkReady(c, "ok")
	g.Expect(p.PatchStatus(ctx, cl, c)).To(Succeed())
	g.Expect(*patches).To(HaveLen(1))
	g.Expect(string((*patches)[0])).To(ContainSubstring(`"resourceVersion"`))

	// Writing the same status again is free.
	g.Expect(p.PatchStatus(ctx, cl, c)).To(Succeed())
	g.Expect(*patches).To(HaveLen(1))

	// Someone else wrote in between: the stale patch conflicts instead of overwriting.
	other := &v1alpha1.Customer{}
	g.Expect(cl.Get(ctx, client.ObjectKeyFromObject(c), other)).To(Succeed())
	other.Status.Members = 7
	g.Expect(cl.Status().Update(ctx, other)).To(Succeed())
	c.Status.Projects = 3
	err := p.PatchStatus(ctx, cl, c)
	g.Expect(apierrors.IsConflict(err)).To(BeTrue(), "got %v", err)
}

// A pass that sets Ready True and then, when a later step fails, False again with
// the same reason and message as stored, changes nothing: no write, and the stored
// transition time stays.
func TestPatcherKeepsTheTransitionTimeOfAConditionSetBack(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	c, cl, patches := storedCustomer(t, "acme", v1alpha1.CustomerStatus{})
	first := NewPatcher(c)
	MarkReconciling(c, v1alpha1.ReconcileErrorReason, "sending failed")
	since := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c.Status.Conditions[0].LastTransitionTime = since
	g.Expect(first.PatchStatus(ctx, cl, c)).To(Succeed())
	g.Expect(*patches).To(HaveLen(1))
	p := NewPatcher(c)

	MarkReady(c, "ok")
	MarkReconciling(c, v1alpha1.ReconcileErrorReason, "sending failed")
	g.Expect(p.PatchStatus(ctx, cl, c)).To(Succeed())
	g.Expect(*patches).To(HaveLen(1), "nothing changed")
	g.Expect(Get(c, v1alpha1.ReadyCondition).LastTransitionTime.Time).To(BeTemporally("==", since.Time))

	MarkReady(c, "ok")
	g.Expect(p.PatchStatus(ctx, cl, c)).To(Succeed())
	g.Expect(*patches).To(HaveLen(2), "a real transition is written")
	g.Expect(Get(c, v1alpha1.ReadyCondition).LastTransitionTime.Time).To(BeTemporally(">", since.Time))
}

func TestPatcherAlwaysWritesTheCounters(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	c, cl, patches := storedCustomer(t, "zero", v1alpha1.CustomerStatus{
		Reservations: []v1alpha1.ProjectReservation{{Namespace: "zero-web"}},
	})

	// Only a condition changes; the counters stay 0, which a plain merge patch leaves
	// out, so the API server would never store them.
	p := NewPatcher(c)
	c.Status.Members = 2
	MarkReady(c, "ok")
	g.Expect(p.PatchStatus(ctx, cl, c)).To(Succeed())
	g.Expect(*patches).To(HaveLen(1))
	var patch struct {
		Metadata map[string]any             `json:"metadata"`
		Status   map[string]json.RawMessage `json:"status"`
	}
	g.Expect(json.Unmarshal((*patches)[0], &patch)).To(Succeed())
	g.Expect(patch.Metadata).To(HaveKey("resourceVersion"), "still under the optimistic lock")
	g.Expect(patch.Status).To(HaveKeyWithValue("projects", json.RawMessage("0")))
	g.Expect(patch.Status).To(HaveKeyWithValue("maxProjects", json.RawMessage("0")))
	g.Expect(patch.Status).To(HaveKeyWithValue("members", json.RawMessage("2")))
	g.Expect(patch.Status).To(HaveKey("conditions"))
	g.Expect(patch.Status).NotTo(HaveKey("reservations"), "an unchanged list the webhook owns is left alone")
	g.Expect(patch.Status).NotTo(HaveKey("observedGeneration"), "omitempty fields are sent only when changed")

	// Kinds without such fields get the plain merge patch.
	ack := &v1alpha1.MessageAcknowledgement{}
	g.Expect(alwaysSerialized(ack)).To(BeEmpty())
	q := &v1alpha1.CustomerQuota{Status: v1alpha1.CustomerQuotaStatus{Max: 5}}
	g.Expect(alwaysSerialized(q)).To(Equal(map[string]any{"used": int32(0), "max": int32(5)}))
}
