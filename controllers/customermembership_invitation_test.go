package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/invitation"
	"github.com/partnerops/customer-operator/internal/mail"
	"github.com/partnerops/customer-operator/internal/mail/mailtest"
)

// Unit tests of the invitation phase against a fake API server: the exactly-once
// protocol in the corners an envtest cannot reach on demand (a stale cache, a crash
// between send and record, backoff timing). The envtest suite covers the rest.

const testUID = types.UID("3f1c8a2e-5b7d-4e9a-9c0f-1a2b3c4d5e6f")

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type sentMail struct {
	msg      mail.Message
	recorded *v1alpha1.CustomerMembership // the membership as the server had it during the send
}

type harness struct {
	r     *CustomerMembershipReconciler
	c     client.Client
	clock *clocktesting.FakeClock
	sent  []sentMail
	fail  error
	// smtp, when set, delivers for real (to know how the mail package classifies
	// a server's refusal).
	smtp mail.Sender
}

func newHarness(t *testing.T, m *v1alpha1.CustomerMembership, funcs *interceptor.Funcs) *harness {
	t.Helper()
	scheme := unitScheme(t)
	customer := &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: "acme"},
		Spec:       v1alpha1.CustomerSpec{Identifier: "acme", DisplayName: "Acme & Co"},
	}
	builder := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(customer, m).
		WithStatusSubresource(&v1alpha1.CustomerMembership{}).
		WithIndex(&v1alpha1.CustomerMembership{}, MembershipCustomerIndex, func(o client.Object) []string {
			return []string{string(o.(*v1alpha1.CustomerMembership).Spec.Customer)}
		})
	if funcs != nil {
		builder = builder.WithInterceptorFuncs(*funcs)
	}
	c := builder.Build()
	h := &harness{c: c, clock: clocktesting.NewFakeClock(now)}
	h.r = &CustomerMembershipReconciler{
		Client:         c,
		APIReader:      c,
		Recorder:       events.NewFakeRecorder(100),
		Clock:          h.clock,
		Links:          TokenLinks{Key: []byte(strings.Repeat("k", 32)), PortalURL: "https://portal.example"},
		InvitationTTL:  168 * time.Hour,
		SendBackoff:    DefaultSendBackoff,
		MaxSendBackoff: DefaultMaxSendBackoff,
	}
	h.r.Sender = mail.SenderFunc(func(ctx context.Context, msg mail.Message) error {
		recorded := &v1alpha1.CustomerMembership{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(m), recorded); err != nil {
			return err
		}
		h.sent = append(h.sent, sentMail{msg: msg, recorded: recorded})
		if h.smtp != nil {
			return h.smtp.Send(ctx, msg)
		}
		return h.fail
	})
	return h
}

func invited(name string) *v1alpha1.CustomerMembership {
	return &v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: testUID, Generation: 1},
		Spec: v1alpha1.CustomerMembershipSpec{
			Customer: "acme", Email: "dana@example.com", Role: v1alpha1.RoleViewer, Invitation: v1alpha1.InvitationEmail,
		},
	}
}

func (h *harness) reconcile(t *testing.T, name string) ctrl.Result {
	t.Helper()
	res, err := h.r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: name}})
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	return res
}

func (h *harness) get(t *testing.T, name string) *v1alpha1.CustomerMembership {
	t.Helper()
	m := &v1alpha1.CustomerMembership{}
	NewWithT(t).Expect(h.c.Get(context.Background(), types.NamespacedName{Name: name}, m)).To(Succeed())
	return m
}

func TestInvitationIsRecordedBeforeItIsSent(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, invited("m"), nil)

	res := h.reconcile(t, "m")

	g.Expect(h.sent).To(HaveLen(1))
	during := h.sent[0].recorded.Status.Invitation
	g.Expect(during).NotTo(BeNil(), "the attempt is in status while the mail is out")
	g.Expect(during.Round).To(Equal(int32(1)))
	g.Expect(during.Attempts).To(Equal(int32(1)))
	g.Expect(during.SentTime).To(BeNil())
	g.Expect(during.ExpiryTime.Time).To(BeTemporally("==", now.Add(168*time.Hour)), "the link's expiry is bounded before it is out")

	msg := h.sent[0].msg
	g.Expect(msg.MessageID).To(Equal("<" + string(testUID) + ".1@customer-operator>"))
	g.Expect(msg.Text).To(ContainSubstring("https://portal.example/invitations/"))
	g.Expect(msg.Subject).To(ContainSubstring("Acme & Co"))

	after := h.get(t, "m")
	g.Expect(after.Status.Invitation.SentTime.Time).To(BeTemporally("==", now))
	g.Expect(after.Status.Invitation.ExpiryTime.Time).To(BeTemporally("==", now.Add(168*time.Hour)))
	g.Expect(apimeta.IsStatusConditionTrue(after.Status.Conditions, v1alpha1.InvitedCondition)).To(BeTrue())
	g.Expect(res.RequeueAfter).To(BeZero(), "an expiry beyond ExpiryHorizon is left to the periodic resync")
	g.Expect(h.r.Recorder.(*events.FakeRecorder).Events).NotTo(Receive(), "a first-attempt send is recorded in Invited, not in an event")

	// A second reconcile sends nothing.
	h.reconcile(t, "m")
	g.Expect(h.sent).To(HaveLen(1))

	// Within the horizon (as a resync finds it), the expiry is followed to the second.
	h.clock.Step(168*time.Hour - ExpiryHorizon + time.Hour)
	res = h.reconcile(t, "m")
	g.Expect(res.RequeueAfter).To(Equal(ExpiryHorizon - time.Hour + time.Second))
	g.Expect(ExpiryHorizon).To(BeNumerically(">", ResyncPeriod+ResyncPeriod/10), "a resync always comes before the horizon is passed")
}

