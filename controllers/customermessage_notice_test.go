package controllers

import (
	"context"
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/mail"
	"github.com/partnerops/customer-operator/internal/mail/mailtest"
	"github.com/partnerops/customer-operator/internal/status"
)

// Unit tests of the notice phase against a fake API server whose status writes
// fail on a cancelled context, as the real client's do: what a stopping manager
// and a large customer do to it. The envtest suite covers the rest.

type noticeHarness struct {
	r     *CustomerMessageReconciler
	c     client.Client
	scope *messageScope
	sent  []string
	// onSend runs before each mail is delivered, with the mail's address.
	onSend func(to string)
}

func newNoticeHarness(t *testing.T, recipients int) *noticeHarness {
	t.Helper()
	msg := &v1alpha1.CustomerMessage{
		ObjectMeta: metav1.ObjectMeta{Name: "outage", UID: types.UID("6c1e0d3a-8f2b-4c5d-9e7f-0a1b2c3d4e5f"), Generation: 1},
		Spec: v1alpha1.CustomerMessageSpec{
			Customer: "acme", Title: "Outage", Body: "Tonight.", ReadPolicy: v1alpha1.AllMustRead, Notify: v1alpha1.NotifyEmail,
		},
	}
	customer := &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: "acme"},
		Spec:       v1alpha1.CustomerSpec{Identifier: "acme", DisplayName: "Acme"},
	}
	c := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithObjects(msg, customer).
		WithStatusSubresource(&v1alpha1.CustomerMessage{}).
		WithInterceptorFuncs(*ctxAwareStatus()).Build()
	h := &noticeHarness{c: c}
	h.r = &CustomerMessageReconciler{
		Client:   c,
		Recorder: events.NewFakeRecorder(100),
		Clock:    clocktesting.NewFakeClock(now),
		Sender: mail.SenderFunc(func(ctx context.Context, m mail.Message) error {
			if h.onSend != nil {
				h.onSend(m.To)
			}
			if err := ctx.Err(); err != nil {
				return err // what the SMTP client does with a cancelled context
			}
			h.sent = append(h.sent, m.To)
			return nil
		}),
	}
	h.scope = &messageScope{customer: customer}
	for i := range recipients {
		h.scope.recipients = append(h.scope.recipients, &v1alpha1.CustomerMembership{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("acme-%03d", i), UID: types.UID(fmt.Sprintf("uid-%03d", i))},
			Spec:       v1alpha1.CustomerMembershipSpec{Customer: "acme", Email: fmt.Sprintf("user%03d@example.com", i)},
		})
	}
	return h
}

// attempt runs the notice phase once on the message as the server has it now.
func (h *noticeHarness) attempt(t *testing.T, ctx context.Context) error {
	t.Helper()
	msg := &v1alpha1.CustomerMessage{}
	NewWithT(t).Expect(h.c.Get(context.Background(), client.ObjectKey{Name: "outage"}, msg)).To(Succeed())
	h.scope.message = msg
	_, err := h.r.reconcileNotice(ctx, h.scope)
	return err
}

func (h *noticeHarness) recorded(t *testing.T) []string {
	t.Helper()
	msg := &v1alpha1.CustomerMessage{}
	NewWithT(t).Expect(h.c.Get(context.Background(), client.ObjectKey{Name: "outage"}, msg)).To(Succeed())
	if msg.Status.Notice == nil {
		return nil
	}
	return msg.Status.Notice.Sent
}

// On SIGTERM controller-runtime cancels the reconcile's context at once and waits
// for the reconcile: the mail being sent finishes, no other starts, and what went
// out is recorded, so the next leader sends only the rest.
func TestStoppingNoticeRecordsWhatWentOut(t *testing.T) {
	g := NewWithT(t)
	h := newNoticeHarness(t, 5)
	ctx, stop := context.WithCancel(context.Background())
	h.onSend = func(to string) {
		if to == "user001@example.com" {
			stop() // SIGTERM while the second mail is out
		}
	}

	g.Expect(h.attempt(t, ctx)).To(Succeed())
	g.Expect(h.sent).To(Equal([]string{"user000@example.com", "user001@example.com"}), "the mail out finishes, no new one starts")
	g.Expect(h.recorded(t)).To(Equal(h.sent), "what went out is on record")

	h.onSend = nil
	g.Expect(h.attempt(t, context.Background())).To(Succeed())
	g.Expect(h.sent).To(HaveLen(5), "the next leader sends the rest, and nothing twice")
	g.Expect(h.recorded(t)).To(ConsistOf(h.sent))
}

