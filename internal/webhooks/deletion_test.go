package webhooks

import (
	"testing"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// The garbage collector, which is neither a partner nor a member, removes the
// foregroundDeletion finalizer of a quota or message being deleted: the update
// must pass, while the same requester changing spec is still refused.
func TestFinishingADeletionPasses(t *testing.T) {
	gc := asUser("system:serviceaccount:kube-system:generic-garbage-collector", admissionv1.Update, false)
	deleting := metav1.ObjectMeta{Name: "acme", DeletionTimestamp: ptr.To(metav1.Now()),
		Finalizers: []string{metav1.FinalizerDeleteDependents}}
	finished := *deleting.DeepCopy()
	finished.Finalizers = nil

	t.Run("CustomerQuota", func(t *testing.T) {
		g := NewWithT(t)
		v := &CustomerQuotaValidator{Partners: cmPartners{}}
		spec := v1alpha1.CustomerQuotaSpec{Customer: "acme", MaxProjects: ptr.To[int32](3)}
		old := &v1alpha1.CustomerQuota{ObjectMeta: deleting, Spec: spec}
		_, err := v.ValidateUpdate(gc, old, &v1alpha1.CustomerQuota{ObjectMeta: finished, Spec: spec})
		g.Expect(err).NotTo(HaveOccurred())

		raised := spec.DeepCopy()
		raised.MaxProjects = ptr.To[int32](30)
		_, err = v.ValidateUpdate(gc, old, &v1alpha1.CustomerQuota{ObjectMeta: deleting, Spec: *raised})
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "a spec change stays a partner's, deleting or not: %v", err)
		relabelled := *finished.DeepCopy()
		relabelled.Labels = map[string]string{"team": "b"}
		_, err = v.ValidateUpdate(gc, old, &v1alpha1.CustomerQuota{ObjectMeta: relabelled, Spec: spec})
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "so does a label change: %v", err)
		held := *deleting.DeepCopy()
		held.Finalizers = append(held.Finalizers, "example.com/hold")
		_, err = v.ValidateUpdate(gc, old, &v1alpha1.CustomerQuota{ObjectMeta: held, Spec: spec})
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "and a finalizer added: %v", err)
		live := metav1.ObjectMeta{Name: "acme", Labels: map[string]string{"team": "a"}}
		_, err = v.ValidateUpdate(gc, &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "acme"}, Spec: spec},
			&v1alpha1.CustomerQuota{ObjectMeta: live, Spec: spec})
		g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "not being deleted: the rule applies: %v", err)
	})
	t.Run("CustomerMessage", func(t *testing.T) {
		g := NewWithT(t)
		v := &CustomerMessageValidator{Partners: cmPartners{}}
		spec := v1alpha1.CustomerMessageSpec{Customer: "acme", Title: "Maintenance"}
		_, err := v.ValidateUpdate(gc, &v1alpha1.CustomerMessage{ObjectMeta: deleting, Spec: spec},
			&v1alpha1.CustomerMessage{ObjectMeta: finished, Spec: spec})
		g.Expect(err).NotTo(HaveOccurred())
	})
	t.Run("CustomerMembership", func(t *testing.T) {
		g := NewWithT(t)
		v := &CustomerMembershipValidator{Partners: cmPartners{}}
		spec := v1alpha1.CustomerMembershipSpec{Customer: "acme", Email: "ann@acme.test", Role: v1alpha1.RoleViewer}
		_, err := v.ValidateUpdate(gc, &v1alpha1.CustomerMembership{ObjectMeta: deleting, Spec: spec},
			&v1alpha1.CustomerMembership{ObjectMeta: finished, Spec: spec})
		g.Expect(err).NotTo(HaveOccurred())
	})
}
