package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/partnerops/customer-operator/internal/mail/mailtest"
)

const testFrom = "Customer Operator <noreply@partner.example>"

func startServer(t testing.TB, opts ...mailtest.Option) *mailtest.Server {
	t.Helper()
	srv, err := mailtest.NewServer(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func newSender(t testing.TB, cfg Config) *SMTPSender {
	t.Helper()
	if cfg.From == "" {
		cfg.From = testFrom
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	s, err := NewSMTPSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func plainSender(t testing.TB, srv *mailtest.Server) *SMTPSender {
	return newSender(t, Config{Address: srv.Addr(), TLS: TLSNone})
}

func testMessage(i int) Message {
	return Message{
		Kind:      KindNotice,
		To:        fmt.Sprintf("user%d@example.com", i),
		Subject:   fmt.Sprintf("message %d", i),
		Text:      fmt.Sprintf("body %d", i),
		MessageID: fmt.Sprintf("<test.%d@customer-operator>", i),
	}
}

func TestSendDeliversInvitation(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := plainSender(t, srv)

	m, err := InvitationMail(invitationData())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(s.Send(context.Background(), m)).To(Succeed())

	got := srv.Messages()
	g.Expect(got).To(HaveLen(1))
	g.Expect(got[0].From).To(Equal("noreply@partner.example"))
	g.Expect(got[0].To).To(ConsistOf("alice@example.com"))
	g.Expect(got[0].TLS).To(BeFalse())
	g.Expect(got[0].MessageID).To(Equal(m.MessageID))
	g.Expect(got[0].Subject).To(Equal(m.Subject))
	g.Expect(got[0].Header.Get("From")).To(Equal(`"Customer Operator" <noreply@partner.example>`))
	g.Expect(got[0].Header.Get("Auto-Submitted")).To(Equal("auto-generated"))
	g.Expect(got[0].Header.Get("Date")).NotTo(BeEmpty())
	g.Expect(got[0].Text).To(Equal(m.Text))
	g.Expect(got[0].HTML).To(Equal(m.HTML))
}

func TestSendKeepsMessageIDAcrossResends(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := plainSender(t, srv)

	for range 2 { // a crash between send and status write makes the controller send again
		m, err := InvitationMail(invitationData())
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(s.Send(context.Background(), m)).To(Succeed())
	}
	got := srv.Messages()
	g.Expect(got).To(HaveLen(2))
	g.Expect(got[1].MessageID).To(Equal(got[0].MessageID))
	g.Expect(got[0].MessageID).To(Equal("<6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e5f.2@customer-operator>"))
}

func TestSendUTF8Subject(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := plainSender(t, srv)

	m := testMessage(1)
	m.Subject = "Einladung zu Müller & Söhne"
	m.Text = "Grüße\n"
	g.Expect(s.Send(context.Background(), m)).To(Succeed())
	g.Expect(srv.Messages()[0].Subject).To(Equal("Einladung zu Müller & Söhne"))
	g.Expect(srv.Messages()[0].Text).To(Equal("Grüße\n"))
}

func TestMandatoryTLSRefusesServerWithoutSTARTTLS(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := newSender(t, Config{Address: srv.Addr()}) // TLS defaults to mandatory

	err := s.Send(context.Background(), testMessage(1))
	g.Expect(err).To(MatchError(ContainSubstring("STARTTLS")))
	g.Expect(IsPermanent(err)).To(BeFalse(), "a server problem, not the message's: retry")
	g.Expect(srv.Messages()).To(BeEmpty(), "nothing sent in clear")
}

func TestMandatoryTLSWithSTARTTLSAndAuth(t *testing.T) {
	g := NewWithT(t)
	serverTLS, roots, err := mailtest.SelfSignedTLS()
	g.Expect(err).NotTo(HaveOccurred())
	srv := startServer(t, mailtest.WithTLS(serverTLS), mailtest.WithAuth("operator", "s3cret"))

	s := newSender(t, Config{
		Address:   srv.Addr(),
		TLS:       TLSMandatory,
		TLSConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		Username:  "operator",
		Password:  "s3cret",
	})
	g.Expect(s.Send(context.Background(), testMessage(1))).To(Succeed())
	got := srv.Messages()
	g.Expect(got).To(HaveLen(1))
	g.Expect(got[0].TLS).To(BeTrue())
	g.Expect(got[0].AuthUser).To(Equal("operator"))
}

func TestMandatoryTLSRefusesUntrustedCertificate(t *testing.T) {
	g := NewWithT(t)
	serverTLS, _, err := mailtest.SelfSignedTLS()
	g.Expect(err).NotTo(HaveOccurred())
	srv := startServer(t, mailtest.WithTLS(serverTLS))
	s := newSender(t, Config{Address: srv.Addr(), TLS: TLSMandatory})

	err = s.Send(context.Background(), testMessage(1))
	g.Expect(err).To(MatchError(ContainSubstring("certificate")))
	g.Expect(srv.Messages()).To(BeEmpty())
}

func TestWrongCredentials(t *testing.T) {
	g := NewWithT(t)
	serverTLS, roots, err := mailtest.SelfSignedTLS()
	g.Expect(err).NotTo(HaveOccurred())
	srv := startServer(t, mailtest.WithTLS(serverTLS), mailtest.WithAuth("operator", "s3cret"))
	s := newSender(t, Config{
		Address: srv.Addr(), TLSConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		Username: "operator", Password: "wrong",
	})

	err = s.Send(context.Background(), testMessage(1))
	g.Expect(err).To(MatchError(ContainSubstring("AUTH")))
	g.Expect(err.Error()).NotTo(ContainSubstring("wrong"), "the password never shows in errors")
	g.Expect(IsPermanent(err)).To(BeFalse(), "our configuration, not the message: retry once it is fixed")
}

func TestOpportunisticTLS(t *testing.T) {
	g := NewWithT(t)
	plain := startServer(t)
	g.Expect(newSender(t, Config{Address: plain.Addr(), TLS: TLSOpportunistic}).Send(context.Background(), testMessage(1))).To(Succeed())
	g.Expect(plain.Messages()[0].TLS).To(BeFalse())

	serverTLS, roots, err := mailtest.SelfSignedTLS()
	g.Expect(err).NotTo(HaveOccurred())
	withTLS := startServer(t, mailtest.WithTLS(serverTLS))
	s := newSender(t, Config{Address: withTLS.Addr(), TLS: TLSOpportunistic, TLSConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}})
	g.Expect(s.Send(context.Background(), testMessage(1))).To(Succeed())
	g.Expect(withTLS.Messages()[0].TLS).To(BeTrue(), "STARTTLS used when offered")
}

func TestOutageIsTransientAndRecovers(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := plainSender(t, srv)
	ctx := context.Background()

	g.Expect(s.Send(ctx, testMessage(1))).To(Succeed())
	g.Expect(srv.Stop()).To(Succeed())

	err := s.Send(ctx, testMessage(2))
	g.Expect(err).To(HaveOccurred())
	g.Expect(IsPermanent(err)).To(BeFalse())
	var mailErr *Error
	g.Expect(errors.As(err, &mailErr)).To(BeTrue())
	g.Expect(err.Error()).To(ContainSubstring(srv.Addr()))

	g.Expect(srv.Start()).To(Succeed())
	g.Expect(s.Send(ctx, testMessage(2))).To(Succeed())
	g.Expect(srv.Messages()).To(HaveLen(2))
}

// TestStalePooledConnectionIsReplaced: the server dropped an idle pooled connection
// (restart, idle timeout). The next send notices before sending and reconnects,
// without bothering the caller.
func TestStalePooledConnectionIsReplaced(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := newSender(t, Config{Address: srv.Addr(), TLS: TLSNone, MaxConnections: 1})
	ctx := context.Background()

	g.Expect(s.Send(ctx, testMessage(1))).To(Succeed())
	g.Expect(srv.Stop()).To(Succeed())
	g.Expect(srv.Start()).To(Succeed())
	g.Expect(s.Send(ctx, testMessage(2))).To(Succeed())
	g.Expect(srv.Messages()).To(HaveLen(2))
	g.Expect(srv.Connections()).To(Equal(2))
}

func TestReplyCodesAreClassified(t *testing.T) {
	tests := []struct {
		stage         mailtest.Stage
		code          int
		wantPermanent bool
	}{
		{stage: mailtest.StageMail, code: 421, wantPermanent: false},
		{stage: mailtest.StageMail, code: 451, wantPermanent: false},
		// A 5xx to MAIL FROM refuses the sender (our --smtp-from, relaying, the
		// account), not this message: retried until the configuration is fixed.
		{stage: mailtest.StageMail, code: 550, wantPermanent: false},
		{stage: mailtest.StageMail, code: 553, wantPermanent: false},
		{stage: mailtest.StageMail, code: 554, wantPermanent: false},
		{stage: mailtest.StageRcpt, code: 450, wantPermanent: false},
		{stage: mailtest.StageRcpt, code: 550, wantPermanent: true},
		{stage: mailtest.StageRcpt, code: 553, wantPermanent: true},
		// "Authentication required" is never the recipient's fault, whenever it comes.
		{stage: mailtest.StageRcpt, code: 530, wantPermanent: false},
		{stage: mailtest.StageData, code: 452, wantPermanent: false},
		{stage: mailtest.StageData, code: 554, wantPermanent: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %d", tt.stage, tt.code), func(t *testing.T) {
			g := NewWithT(t)
			srv := startServer(t)
			s := plainSender(t, srv)
			srv.FailNext(tt.stage, tt.code, 1)

			err := s.Send(context.Background(), testMessage(1))
			g.Expect(err).To(HaveOccurred())
			g.Expect(IsPermanent(err)).To(Equal(tt.wantPermanent))
			var mailErr *Error
			g.Expect(errors.As(err, &mailErr)).To(BeTrue())
			g.Expect(mailErr.Code).To(Equal(tt.code))
			g.Expect(err.Error()).To(ContainSubstring("user1@example.com"))

			g.Expect(s.Send(context.Background(), testMessage(1))).To(Succeed(), "the next attempt goes through")
			g.Expect(srv.Messages()).To(HaveLen(1))
		})
	}
}

// TestSenderRefusalIsTransient: a relay that answers MAIL FROM with a 5xx (the
// From address is not allowed, relaying denied, a quota) refuses every mail until
// someone fixes the configuration or the account, so the failure is transient:
// invitations retry with backoff and go out once it is fixed, instead of each
// stalling until someone resends it by hand.
func TestSenderRefusalIsTransient(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := plainSender(t, srv)
	srv.FailAlways(mailtest.StageMail, 553)

	for i := range 2 {
		err := s.Send(context.Background(), testMessage(i))
		g.Expect(err).To(MatchError(ContainSubstring("553")))
		g.Expect(IsPermanent(err)).To(BeFalse(), "the sender was refused, not the recipient")
		var mailErr *Error
		g.Expect(errors.As(err, &mailErr)).To(BeTrue())
		g.Expect(mailErr.Code).To(Equal(553))
	}
	g.Expect(srv.Messages()).To(BeEmpty())

	srv.ClearFailures() // the configuration was fixed
	g.Expect(s.Send(context.Background(), testMessage(1))).To(Succeed())
	g.Expect(srv.Messages()).To(HaveLen(1))
}

// TestAuthRequiredIsTransient: a relay that wants AUTH while the operator has no
// credentials answers MAIL FROM with 530: a configuration problem, retried.
func TestAuthRequiredIsTransient(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t, mailtest.WithAuth("operator", "s3cret"), mailtest.WithInsecureAuth())
	s := plainSender(t, srv) // no --smtp-username

	err := s.Send(context.Background(), testMessage(1))
	g.Expect(err).To(MatchError(ContainSubstring("530")))
	g.Expect(IsPermanent(err)).To(BeFalse(), "our configuration, not the message: retry once it is fixed")
	g.Expect(srv.Messages()).To(BeEmpty())
}

// TestRecipientRefusalIsPermanent: a 5xx to RCPT TO (no such mailbox) refuses
// this recipient; sending the same mail again cannot help.
func TestRecipientRefusalIsPermanent(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := plainSender(t, srv)
	srv.FailAlways(mailtest.StageRcpt, 550)

	err := s.Send(context.Background(), testMessage(1))
	g.Expect(err).To(MatchError(ContainSubstring("550")))
	g.Expect(IsPermanent(err)).To(BeTrue())
	var mailErr *Error
	g.Expect(errors.As(err, &mailErr)).To(BeTrue())
	g.Expect(mailErr.Code).To(Equal(550))
	g.Expect(IsRecipientRefusal(err)).To(BeTrue(), "other recipients may still be tried")
	g.Expect(srv.Messages()).To(BeEmpty())
}

// TestRecipientStageReplies: at RCPT TO, Postfix (smtpd_delay_reject) and Exchange
// also refuse relaying and unauthorized senders, with a 5.7.x status: the
// configuration's, retried, and every mail fails alike. A 4xx there (greylisting, a
// full mailbox) is this recipient's, retried.
func TestRecipientStageReplies(t *testing.T) {
	for name, tc := range map[string]struct {
		code                 int
		enhanced             [3]int
		permanent, recipient bool
	}{
		"554 5.7.1 relay access denied": {554, [3]int{5, 7, 1}, false, true},
		"550 5.7.1 sender not allowed":  {550, [3]int{5, 7, 1}, false, true},
		"550 5.1.1 no such mailbox":     {550, [3]int{5, 1, 1}, true, true},
		"451 4.7.1 greylisted":          {451, [3]int{4, 7, 1}, false, true},
		"452 4.2.2 mailbox full":        {452, [3]int{4, 2, 2}, false, true},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			srv := startServer(t)
			s := plainSender(t, srv)
			srv.FailNextWith(mailtest.StageRcpt, tc.code, tc.enhanced, 1)
			err := s.Send(context.Background(), testMessage(1))
			g.Expect(err).To(MatchError(ContainSubstring(fmt.Sprint(tc.code))))
			g.Expect(IsPermanent(err)).To(Equal(tc.permanent), "permanent")
			g.Expect(IsRecipientRefusal(err)).To(Equal(tc.recipient), "recipient")
		})
	}
}

