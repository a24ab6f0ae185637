package operator

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

func TestStripForCache(t *testing.T) {
	m := &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{
		Name: "acme-dana",
		Annotations: map[string]string{
			lastAppliedAnnotation:               `{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerMembership"}`,
			v1alpha1.ResendInvitationAnnotation: "2",
			"argocd.argoproj.io/tracking-id":    "customers:customers.partnerops.io/CustomerMembership:/acme-dana",
		},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
	}}
	out, err := stripForCache(m)
	if err != nil || out != m {
		t.Fatalf("got %v, %v; want the same object back", out, err)
	}
	if m.ManagedFields != nil {
		t.Errorf("managed fields kept: %v", m.ManagedFields)
	}
	if _, ok := m.Annotations[lastAppliedAnnotation]; ok {
		t.Error("the last-applied copy is kept")
	}
	if m.Annotations[v1alpha1.ResendInvitationAnnotation] != "2" || len(m.Annotations) != 2 {
		t.Errorf("other annotations must stay (the controllers read them): %v", m.Annotations)
	}

	// Only the last-applied copy: no empty map left behind.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "acme-web",
		Annotations: map[string]string{lastAppliedAnnotation: "{}"}}}
	if _, err := stripForCache(ns); err != nil || ns.Annotations != nil {
		t.Errorf("got %v, %v", ns.Annotations, err)
	}
	// Not an object: handed back as it is.
	if out, err := stripForCache("tombstone"); err != nil || out != "tombstone" {
		t.Errorf("got %v, %v", out, err)
	}
}