// One attempt sends at most noticeBatch mails before recording them, which bounds
// what a crash between send and record sends twice.
func TestNoticeGoesOutInBatches(t *testing.T) {
	g := NewWithT(t)
	h := newNoticeHarness(t, noticeBatch+7)

	g.Expect(h.attempt(t, context.Background())).To(Succeed())
	g.Expect(h.sent).To(HaveLen(noticeBatch))
	g.Expect(h.recorded(t)).To(HaveLen(noticeBatch))

	g.Expect(h.attempt(t, context.Background())).To(Succeed())
	g.Expect(h.sent).To(HaveLen(noticeBatch + 7))
	g.Expect(h.recorded(t)).To(ConsistOf(h.sent), "each address once")

	g.Expect(h.attempt(t, context.Background())).To(Succeed())
	g.Expect(h.sent).To(HaveLen(noticeBatch+7), "nothing left to send")
}

// status.notice.sent holds 1000 addresses: the recipients after them get no mail,
// and Notified says so instead of claiming that everyone was sent it.
func TestNoticeLimitIsReported(t *testing.T) {
	g := NewWithT(t)
	h := newNoticeHarness(t, maxNoticeSent+3)
	for range maxNoticeSent/noticeBatch + 1 {
		g.Expect(h.attempt(t, context.Background())).To(Succeed())
	}
	g.Expect(h.sent).To(HaveLen(maxNoticeSent))

	h.scope.message = &v1alpha1.CustomerMessage{}
	g.Expect(h.c.Get(context.Background(), client.ObjectKey{Name: "outage"}, h.scope.message)).To(Succeed())
	h.r.setNotified(h.scope)
	notified := apimeta.FindStatusCondition(h.scope.message.Status.Conditions, v1alpha1.NotifiedCondition)
	g.Expect(notified).NotTo(BeNil())
	g.Expect(notified.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(notified.Reason).To(Equal(v1alpha1.NoticeLimitReachedReason))
	g.Expect(notified.Message).To(ContainSubstring("sent to 1000 recipient(s), the most status.notice.sent can hold; 3 other recipient(s) get no e-mail"))
}

// A mail server's permanent refusal of one address (a 5xx to RCPT TO) is recorded
// and not tried again: retried every backoff it would only fail again, keep the
// message Reconciling and the failed-mail alert firing. The others still go.
func TestRefusedNoticeIsNotRetried(t *testing.T) {
	g := NewWithT(t)
	h := newNoticeHarness(t, 3)
	server := newMailServer(t)
	h.smtpTo(t, func(string) *mailtest.Server { return server })
	server.FailNext(mailtest.StageRcpt, 550, 1) // "no such mailbox", for the first address

	g.Expect(h.attempt(t, context.Background())).To(Succeed())
	g.Expect(h.sent).To(Equal([]string{"user001@example.com", "user002@example.com"}), "the others still go")
	msg := &v1alpha1.CustomerMessage{}
	g.Expect(h.c.Get(context.Background(), client.ObjectKey{Name: "outage"}, msg)).To(Succeed())
	g.Expect(msg.Status.Notice.Refused).To(Equal([]string{"user000@example.com"}))
	g.Expect(msg.Status.Notice.LastError).To(BeEmpty(), "nothing to retry")
	g.Expect(msg.Status.Notice.Attempts).To(BeZero())
	recorder := h.r.Recorder.(*events.FakeRecorder)
	g.Expect(recorder.Events).To(Receive(ContainSubstring("Normal NoticeSent")))
	g.Expect(recorder.Events).To(Receive(ContainSubstring("Warning NoticeRefused the mail server refused the e-mail notice for good for 1 recipient(s), who are not tried again: user000@example.com")))

	g.Expect(h.attempt(t, context.Background())).To(Succeed())
	g.Expect(server.Messages()).To(HaveLen(2), "the refused address is not tried again")

	h.scope.message = msg
	h.r.setNotified(h.scope)
	notified := apimeta.FindStatusCondition(msg.Status.Conditions, v1alpha1.NotifiedCondition)
	g.Expect(notified.Reason).To(Equal(v1alpha1.NoticeRefusedReason))
	g.Expect(notified.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(notified.Message).To(ContainSubstring("sent to 2 recipient(s); the mail server refused it for good for 1 (status.notice.refused)"))
	g.Expect(status.IsTrue(msg, v1alpha1.ReconcilingCondition)).To(BeFalse(), "nothing left in progress")
}

// smtpTo delivers through a real SMTP server (so that the mail package classifies
// its replies), recording the addresses it accepted in h.sent.
func (h *noticeHarness) smtpTo(t *testing.T, servers func(to string) *mailtest.Server) {
	t.Helper()
	senders := map[*mailtest.Server]mail.Sender{}
	h.r.Sender = mail.SenderFunc(func(ctx context.Context, m mail.Message) error {
		server := servers(m.To)
		sender, ok := senders[server]
		if !ok {
			smtp, err := mail.NewSMTPSender(mail.Config{Address: server.Addr(), From: "operator@example.com", TLS: mail.TLSNone})
			if err != nil {
				return err
			}
			t.Cleanup(func() { _ = smtp.Close() })
			sender, senders[server] = smtp, smtp
		}
		if err := sender.Send(ctx, m); err != nil {
			return err
		}
		h.sent = append(h.sent, m.To)
		return nil
	})
}

func newMailServer(t *testing.T) *mailtest.Server {
	t.Helper()
	server, err := mailtest.NewServer()
	NewWithT(t).Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = server.Close() })
	return server
}