func TestInvalidMessageIsPermanentAndSendsNothing(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := plainSender(t, srv)

	tests := map[string]Message{
		"bad recipient":   {To: "not an address", Text: "x", MessageID: "<a@b>"},
		"no body":         {To: "a@example.com", MessageID: "<a@b>"},
		"bad Message-ID":  {To: "a@example.com", Text: "x", MessageID: "<a b>"},
		"reserved header": {To: "a@example.com", Text: "x", MessageID: "<a@b>", Headers: map[string]string{"bcc": "x@example.com"}},
		"bad header name": {To: "a@example.com", Text: "x", MessageID: "<a@b>", Headers: map[string]string{"X-A: b\r\nBcc": "x@example.com"}},
	}
	for name, m := range tests {
		err := s.Send(context.Background(), m)
		g.Expect(IsPermanent(err)).To(BeTrue(), name)
	}
	g.Expect(srv.Connections()).To(BeZero())
}

func TestSendHonoursContext(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := plainSender(t, srv)
	srv.SetDelay(time.Minute) // a hung server

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Send(ctx, testMessage(1))
	g.Expect(time.Since(start)).To(BeNumerically("<", 3*time.Second))
	g.Expect(err).To(MatchError(context.DeadlineExceeded))
	g.Expect(IsPermanent(err)).To(BeFalse())

	srv.SetDelay(0)
	g.Expect(s.Send(context.Background(), testMessage(2))).To(Succeed(), "the aborted connection was replaced")
}

