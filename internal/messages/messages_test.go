package messages

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func message(policy v1alpha1.ReadPolicy, roles ...v1alpha1.Role) *v1alpha1.CustomerMessage {
	return &v1alpha1.CustomerMessage{
		ObjectMeta: metav1.ObjectMeta{Name: "notice", UID: "msg-uid", CreationTimestamp: metav1.NewTime(t0)},
		Spec: v1alpha1.CustomerMessageSpec{
			Customer: "acme", Title: "t", Body: "b", ReadPolicy: policy, Roles: roles,
		},
	}
}

func ack(name, user string, after time.Duration) v1alpha1.MessageAcknowledgement {
	return v1alpha1.MessageAcknowledgement{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(after))},
		Spec:       v1alpha1.MessageAcknowledgementSpec{Message: "notice", User: user},
	}
}

func membership(name, email string, role v1alpha1.Role) v1alpha1.CustomerMembership {
	return v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0)},
		Spec: v1alpha1.CustomerMembershipSpec{
			Customer: "acme", Email: email, Role: role, Invitation: v1alpha1.InvitationNone,
		},
	}
}

func TestRecipientsAreActiveMembersOfTheAddressedRoles(t *testing.T) {
	g := NewWithT(t)
	pending := membership("carol", "carol@example.com", v1alpha1.RoleAdmin)
	pending.Spec.Invitation = v1alpha1.InvitationEmail // not accepted yet: not active
	ms := []v1alpha1.CustomerMembership{
		membership("alice", "alice@example.com", v1alpha1.RoleAdmin),
		membership("bob", "bob@example.com", v1alpha1.RoleViewer),
		pending,
	}
	g.Expect(sets.List(Recipients(message(v1alpha1.AllMustRead), ms, "oidc:"))).
		To(Equal([]string{"oidc:alice@example.com", "oidc:bob@example.com"}))
	g.Expect(sets.List(Recipients(message(v1alpha1.AllMustRead, v1alpha1.RoleAdmin), ms, ""))).
		To(Equal([]string{"alice@example.com"}))
}

// DESIGN.md: recipients are the active members when the message is published;
// those who join later count from then on under AllMustRead only.
func TestMembersWhoJoinAfterPublicationCountForAllMustReadOnly(t *testing.T) {
	g := NewWithT(t)
	published := metav1.NewTime(t0.Add(time.Hour))
	early := membership("alice", "alice@example.com", v1alpha1.RoleViewer)
	sameSecond := membership("bob", "bob@example.com", v1alpha1.RoleViewer)
	sameSecond.CreationTimestamp = published
	late := membership("carol", "carol@example.com", v1alpha1.RoleViewer)
	late.CreationTimestamp = metav1.NewTime(published.Add(time.Second))
	acceptedLate := membership("dave", "dave@example.com", v1alpha1.RoleViewer)
	acceptedLate.Spec.Invitation = v1alpha1.InvitationEmail
	acceptedLate.Status.AcceptedTime = &metav1.Time{Time: published.Add(time.Minute)}
	invitedEarlyAcceptedEarly := membership("erin", "erin@example.com", v1alpha1.RoleViewer)
	invitedEarlyAcceptedEarly.Spec.Invitation = v1alpha1.InvitationEmail
	invitedEarlyAcceptedEarly.Status.AcceptedTime = &metav1.Time{Time: published.Add(-time.Minute)}
	ms := []v1alpha1.CustomerMembership{early, sameSecond, late, acceptedLate, invitedEarlyAcceptedEarly}

	single := message(v1alpha1.SingleRead)
	g.Expect(sets.List(Recipients(single, ms, ""))).To(HaveLen(5), "not yet published: everyone now")
	single.Status.PublishedTime = &published
	g.Expect(sets.List(Recipients(single, ms, ""))).To(Equal([]string{"alice@example.com", "bob@example.com", "erin@example.com"}))
	all := message(v1alpha1.AllMustRead)
	all.Status.PublishedTime = &published
	g.Expect(sets.List(Recipients(all, ms, ""))).To(HaveLen(5))
}

func TestAcknowledgedCountsEachUserOnceOldestFirst(t *testing.T) {
	g := NewWithT(t)
	m := message(v1alpha1.AllMustRead)
	earlier := ack("of-earlier-message", "dave", -time.Minute)
	foreign := ack("owned-by-another-uid", "erin", time.Second)
	foreign.OwnerReferences = []metav1.OwnerReference{{Kind: "CustomerMessage", Name: "notice", UID: types.UID("old")}}
	deleting := ack("deleting", "frank", time.Second)
	deleting.DeletionTimestamp = &metav1.Time{Time: t0.Add(time.Hour)}

	by, winners := Acknowledged(m, []v1alpha1.MessageAcknowledgement{
		ack("bob-2", "bob", 3*time.Second),
		ack("alice", "alice", 2*time.Second),
		ack("bob-1", "bob", time.Second),
		earlier, foreign, deleting,
	})
	g.Expect(by).To(Equal([]v1alpha1.Acknowledgement{
		{User: "bob", Time: metav1.NewTime(t0.Add(time.Second))},
		{User: "alice", Time: metav1.NewTime(t0.Add(2 * time.Second))},
	}))
	g.Expect(winners).To(Equal(map[string]string{"bob": "bob-1", "alice": "alice"}))
}

