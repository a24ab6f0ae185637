package mailcatcher

import (
	"encoding/json"
	"io"
	"net/http"
	"net/smtp"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

const invitation = "From: customer-operator@localhost\r\n" +
	"To: ada@example.com\r\n" +
	"Subject: =?utf-8?q?You=E2=80=99re_invited_to_Acme?=\r\n" +
	"Message-ID: <round-1.membership-uid@customer-operator>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=b1\r\n" +
	"\r\n" +
	"--b1\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Accept: http://127.0.0.1:8082/invitations/tok3n.\r\n" +
	"--b1\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"<p><a href=3D\"http://127.0.0.1:8082/invitations/tok3n\">Accept</a></p>\r\n" +
	"--b1--\r\n"

func TestCatchesMailAndShowsItsLinks(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	c, err := Start(Options{SMTPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Dir: dir})
	g.Expect(err).NotTo(HaveOccurred())
	defer c.Close()

	g.Expect(smtp.SendMail(c.SMTPAddr(), nil, "customer-operator@localhost", []string{"ada@example.com"}, []byte(invitation))).To(Succeed())
	auth := smtp.PlainAuth("", "any", "thing", "127.0.0.1")
	g.Expect(smtp.SendMail(c.SMTPAddr(), auth, "a@localhost", []string{"b@example.com"}, []byte("Subject: plain\r\n\r\nhello\r\n"))).To(Succeed())

	base := "http://" + c.HTTPAddr()
	var msgs []Message
	g.Expect(json.Unmarshal([]byte(get(t, base+"/api/messages")), &msgs)).To(Succeed())
	g.Expect(msgs).To(HaveLen(2))
	g.Expect(msgs[0].Subject).To(Equal("You’re invited to Acme"))
	g.Expect(msgs[0].To).To(Equal([]string{"ada@example.com"}))
	g.Expect(msgs[0].MessageID).To(Equal("<round-1.membership-uid@customer-operator>"))
	g.Expect(msgs[0].HTML).To(ContainSubstring(`href="http://127.0.0.1:8082/invitations/tok3n"`))
	g.Expect(msgs[0].Links).To(Equal([]string{"http://127.0.0.1:8082/invitations/tok3n"}))

	g.Expect(get(t, base+"/")).To(And(ContainSubstring("You’re invited to Acme"), ContainSubstring(`href="/messages/1"`)))
	view := get(t, base+"/messages/1")
	g.Expect(view).To(ContainSubstring(`<a href="http://127.0.0.1:8082/invitations/tok3n" target="_blank" rel="noopener">http://127.0.0.1:8082/invitations/tok3n</a>`))
	g.Expect(get(t, base+"/messages/1/html")).To(ContainSubstring(`<a href="http://127.0.0.1:8082/invitations/tok3n">Accept</a>`))
	g.Expect(get(t, base+"/messages/2")).To(ContainSubstring("hello"))
	g.Expect(c.Close()).To(Succeed())

	// Kept across a restart: the operator does not send an invitation twice.
	again, err := Start(Options{SMTPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Dir: dir})
	g.Expect(err).NotTo(HaveOccurred())
	defer again.Close()
	g.Expect(again.Messages()).To(HaveLen(2))
	g.Expect(smtp.SendMail(again.SMTPAddr(), nil, "a@localhost", []string{"b@example.com"}, []byte("Subject: third\r\n\r\n3\r\n"))).To(Succeed())
	g.Expect(again.Messages()[2].ID).To(Equal(3))
}

func TestLinkify(t *testing.T) {
	g := NewWithT(t)
	g.Expect(linkify("Go to https://x.test/a?b=c, then stop.")).To(Equal([]segment{
		{Text: "Go to "}, {Text: "https://x.test/a?b=c", URL: "https://x.test/a?b=c"}, {Text: ", then stop."},
	}))
	g.Expect(linkify("no link")).To(Equal([]segment{{Text: "no link"}}))
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body)
}
