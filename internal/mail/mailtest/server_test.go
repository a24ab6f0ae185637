package mailtest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	. "github.com/onsi/gomega"
)

// A multipart/mixed mail with a nested multipart/alternative, a quoted-printable
// text part and a base64 HTML part, as other mailers write them.
const nestedMIME = "From: a@example.com\r\n" +
	"To: b@example.com\r\n" +
	"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n" +
	"Message-ID: <nested.1@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=outer\r\n" +
	"\r\n" +
	"--outer\r\n" +
	"Content-Type: multipart/alternative; boundary=inner\r\n" +
	"\r\n" +
	"--inner\r\n" +
	"Content-Type: text/plain; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Gr=C3=BC=C3=9Fe, a long line that is soft-=\r\nwrapped\r\n" +
	"--inner\r\n" +
	"Content-Type: text/html; charset=UTF-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"PHA+R3LDvMOfZTwv\r\ncD4=\r\n" +
	"--inner--\r\n" +
	"--outer\r\n" +
	"Content-Type: application/octet-stream\r\n" +
	"\r\n" +
	"attachment\r\n" +
	"--outer--\r\n"

// send delivers body in clear (go-smtp's SendMail insists on STARTTLS).
func send(addr, body string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SendMail("a@example.com", []string{"b@example.com", "C@example.com"}, strings.NewReader(body)); err != nil {
		return err
	}
	return c.Quit()
}

func TestServerParsesMIME(t *testing.T) {
	g := NewWithT(t)
	srv, err := NewServer()
	g.Expect(err).NotTo(HaveOccurred())
	defer srv.Close()

	g.Expect(send(srv.Addr(), nestedMIME)).To(Succeed())
	msgs := srv.Messages()
	g.Expect(msgs).To(HaveLen(1))
	m := msgs[0]
	g.Expect(m.From).To(Equal("a@example.com"))
	g.Expect(m.To).To(Equal([]string{"b@example.com", "C@example.com"}))
	g.Expect(m.Subject).To(Equal("Grüße"))
	g.Expect(m.MessageID).To(Equal("<nested.1@example.com>"))
	g.Expect(m.Text).To(Equal("Grüße, a long line that is soft-wrapped"))
	g.Expect(m.HTML).To(Equal("<p>Grüße</p>"))
	g.Expect(string(m.Raw)).To(ContainSubstring("attachment"))
	g.Expect(m.TLS).To(BeFalse())
	g.Expect(srv.MessagesTo("c@EXAMPLE.com")).To(HaveLen(1))
	g.Expect(srv.MessagesTo("nobody@example.com")).To(BeEmpty())
}

func TestServerFailuresOutagesAndReset(t *testing.T) {
	g := NewWithT(t)
	srv, err := NewServer()
	g.Expect(err).NotTo(HaveOccurred())
	defer srv.Close()
	plain := "Subject: x\r\n\r\nbody\r\n"

	srv.FailNext(StageRcpt, 550, 2)
	for range 2 {
		var smtpErr *smtp.SMTPError
		g.Expect(errors.As(send(srv.Addr(), plain), &smtpErr)).To(BeTrue())
		g.Expect(smtpErr.Code).To(Equal(550))
	}
	g.Expect(send(srv.Addr(), plain)).To(Succeed(), "only the next two")

	srv.FailAlways(StageData, 451)
	g.Expect(send(srv.Addr(), plain)).To(MatchError(ContainSubstring("451")))
	g.Expect(send(srv.Addr(), plain)).To(MatchError(ContainSubstring("451")))
	srv.ClearFailures()

	addr := srv.Addr()
	g.Expect(srv.Stop()).To(Succeed())
	g.Expect(send(addr, plain)).NotTo(Succeed())
	g.Expect(srv.Start()).To(Succeed())
	g.Expect(srv.Addr()).To(Equal(addr), "same address after an outage")
	g.Expect(send(addr, plain)).To(Succeed())

	g.Expect(srv.Messages()).To(HaveLen(2))
	g.Expect(srv.Connections()).To(BeNumerically(">=", 6))
	srv.Reset()
	g.Expect(srv.Messages()).To(BeEmpty())
	g.Expect(srv.Connections()).To(BeZero())
}

func TestServerRequiresAuthWhenConfigured(t *testing.T) {
	g := NewWithT(t)
	srv, err := NewServer(WithAuth("u", "p"), WithInsecureAuth())
	g.Expect(err).NotTo(HaveOccurred())
	defer srv.Close()
	g.Expect(send(srv.Addr(), "Subject: x\r\n\r\nbody\r\n")).To(MatchError(ContainSubstring("530")))
	g.Expect(srv.Messages()).To(BeEmpty())
}

func TestWaitForMessages(t *testing.T) {
	g := NewWithT(t)
	srv, err := NewServer()
	g.Expect(err).NotTo(HaveOccurred())
	defer srv.Close()

	go func() { _ = send(srv.Addr(), "Subject: x\r\n\r\nbody\r\n") }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := srv.WaitForMessages(ctx, 1)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(msgs).To(HaveLen(1))

	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	_, err = srv.WaitForMessages(short, 2)
	g.Expect(err).To(MatchError(context.DeadlineExceeded))
}
