// Package messages holds the rules of CustomerMessages that the message controller,
// the acknowledgement webhook and the kubectl plugin share, as pure functions: who a
// message is addressed to, which acknowledgements count, and when it is resolved.
//
// Recipients are computed, not recorded: they are the active members of the
// message's customer in the addressed roles, now. Under AllMustRead a member who
// joins while the message is open becomes a recipient (and must acknowledge it
// too); under SingleRead the recipients are those who were active members when it
// was published (status.publishedTime), as DESIGN.md has it, so a later member
// cannot resolve it for the others. One who leaves before acknowledging stops being
// a recipient, so nobody who left can hold a message open forever. Once a message
// is resolved it stays resolved (like a Job's Complete condition): later members do
// not see it, and acknowledgements are refused.
package messages

import (
	"fmt"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/access"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/status"
)

// ReadPolicy is spec.readPolicy with its default applied.
func ReadPolicy(m *v1alpha1.CustomerMessage) v1alpha1.ReadPolicy {
	if m.Spec.ReadPolicy == "" {
		return v1alpha1.AllMustRead
	}
	return m.Spec.ReadPolicy
}

// IsResolved reports whether the message's Resolved condition is True. Resolution
// is final: the controller never sets it back to False.
func IsResolved(m *v1alpha1.CustomerMessage) bool {
	return status.IsTrue(m, v1alpha1.ResolvedCondition)
}