// A permanent refusal of the message itself (at the end of DATA: the sender, the
// content) says nothing about the address: it is a failure, retried after the
// backoff, and nobody is written off as refused.
func TestNoticeRefusedAsAMessageIsRetried(t *testing.T) {
	g := NewWithT(t)
	h := newNoticeHarness(t, 3)
	server := newMailServer(t)
	h.smtpTo(t, func(string) *mailtest.Server { return server })
	server.FailNext(mailtest.StageData, 554, 1) // "message rejected"

	g.Expect(h.attempt(t, context.Background())).To(Succeed())
	msg := &v1alpha1.CustomerMessage{}
	g.Expect(h.c.Get(context.Background(), client.ObjectKey{Name: "outage"}, msg)).To(Succeed())
	g.Expect(msg.Status.Notice.Refused).To(BeEmpty())
	g.Expect(msg.Status.Notice.LastError).To(ContainSubstring("user000@example.com"))
	g.Expect(h.sent).To(BeEmpty(), "a refusal of the message stops the attempt: the others would fare alike")

	h.r.Clock.(*clocktesting.FakeClock).Step(time.Minute)
	g.Expect(h.attempt(t, context.Background())).To(Succeed())
	g.Expect(h.sent).To(ConsistOf("user000@example.com", "user001@example.com", "user002@example.com"))
}

// Addresses that keep failing (a full mailbox, greylisting: 4xx at RCPT TO) do not
// hold back the rest of a large message's recipients: each attempt starts further on.
func TestFailingAddressesDoNotStarveTheRest(t *testing.T) {
	g := NewWithT(t)
	h := newNoticeHarness(t, noticeBatch+10)
	good, full := newMailServer(t), newMailServer(t)
	full.FailAlways(mailtest.StageRcpt, 452) // "mailbox full", every time
	h.smtpTo(t, func(to string) *mailtest.Server {
		if to < fmt.Sprintf("user%03d@example.com", noticeBatch) {
			return full // the first noticeBatch addresses, in the order they are taken
		}
		return good
	})

	g.Expect(h.attempt(t, context.Background())).To(Succeed())
	g.Expect(h.sent).To(BeEmpty(), "the first batch is the failing addresses")
	h.r.Clock.(*clocktesting.FakeClock).Step(time.Minute)
	g.Expect(h.attempt(t, context.Background())).To(Succeed())
	g.Expect(h.sent).To(HaveLen(10), "the next attempt reaches the others")
	g.Expect(h.sent).To(ContainElement(fmt.Sprintf("user%03d@example.com", noticeBatch+9)))
}

// shortGraces makes the stopping graces short for one test.
func shortGraces(t *testing.T, sending, stopping time.Duration) {
	t.Helper()
	oldSending, oldStopping := SendingGrace, StoppingGrace
	SendingGrace, StoppingGrace = sending, stopping
	t.Cleanup(func() { SendingGrace, StoppingGrace = oldSending, oldStopping })
}

// A send still hanging when the manager stops is abandoned after SendingGrace, and
// the mails that went out before it are still recorded within StoppingGrace; the
// abandoned one is no failure of the address (no backoff, no error), just not sent.
func TestSendCutOffByTheStopKeepsTheRecord(t *testing.T) {
	g := NewWithT(t)
	shortGraces(t, 100*time.Millisecond, 2*time.Second)
	h := newNoticeHarness(t, 3)
	ctx, stop := context.WithCancel(context.Background())
	h.r.Sender = mail.SenderFunc(func(sendCtx context.Context, m mail.Message) error {
		if m.To == "user001@example.com" {
			stop()           // the manager stops while this server hangs
			<-sendCtx.Done() // until the send is given up
			return sendCtx.Err()
		}
		h.sent = append(h.sent, m.To)
		return nil
	})

	g.Expect(h.attempt(t, ctx)).To(Succeed())
	g.Expect(h.sent).To(Equal([]string{"user000@example.com"}))
	msg := &v1alpha1.CustomerMessage{}
	g.Expect(h.c.Get(context.Background(), client.ObjectKey{Name: "outage"}, msg)).To(Succeed())
	g.Expect(msg.Status.Notice.Sent).To(Equal([]string{"user000@example.com"}), "recorded, though the send after it hung")
	g.Expect(msg.Status.Notice.LastError).To(BeEmpty(), "cut off by the stop: no failure, no backoff")
}