func TestNoPortalURLHoldsInvitationsBack(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, invited("m"), nil)
	h.r.Links = TokenLinks{Key: []byte(strings.Repeat("k", 32))}

	res := h.reconcile(t, "m")
	g.Expect(res).To(Equal(ctrl.Result{}), "only a restart sets it, and a restart reconciles everything: no retries")
	g.Expect(h.sent).To(BeEmpty(), "a link to nowhere is not an invitation")
	after := h.get(t, "m")
	g.Expect(after.Status.Invitation == nil || after.Status.Invitation.Attempts == 0).To(BeTrue(), "configuration, not an attempt")
	for _, cond := range []string{v1alpha1.ReadyCondition, v1alpha1.StalledCondition, v1alpha1.InvitedCondition} {
		c := apimeta.FindStatusCondition(after.Status.Conditions, cond)
		g.Expect(c).NotTo(BeNil(), cond)
		g.Expect(c.Reason).To(Equal(v1alpha1.PortalURLNotSetReason), cond)
		g.Expect(c.Message).To(ContainSubstring("no --portal-url"), cond)
	}

	h.r.Links = TokenLinks{Key: []byte(strings.Repeat("k", 32)), PortalURL: "https://portal.example"}
	h.reconcile(t, "m")
	g.Expect(h.sent).To(HaveLen(1), "sent once it is set")
}

func TestStaleReadSendsNothing(t *testing.T) {
	g := NewWithT(t)
	stale := false
	funcs := &interceptor.Funcs{
		// Once stale is set, reads return the membership as it was before anything
		// was recorded, with its old resourceVersion: a lagging informer.
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			m, ok := obj.(*v1alpha1.CustomerMembership)
			if !ok || !stale {
				return c.Get(ctx, key, obj, opts...)
			}
			old := invited("m")
			old.ResourceVersion = "999"
			old.DeepCopyInto(m)
			return nil
		},
	}
	h := newHarness(t, invited("m"), funcs)
	// What another replica (or an earlier reconcile) recorded: sent.
	m := h.get(t, "m")
	m.Status.Invitation = &v1alpha1.InvitationStatus{Round: 1, Attempts: 1,
		SentTime: &metav1.Time{Time: now}, ExpiryTime: &metav1.Time{Time: now.Add(time.Hour)}}
	g.Expect(h.c.Status().Update(context.Background(), m)).To(Succeed())
	stale = true

	h.reconcile(t, "m")

	g.Expect(h.sent).To(BeEmpty(), "the optimistic lock on the attempt refuses a stale read")
	stale = false
	g.Expect(h.get(t, "m").Status.Invitation.Attempts).To(Equal(int32(1)), "nothing was recorded over the newer status")
}

func TestCrashBetweenSendAndRecordSendsTheSameMailAgain(t *testing.T) {
	g := NewWithT(t)
	m := invited("m")
	h := newHarness(t, m, nil)
	// A previous leader recorded the attempt, sent, and died before recording it.
	crashed := h.get(t, "m")
	crashed.Status.Invitation = &v1alpha1.InvitationStatus{Round: 1, Attempts: 1,
		LastAttemptTime: &metav1.Time{Time: now.Add(-time.Minute)}, ExpiryTime: &metav1.Time{Time: now.Add(time.Hour)}}
	g.Expect(h.c.Status().Update(context.Background(), crashed)).To(Succeed())

	h.reconcile(t, "m")

	g.Expect(h.sent).To(HaveLen(1), "at most one duplicate")
	g.Expect(h.sent[0].msg.MessageID).To(Equal("<"+string(testUID)+".1@customer-operator>"), "same Message-ID")
	link, err := h.r.Links.Link(invitation.Claim{Name: "m", UID: testUID, Round: 1})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(h.sent[0].msg.Text).To(ContainSubstring(link), "same link")
	g.Expect(h.get(t, "m").Status.Invitation.Attempts).To(Equal(int32(2)))
}