func TestEvaluate(t *testing.T) {
	acked := func(users ...string) []v1alpha1.Acknowledgement {
		var out []v1alpha1.Acknowledgement
		for i, u := range users {
			out = append(out, v1alpha1.Acknowledgement{User: u, Time: metav1.NewTime(t0.Add(time.Duration(i) * time.Second))})
		}
		return out
	}
	resolvedEarlier := message(v1alpha1.AllMustRead)
	resolvedEarlier.Status.Conditions = []metav1.Condition{{
		Type: v1alpha1.ResolvedCondition, Status: metav1.ConditionTrue,
		Reason: v1alpha1.AcknowledgedReason, Message: "acknowledged by all 1 recipient(s) (AllMustRead)",
	}}

	for name, tc := range map[string]struct {
		msg        *v1alpha1.CustomerMessage
		recipients []string
		acked      []v1alpha1.Acknowledgement
		want       Outcome
	}{
		"AllMustRead waits for every recipient": {
			msg: message(v1alpha1.AllMustRead), recipients: []string{"alice", "bob"}, acked: acked("alice"),
			want: Outcome{Recipients: 2, Pending: 1, Reason: v1alpha1.AwaitingAcknowledgementReason,
				Message: "1 of 2 recipient(s) have not acknowledged yet"},
		},
		"AllMustRead resolves when all acknowledged": {
			msg: message(v1alpha1.AllMustRead), recipients: []string{"alice", "bob"}, acked: acked("bob", "alice"),
			want: Outcome{Recipients: 2, Resolved: true, Reason: v1alpha1.AcknowledgedReason,
				Message: "acknowledged by all 2 recipient(s) (AllMustRead)"},
		},
		"a member who left before acknowledging does not hold it open": {
			msg: message(v1alpha1.AllMustRead), recipients: []string{"alice"}, acked: acked("alice"),
			want: Outcome{Recipients: 1, Resolved: true, Reason: v1alpha1.AcknowledgedReason,
				Message: "acknowledged by all 1 recipient(s) (AllMustRead)"},
		},
		"a member who acknowledged and left still counts as a recipient": {
			msg: message(v1alpha1.AllMustRead), recipients: []string{"bob"}, acked: acked("alice"),
			want: Outcome{Recipients: 2, Pending: 1, Reason: v1alpha1.AwaitingAcknowledgementReason,
				Message: "1 of 2 recipient(s) have not acknowledged yet"},
		},
		"SingleRead resolves with the first acknowledgement": {
			msg: message(v1alpha1.SingleRead), recipients: []string{"alice", "bob", "carol"}, acked: acked("carol", "bob"),
			want: Outcome{Recipients: 3, Resolved: true, Reason: v1alpha1.AcknowledgedReason,
				Message: `resolved for everyone by "carol" (SingleRead)`},
		},
		"SingleRead waits for anyone": {
			msg: message(v1alpha1.SingleRead), recipients: []string{"alice", "bob"},
			want: Outcome{Recipients: 2, Pending: 2, Reason: v1alpha1.AwaitingAcknowledgementReason,
				Message: "waiting for the first acknowledgement from one of 2 recipient(s)"},
		},
		"no recipients": {
			msg:  message(v1alpha1.AllMustRead, v1alpha1.RoleAdmin, v1alpha1.RoleEditor),
			want: Outcome{Reason: v1alpha1.NoRecipientsReason, Message: `customer "acme" has no active members in role(s) Admin, Editor yet`},
		},
		"resolution is final: a later member does not reopen it": {
			msg: resolvedEarlier, recipients: []string{"alice", "newcomer"}, acked: acked("alice"),
			want: Outcome{Recipients: 2, Resolved: true, Reason: v1alpha1.AcknowledgedReason,
				Message: "acknowledged by all 1 recipient(s) (AllMustRead)"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			NewWithT(t).Expect(Evaluate(tc.msg, sets.New(tc.recipients...), tc.acked)).To(Equal(tc.want))
		})
	}
}

func TestLiveReservations(t *testing.T) {
	g := NewWithT(t)
	m := message(v1alpha1.SingleRead)
	m.Status.Reservations = []v1alpha1.AcknowledgementReservation{
		{User: "expired", ExpiresAt: metav1.NewTime(t0)},
		{User: "live", ExpiresAt: metav1.NewTime(t0.Add(time.Second))},
	}
	g.Expect(LiveReservations(m, t0)).To(Equal([]v1alpha1.AcknowledgementReservation{
		{User: "live", ExpiresAt: metav1.NewTime(t0.Add(time.Second))},
	}))
	g.Expect(LiveReservationOf(m, "live", t0)).To(HaveField("ExpiresAt", metav1.NewTime(t0.Add(time.Second))))
	g.Expect(LiveReservationOf(m, "expired", t0)).To(BeNil())
	g.Expect(LiveReservationOf(m, "nobody", t0)).To(BeNil())
}
