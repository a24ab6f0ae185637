package operator

import (
	"context"
	"errors"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/partnerops/customer-operator/internal/mail"
	"github.com/partnerops/customer-operator/internal/mail/mailtest"
)

// stoppingManager stands in for the manager: Start returns once ctx is done and
// onStop has run, as controller-runtime's returns once the reconciles in flight at
// the stop have ended.
type stoppingManager struct {
	ctrl.Manager
	onStop func()
	err    error
}

func (m stoppingManager) Start(ctx context.Context) error {
	<-ctx.Done()
	m.onStop()
	return m.err
}

// The SMTP pool is closed after the manager has stopped, not before its
// controllers: a reconcile that is still sending while the manager stops must
// find the pool open (a runnable closing it would have stopped first, and the
// send would fail with "SMTP sender is closed" and be recorded as a failure).
func TestSMTPPoolClosesAfterTheManagerStops(t *testing.T) {
	g := NewWithT(t)
	server, err := mailtest.NewServer()
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = server.Close() })
	sender, err := mail.NewSMTPSender(mail.Config{Address: server.Addr(), From: "operator@example.com", TLS: mail.TLSNone})
	g.Expect(err).NotTo(HaveOccurred())
	message := func(to string) mail.Message {
		return mail.Message{To: to, Subject: "Invitation", Text: "Hello", MessageID: mail.InvitationMessageID("6c1e0d3a-8f2b-4c5d-9e7f-"+to[:3], 1)}
	}

	var inFlight error
	stopped := errors.New("the manager's own error passes through")
	m := closeAfterStop{
		Manager: stoppingManager{err: stopped, onStop: func() {
			// A reconcile that reaches its send a moment into the shutdown.
			time.Sleep(200 * time.Millisecond)
			inFlight = sender.Send(context.Background(), message("late@example.com"))
		}},
		closer: sender,
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	stop()
	g.Eventually(done, 5*time.Second).Should(Receive(MatchError(stopped)))

	g.Expect(inFlight).NotTo(HaveOccurred(), "the reconcile still running at the stop could send")
	g.Expect(server.MessagesTo("late@example.com")).To(HaveLen(1))
	g.Expect(sender.Send(context.Background(), message("after@example.com"))).To(MatchError(ContainSubstring("closed")),
		"closed once the manager has stopped")
}