func TestSendTimesOut(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := newSender(t, Config{Address: srv.Addr(), TLS: TLSNone, Timeout: 200 * time.Millisecond})
	srv.SetDelay(time.Minute)

	start := time.Now()
	err := s.Send(context.Background(), testMessage(1))
	g.Expect(time.Since(start)).To(BeNumerically("<", 3*time.Second))
	g.Expect(err).To(MatchError(ContainSubstring("timeout")))
	g.Expect(IsPermanent(err)).To(BeFalse())
}

func TestConnectionsAreReused(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := newSender(t, Config{Address: srv.Addr(), TLS: TLSNone, MaxConnections: 2})

	for i := range 50 {
		g.Expect(s.Send(context.Background(), testMessage(i))).To(Succeed())
	}
	g.Expect(srv.Messages()).To(HaveLen(50))
	g.Expect(srv.Connections()).To(BeNumerically("<=", 2))
}

func TestConcurrentSendsShareThePool(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := newSender(t, Config{Address: srv.Addr(), TLS: TLSNone, MaxConnections: 4})

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() { errs <- s.Send(context.Background(), testMessage(i)) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(srv.Messages()).To(HaveLen(200))
	g.Expect(srv.Connections()).To(BeNumerically("<=", 4))
}

func TestClose(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := plainSender(t, srv)
	g.Expect(s.Send(context.Background(), testMessage(1))).To(Succeed())

	g.Expect(s.Close()).To(Succeed())
	g.Expect(s.Close()).To(Succeed(), "idempotent")
	err := s.Send(context.Background(), testMessage(2))
	g.Expect(err).To(MatchError(errClosed))
}

func TestMetrics(t *testing.T) {
	g := NewWithT(t)
	srv := startServer(t)
	s := WithMetrics(plainSender(t, srv))
	sentBefore := counter(t, mailsSent, "invitation")
	refusedBefore, errorsBefore := counter(t, mailsFailed, "invitation", reasonRefused), counter(t, mailsFailed, "invitation", reasonError)

	m, err := InvitationMail(invitationData())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(s.Send(context.Background(), m)).To(Succeed())
	srv.FailNext(mailtest.StageRcpt, 550, 1)
	g.Expect(s.Send(context.Background(), m)).NotTo(Succeed())

	g.Expect(counter(t, mailsSent, "invitation")).To(Equal(sentBefore + 1))
	g.Expect(counter(t, mailsFailed, "invitation", reasonRefused)).To(Equal(refusedBefore+1),
		"a 550 at RCPT TO (no such mailbox) is about this mail, not the server")
	g.Expect(counter(t, mailsFailed, "invitation", reasonError)).To(Equal(errorsBefore))

	srv.FailNext(mailtest.StageRcpt, 451, 1)
	g.Expect(s.Send(context.Background(), m)).NotTo(Succeed())
	g.Expect(counter(t, mailsFailed, "invitation", reasonError)).To(Equal(errorsBefore+1), "a 4xx is retried: an error")
	g.Expect(counter(t, mailsFailed, "invitation", reasonRefused)).To(Equal(refusedBefore + 1))
}

// TestMetricsCountEverySender: whatever the sender, its failures count, so the
// alert on failing mail fires without an SMTP server configured too.
func TestMetricsCountEverySender(t *testing.T) {
	g := NewWithT(t)
	sentBefore, failedBefore := counter(t, mailsSent, "notice"), counter(t, mailsFailed, "notice", reasonError)

	unconfigured := WithMetrics(SenderFunc(func(context.Context, Message) error {
		return errors.New("no SMTP server configured")
	}))
	g.Expect(unconfigured.Send(context.Background(), testMessage(1))).NotTo(Succeed())
	g.Expect(unconfigured.Send(context.Background(), testMessage(2))).NotTo(Succeed())
	g.Expect(counter(t, mailsFailed, "notice", reasonError)).To(Equal(failedBefore + 2))

	ok := WithMetrics(SenderFunc(func(context.Context, Message) error { return nil }))
	g.Expect(ok.Send(context.Background(), testMessage(3))).To(Succeed())
	g.Expect(counter(t, mailsSent, "notice")).To(Equal(sentBefore + 1))
	g.Expect(counter(t, mailsFailed, "notice", reasonError)).To(Equal(failedBefore + 2))
}

func counter(t *testing.T, vec *prometheus.CounterVec, labels ...string) float64 {
	t.Helper()
	var m dto.Metric
	if err := vec.WithLabelValues(labels...).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestMetricsAreOnTheManagersRegistry(t *testing.T) {
	g := NewWithT(t)
	families, err := metrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	series := map[string][]string{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				series[f.GetName()] = append(series[f.GetName()], l.GetName()+"="+l.GetValue())
			}
		}
	}
	for _, name := range []string{"customer_operator_mails_sent_total", "customer_operator_mails_failed_total"} {
		g.Expect(series).To(HaveKeyWithValue(name, ContainElements("kind=invitation", "kind=notice")))
	}
	g.Expect(series).To(HaveKeyWithValue("customer_operator_mails_failed_total", ContainElements("reason=refused", "reason=error")),
		"both reasons exist from the start, for the alert's increase()")
}

