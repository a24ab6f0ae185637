// Package members holds the small rules about memberships that the controllers,
// webhooks and the portal share: who a membership names, and whether it is active.
package members

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/status"
	"github.com/partnerops/customer-operator/internal/validation"
)

// Username is the Kubernetes username a membership grants access to: spec.username,
// or else prefix + spec.email (lower-case).
func Username(m *v1alpha1.CustomerMembership, prefix string) string {
	if m.Spec.Username != "" {
		return m.Spec.Username
	}
	return prefix + validation.LowerASCII(m.Spec.Email)
}

// InvitationMode is spec.invitation with its default applied.
func InvitationMode(m *v1alpha1.CustomerMembership) v1alpha1.InvitationMode {
	if m.Spec.Invitation == "" {
		return v1alpha1.InvitationEmail
	}
	return m.Spec.Invitation
}

// IsActive reports whether a membership grants access, as far as the membership
// itself says: accepted (or invitation None), not being deleted, and not a duplicate
// that raced past admission. Whether its customer exists is the caller's to check.
func IsActive(m *v1alpha1.CustomerMembership) bool {
	if !m.DeletionTimestamp.IsZero() {
		return false
	}
	if IsDuplicate(m) {
		return false
	}
	return InvitationMode(m) == v1alpha1.InvitationNone || m.Status.AcceptedTime != nil
}

// ActiveSince is when the membership became active: its creation with invitation
// None, its acceptance otherwise; nil when it was never accepted.
func ActiveSince(m *v1alpha1.CustomerMembership) *metav1.Time {
	if InvitationMode(m) == v1alpha1.InvitationNone {
		return &m.CreationTimestamp
	}
	return m.Status.AcceptedTime
}

// IsDuplicate reports whether the membership was marked a duplicate: another
// membership of the same customer and e-mail is older, and this one grants nothing.
func IsDuplicate(m *v1alpha1.CustomerMembership) bool {
	ready := status.Get(m, v1alpha1.ReadyCondition)
	return ready != nil && ready.Reason == v1alpha1.DuplicateReason
}