// ctxAwareStatus makes the fake client's status writes fail on a cancelled
// context, as the real client's requests do.
func ctxAwareStatus() *interceptor.Funcs {
	return &interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}
}

// On SIGTERM controller-runtime cancels the reconcile's context at once and then
// waits for the reconcile. A mail the server accepted meanwhile must still be
// recorded, or the next leader sends it again; a reconcile that starts stopped
// sends nothing.
func TestStoppingWhileSendingStillRecordsTheMail(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, invited("m"), ctxAwareStatus())
	ctx, stop := context.WithCancel(context.Background())
	deliver := h.r.Sender
	h.r.Sender = mail.SenderFunc(func(sendCtx context.Context, msg mail.Message) error {
		stop() // SIGTERM while the server is answering
		if err := sendCtx.Err(); err != nil {
			return err // what the SMTP client does with a cancelled context
		}
		return deliver.Send(sendCtx, msg)
	})

	_, err := h.r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: "m"}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(h.sent).To(HaveLen(1))
	after := h.get(t, "m")
	g.Expect(after.Status.Invitation.SentTime).NotTo(BeNil(), "the mail that went out is on record")
	g.Expect(apimeta.IsStatusConditionTrue(after.Status.Conditions, v1alpha1.InvitedCondition)).To(BeTrue())

	// The next leader has nothing to send.
	h.r.Sender = deliver
	h.reconcile(t, "m")
	g.Expect(h.sent).To(HaveLen(1))

	// A reconcile that begins after the stop does not start an attempt.
	other := invited("n")
	other.UID = "0b6f3c1e-2d4a-4f5b-8c7d-9e0f1a2b3c4d"
	other.Spec.Email = "erin@example.com"
	g.Expect(h.c.Create(context.Background(), other)).To(Succeed())
	_, err = h.r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: "n"}})
	g.Expect(err).To(MatchError(context.Canceled))
	g.Expect(h.sent).To(HaveLen(1), "no mail without its attempt on record")
}

func TestFailedSendBacksOffAndWarnsOnce(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, invited("m"), nil)
	recorder := h.r.Recorder.(*events.FakeRecorder)
	h.fail = errors.New("dial tcp 127.0.0.1:25: connect: connection refused")

	res := h.reconcile(t, "m")
	g.Expect(res.RequeueAfter).To(Equal(5 * time.Second))
	m := h.get(t, "m")
	g.Expect(m.Status.Invitation.LastError).To(ContainSubstring("connection refused"))
	g.Expect(apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.InvitedCondition).Reason).To(Equal(v1alpha1.SendFailedReason))
	g.Expect(apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ReadyCondition).Status).To(Equal(metav1.ConditionFalse))
	g.Expect(recorder.Events).To(Receive(ContainSubstring("Warning SendFailed")))

	// Before the backoff has passed, nothing is attempted.
	h.clock.Step(2 * time.Second)
	res = h.reconcile(t, "m")
	g.Expect(h.sent).To(HaveLen(1))
	g.Expect(res.RequeueAfter).To(Equal(3 * time.Second))

	h.clock.Step(3 * time.Second)
	res = h.reconcile(t, "m")
	g.Expect(h.sent).To(HaveLen(2))
	g.Expect(res.RequeueAfter).To(Equal(10*time.Second), "doubled")
	g.Expect(recorder.Events).NotTo(Receive(), "the same failure again is not a new event")

	h.fail = nil
	h.clock.Step(10 * time.Second)
	h.reconcile(t, "m")
	g.Expect(h.sent).To(HaveLen(3))
	m = h.get(t, "m")
	g.Expect(m.Status.Invitation.SentTime).NotTo(BeNil())
	g.Expect(m.Status.Invitation.LastError).To(BeEmpty())
	g.Expect(m.Status.Invitation.Attempts).To(Equal(int32(3)))
	g.Expect(apimeta.IsStatusConditionTrue(m.Status.Conditions, v1alpha1.ReadyCondition)).To(BeTrue())
	g.Expect(recorder.Events).To(Receive(ContainSubstring("Normal InvitationSent")), "the success that closes the Warnings")
}