func TestNewSMTPSenderValidates(t *testing.T) {
	tests := map[string]Config{
		"no port":             {Address: "localhost", From: testFrom},
		"bad port":            {Address: "localhost:99999", From: testFrom},
		"bad TLS policy":      {Address: "localhost:25", From: testFrom, TLS: "sometimes"},
		"bad from":            {Address: "localhost:25", From: "not an address"},
		"user without passwd": {Address: "localhost:25", From: testFrom, Username: "u"},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := NewSMTPSender(cfg)
			NewWithT(t).Expect(err).To(HaveOccurred())
		})
	}
}

func TestParseTLSPolicy(t *testing.T) {
	g := NewWithT(t)
	for in, want := range map[string]TLSPolicy{"": TLSMandatory, "mandatory": TLSMandatory, "opportunistic": TLSOpportunistic, "none": TLSNone} {
		got, err := ParseTLSPolicy(in)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(got).To(Equal(want))
	}
	_, err := ParseTLSPolicy("starttls")
	g.Expect(err).To(HaveOccurred())
}

func TestConfigStringHidesPassword(t *testing.T) {
	g := NewWithT(t)
	cfg := Config{Address: "smtp.example.com:587", Username: "op", Password: "s3cret"}
	g.Expect(fmt.Sprint(cfg)).NotTo(ContainSubstring("s3cret"))
	g.Expect(fmt.Sprintf("%v", cfg)).To(ContainSubstring("smtp.example.com:587"))
}

// BenchmarkSend measures throughput to a loopback server over pooled connections:
// one caller at a time (a single reconcile worker) and several in parallel.
func BenchmarkSend(b *testing.B) {
	m, err := InvitationMail(invitationData())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("sequential", func(b *testing.B) {
		srv := startServer(b)
		s := newSender(b, Config{Address: srv.Addr(), TLS: TLSNone, MaxConnections: 1})
		for b.Loop() {
			if err := s.Send(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mails/s")
	})
	b.Run("parallel", func(b *testing.B) {
		srv := startServer(b)
		s := newSender(b, Config{Address: srv.Addr(), TLS: TLSNone, MaxConnections: 4})
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Send(ctx, m); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mails/s")
	})
}