// Addresses reports whether the message is addressed to members of role.
func Addresses(m *v1alpha1.CustomerMessage, role v1alpha1.Role) bool {
	if len(m.Spec.Roles) == 0 {
		return true
	}
	for _, r := range m.Spec.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// Recipients are the usernames of the active members of the message's customer
// (memberships must be that customer's, and the customer must exist) in the roles
// the message addresses. Duplicate memberships count once, as they do for access.
func Recipients(m *v1alpha1.CustomerMessage, memberships []v1alpha1.CustomerMembership, usernamePrefix string) sets.Set[string] {
	recipients := sets.New[string]()
	for _, ms := range RecipientMemberships(m, memberships) {
		recipients.Insert(members.Username(ms, usernamePrefix))
	}
	return recipients
}

// RecipientMemberships are the memberships that make their people recipients: the
// active ones in the addressed roles (for SingleRead, active since the message was
// published at the latest), of which, among duplicates (the same customer and
// e-mail), only the one that grants access (access.Winners).
func RecipientMemberships(m *v1alpha1.CustomerMessage, memberships []v1alpha1.CustomerMembership) []*v1alpha1.CustomerMembership {
	winners := access.Winners(memberships)
	var out []*v1alpha1.CustomerMembership
	for i := range memberships {
		ms := &memberships[i]
		if winners[access.EmailKey(ms)] == ms.Name && members.IsActive(ms) && Addresses(m, ms.Spec.Role) && !JoinedAfter(m, ms) {
			out = append(out, ms)
		}
	}
	return out
}

// JoinedAfter reports whether a membership became active after a SingleRead message
// was published, which keeps it from being a recipient. A message not yet
// published, and an AllMustRead message, have no such members.
func JoinedAfter(m *v1alpha1.CustomerMessage, ms *v1alpha1.CustomerMembership) bool {
	if ReadPolicy(m) != v1alpha1.SingleRead || m.Status.PublishedTime == nil {
		return false
	}
	since := members.ActiveSince(ms)
	return since != nil && since.After(m.Status.PublishedTime.Time)
}

// Counts reports whether an acknowledgement counts for the message: it names the
// message, is not being deleted, and does not belong to an earlier message of the
// same name (owned by another UID, or created before this message).
func Counts(m *v1alpha1.CustomerMessage, a *v1alpha1.MessageAcknowledgement) bool {
	if a.Spec.Message != m.Name || !a.DeletionTimestamp.IsZero() {
		return false
	}
	if a.CreationTimestamp.Before(&m.CreationTimestamp) {
		return false
	}
	for _, ref := range a.OwnerReferences {
		if ref.Kind == "CustomerMessage" && ref.Name == m.Name && ref.UID != m.UID {
			return false
		}
	}
	return true
}

// Older orders acknowledgements: by creationTimestamp, then by name.
func Older(a, b *v1alpha1.MessageAcknowledgement) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// Acknowledged returns who acknowledged the message, oldest first, each user once
// (a duplicate that raced past admission counts once, at its oldest time), and the
// name of the acknowledgement that counts for each user.
func Acknowledged(m *v1alpha1.CustomerMessage, acks []v1alpha1.MessageAcknowledgement) ([]v1alpha1.Acknowledgement, map[string]string) {
	counting := make([]*v1alpha1.MessageAcknowledgement, 0, len(acks))
	for i := range acks {
		if Counts(m, &acks[i]) {
			counting = append(counting, &acks[i])
		}
	}
	sort.Slice(counting, func(i, j int) bool { return Older(counting[i], counting[j]) })

	var by []v1alpha1.Acknowledgement
	winners := make(map[string]string, len(counting))
	for _, a := range counting {
		if _, seen := winners[a.Spec.User]; seen {
			continue
		}
		winners[a.Spec.User] = a.Name
		by = append(by, v1alpha1.Acknowledgement{User: a.Spec.User, Time: a.CreationTimestamp})
	}
	return by, winners
}

// HasAcknowledged reports whether user is in status.acknowledgedBy.
func HasAcknowledged(m *v1alpha1.CustomerMessage, user string) bool {
	for _, a := range m.Status.AcknowledgedBy {
		if a.User == user {
			return true
		}
	}
	return false
}

// LiveReservations are the reservations that have not expired at now.
func LiveReservations(m *v1alpha1.CustomerMessage, now time.Time) []v1alpha1.AcknowledgementReservation {
	var live []v1alpha1.AcknowledgementReservation
	for _, r := range m.Status.Reservations {
		if now.Before(r.ExpiresAt.Time) {
			live = append(live, r)
		}
	}
	return live
}

// LiveReservationOf is user's live reservation of m (admission admitted their
// acknowledgement, the operator has not recorded it yet), or nil.
func LiveReservationOf(m *v1alpha1.CustomerMessage, user string, now time.Time) *v1alpha1.AcknowledgementReservation {
	for _, r := range LiveReservations(m, now) {
		if r.User == user {
			return &r
		}
	}
	return nil
}

// Outcome is what the read policy says of a message.
type Outcome struct {
	// Recipients counts the current recipients and everyone who acknowledged.
	Recipients int32
	// Pending counts the current recipients who have not acknowledged; 0 once resolved.
	Pending int32
	// Resolved is whether the read policy is satisfied.
	Resolved bool
	// Reason and Message describe the Resolved condition.
	Reason, Message string
}

// Evaluate applies the read policy to the current recipients and the
// acknowledgements (oldest first, each user once). A message that was resolved
// stays resolved, with its condition's reason and message.
func Evaluate(m *v1alpha1.CustomerMessage, recipients sets.Set[string], acknowledged []v1alpha1.Acknowledgement) Outcome {
	acked := sets.New[string]()
	for _, a := range acknowledged {
		acked.Insert(a.User)
	}
	out := Outcome{Recipients: int32(recipients.Union(acked).Len())}
	waiting := recipients.Difference(acked)

	if previous := status.Get(m, v1alpha1.ResolvedCondition); previous != nil && previous.Status == metav1.ConditionTrue {
		out.Resolved, out.Reason, out.Message = true, previous.Reason, previous.Message
		return out
	}

	switch {
	case ReadPolicy(m) == v1alpha1.SingleRead && len(acknowledged) > 0:
		out.Resolved, out.Reason = true, v1alpha1.AcknowledgedReason
		out.Message = fmt.Sprintf("resolved for everyone by %q (SingleRead)", acknowledged[0].User)
	case ReadPolicy(m) == v1alpha1.AllMustRead && len(acknowledged) > 0 && waiting.Len() == 0:
		out.Resolved, out.Reason = true, v1alpha1.AcknowledgedReason
		out.Message = fmt.Sprintf("acknowledged by all %d recipient(s) (AllMustRead)", len(acknowledged))
	case recipients.Len() == 0:
		out.Reason = v1alpha1.NoRecipientsReason
		out.Message = fmt.Sprintf("customer %q has no active members%s yet", m.Spec.Customer, rolesSuffix(m))
	case ReadPolicy(m) == v1alpha1.SingleRead:
		out.Pending = int32(waiting.Len())
		out.Reason = v1alpha1.AwaitingAcknowledgementReason
		out.Message = fmt.Sprintf("waiting for the first acknowledgement from one of %d recipient(s)", waiting.Len())
	default:
		out.Pending = int32(waiting.Len())
		out.Reason = v1alpha1.AwaitingAcknowledgementReason
		out.Message = fmt.Sprintf("%d of %d recipient(s) have not acknowledged yet", waiting.Len(), out.Recipients)
	}
	return out
}

func rolesSuffix(m *v1alpha1.CustomerMessage) string {
	if len(m.Spec.Roles) == 0 {
		return ""
	}
	roles := make([]string, len(m.Spec.Roles))
	for i, r := range m.Spec.Roles {
		roles[i] = string(r)
	}
	return " in role(s) " + strings.Join(roles, ", ")
}