func TestPermanentRefusalStallsUntilANewRound(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, invited("m"), nil)
	server, err := mailtest.NewServer()
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = server.Close() })
	sender, err := mail.NewSMTPSender(mail.Config{Address: server.Addr(), From: "operator@example.com", TLS: mail.TLSNone})
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = sender.Close() })
	h.smtp = sender
	server.FailNext(mailtest.StageRcpt, 550, 1) // "no such mailbox"

	res := h.reconcile(t, "m")
	g.Expect(res.RequeueAfter).To(BeZero())
	m := h.get(t, "m")
	g.Expect(apimeta.IsStatusConditionTrue(m.Status.Conditions, v1alpha1.StalledCondition)).To(BeTrue())

	h.clock.Step(time.Hour)
	h.reconcile(t, "m")
	g.Expect(h.sent).To(HaveLen(1), "a refused message is not retried")

	// A spec change while stalled: the conditions speak of the new generation, so
	// kstatus and Argo CD read Stalled (Degraded), not "waiting for the operator".
	m = h.get(t, "m")
	m.Spec.Role = v1alpha1.RoleViewer
	m.Generation++
	g.Expect(h.c.Update(context.Background(), m)).To(Succeed())
	h.reconcile(t, "m")
	g.Expect(h.sent).To(HaveLen(1))
	m = h.get(t, "m")
	g.Expect(m.Status.ObservedGeneration).To(Equal(m.Generation))
	for _, conditionType := range []string{v1alpha1.StalledCondition, v1alpha1.ReadyCondition} {
		c := apimeta.FindStatusCondition(m.Status.Conditions, conditionType)
		g.Expect(c).NotTo(BeNil(), conditionType)
		g.Expect(c.ObservedGeneration).To(Equal(m.Generation), conditionType)
	}

	m.Annotations = map[string]string{v1alpha1.ResendInvitationAnnotation: "fixed"}
	g.Expect(h.c.Update(context.Background(), m)).To(Succeed())
	h.reconcile(t, "m")
	g.Expect(h.sent).To(HaveLen(2))
	g.Expect(h.sent[1].msg.MessageID).To(Equal("<" + string(testUID) + ".2@customer-operator>"))
	g.Expect(server.MessagesTo("dana@example.com")).To(HaveLen(1), "delivered in round 2")
	m = h.get(t, "m")
	g.Expect(m.Status.Invitation.Round).To(Equal(int32(2)))
	g.Expect(apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.StalledCondition)).To(BeNil())
}

func TestAnnotationAtCreationIsRoundOne(t *testing.T) {
	g := NewWithT(t)
	m := invited("m")
	m.Annotations = map[string]string{v1alpha1.ResendInvitationAnnotation: strings.Repeat("x", 300)}
	h := newHarness(t, m, nil)

	h.reconcile(t, "m")
	h.reconcile(t, "m")

	g.Expect(h.sent).To(HaveLen(1))
	inv := h.get(t, "m").Status.Invitation
	g.Expect(inv.Round).To(Equal(int32(1)), "a value present from the start is no request for a new round")
	g.Expect(inv.ResendRequest).To(HavePrefix("sha256:"), "longer than status allows: recorded as its digest")
	g.Expect(len(inv.ResendRequest)).To(BeNumerically("<=", 256))
}

func TestBackoff(t *testing.T) {
	g := NewWithT(t)
	r := &CustomerMembershipReconciler{SendBackoff: 5 * time.Second, MaxSendBackoff: 5 * time.Minute}
	var got []time.Duration
	for attempts := int32(1); attempts <= 8; attempts++ {
		got = append(got, r.backoff(attempts))
	}
	g.Expect(got).To(Equal([]time.Duration{
		5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 5 * time.Minute, 5 * time.Minute,
	}))
	g.Expect(r.backoff(1 << 30)).To(Equal(5 * time.Minute))
}

// An invitation whose send hangs when the manager stops is abandoned after
// SendingGrace, without a failure on record (no backoff, no Warning): the next
// leader sends it at once.
func TestSendCutOffByTheStopIsNoFailure(t *testing.T) {
	g := NewWithT(t)
	oldSending, oldStopping := SendingGrace, StoppingGrace
	SendingGrace, StoppingGrace = 100*time.Millisecond, 2*time.Second
	t.Cleanup(func() { SendingGrace, StoppingGrace = oldSending, oldStopping })
	h := newHarness(t, invited("m"), ctxAwareStatus())
	ctx, stop := context.WithCancel(context.Background())
	h.r.Sender = mail.SenderFunc(func(sendCtx context.Context, msg mail.Message) error {
		stop()
		<-sendCtx.Done()
		return sendCtx.Err()
	})

	_, err := h.r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: "m"}})
	g.Expect(err).NotTo(HaveOccurred())
	m := h.get(t, "m")
	g.Expect(m.Status.Invitation.SentTime).To(BeNil())
	g.Expect(m.Status.Invitation.LastError).To(BeEmpty(), "no failure of the server's: no backoff for the next leader")
	g.Expect(h.r.Recorder.(*events.FakeRecorder).Events).NotTo(Receive(), "no Warning")
}
