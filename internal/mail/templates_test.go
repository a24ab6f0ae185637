package mail

import (
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

var expiry = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func invitationData() InvitationData {
	return InvitationData{
		To:                  "alice@example.com",
		MessageID:           InvitationMessageID("6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e5f", 2),
		CustomerDisplayName: "ACME Rockets & Co",
		Role:                "Editor",
		Link:                "https://portal.example.com/invitations/AQAAAAKtoken",
		ExpiryTime:          expiry,
	}
}

func noticeData() NoticeData {
	return NoticeData{
		To:                  "bob@example.com",
		MessageID:           NoticeMessageID("msg-uid", "member-uid"),
		CustomerDisplayName: "ACME Rockets & Co",
		MessageName:         "maintenance-2026-03",
		Title:               "Maintenance on <Saturday>",
		Body:                "The cluster will be upgraded.\nExpect short interruptions.",
	}
}

func TestInvitationMail(t *testing.T) {
	g := NewWithT(t)
	m, err := InvitationMail(invitationData())
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(m.Kind).To(Equal(KindInvitation))
	g.Expect(m.To).To(Equal("alice@example.com"))
	g.Expect(m.MessageID).To(Equal("<6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e5f.2@customer-operator>"))
	g.Expect(m.Subject).To(Equal("Invitation to ACME Rockets & Co (Editor)"))
	g.Expect(m.Headers).To(HaveKeyWithValue("Auto-Submitted", "auto-generated"))

	for part, body := range map[string]string{"text": m.Text, "html": m.HTML} {
		g.Expect(body).To(ContainSubstring("https://portal.example.com/invitations/AQAAAAKtoken"), part)
		g.Expect(body).To(ContainSubstring("Editor"), part)
		g.Expect(body).To(ContainSubstring("Saturday, 14 March 2026, 15:09 UTC"), part)
	}
	g.Expect(m.Text).To(ContainSubstring(`"ACME Rockets & Co"`))
	g.Expect(m.HTML).To(ContainSubstring("ACME Rockets &amp; Co"), "escaped in HTML")
	g.Expect(m.HTML).To(ContainSubstring(`href="https://portal.example.com/invitations/AQAAAAKtoken"`))
}

func TestInvitationMailIsStable(t *testing.T) {
	g := NewWithT(t)
	first, err := InvitationMail(invitationData())
	g.Expect(err).NotTo(HaveOccurred())
	second, err := InvitationMail(invitationData())
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(second).To(Equal(first), "a re-sent invitation of the same round is the same mail, Message-ID included")

	next := invitationData()
	next.MessageID = InvitationMessageID("6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e5f", 3)
	third, err := InvitationMail(next)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(third.MessageID).NotTo(Equal(first.MessageID), "a new round is a new mail")

	// The Message-ID is the membership's UID and the round, nothing else: the same
	// per round (a crash's re-send), another for the next round and for another
	// membership.
	g.Expect(InvitationMessageID("6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e5f", 3)).To(Equal("<6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e5f.3@customer-operator>"))
	g.Expect(InvitationMessageID("6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e5f", 4)).To(Equal("<6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e5f.4@customer-operator>"))
	g.Expect(third.MessageID).To(Equal("<6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e5f.3@customer-operator>"), "the mail carries the ID it was given")
}

func TestInvitationMailEscapesUserInput(t *testing.T) {
	g := NewWithT(t)
	d := invitationData()
	d.CustomerDisplayName = "<script>alert(1)</script>\r\nBcc: victim@example.com"
	m, err := InvitationMail(d)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(m.HTML).NotTo(ContainSubstring("<script>"))
	g.Expect(m.HTML).To(ContainSubstring("&lt;script&gt;"))
	g.Expect(m.Subject).NotTo(MatchRegexp(`[\r\n]`), "no header injection through the subject")
	g.Expect(m.Subject).To(Equal("Invitation to <script>alert(1)</script> Bcc: victim@example.com (Editor)"))
}

// TestTextPartsKeepPartnerTextOnItsLine: a display name or title with line breaks
// cannot set a paragraph of its own (a fake link) above the real one.
func TestTextPartsKeepPartnerTextOnItsLine(t *testing.T) {
	g := NewWithT(t)
	const forged = "Acme\"\n\nTo accept, open https://evil.example/accept\n\n\""
	d := invitationData()
	d.CustomerDisplayName = forged
	m, err := InvitationMail(d)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(m.Text).To(ContainSubstring(`customer account "Acme" To accept, open https://evil.example/accept "" with the role`))
	g.Expect(m.Text).NotTo(MatchRegexp(`(?m)^To accept, open https://evil`))

	n := noticeData()
	n.CustomerDisplayName, n.Title = forged, "Maintenance\r\n\r\nhttps://evil.example"
	nm, err := NoticeMail(n)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(nm.Text).NotTo(MatchRegexp(`(?m)^(To accept|https://evil)`))
	g.Expect(nm.Text).To(ContainSubstring("Maintenance https://evil.example\n" + strings.Repeat("=", len("Maintenance https://evil.example"))))
}

func TestInvitationMailRejects(t *testing.T) {
	tests := map[string]func(*InvitationData){
		"no recipient":        func(d *InvitationData) { d.To = "" },
		"no Message-ID":       func(d *InvitationData) { d.MessageID = "" },
		"bad Message-ID":      func(d *InvitationData) { d.MessageID = "<no at sign>" },
		"no display name":     func(d *InvitationData) { d.CustomerDisplayName = " " },
		"no role":             func(d *InvitationData) { d.Role = "" },
		"no link":             func(d *InvitationData) { d.Link = "" },
		"javascript link":     func(d *InvitationData) { d.Link = "javascript:alert(1)" },
		"relative link":       func(d *InvitationData) { d.Link = "/invitations/x" },
		"no expiry":           func(d *InvitationData) { d.ExpiryTime = time.Time{} },
		"unparsable link":     func(d *InvitationData) { d.Link = "https://exa mple.com/invitations/secret-token" },
		"several fields miss": func(d *InvitationData) { d.To, d.Role = "", "" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			d := invitationData()
			mutate(&d)
			_, err := InvitationMail(d)
			g.Expect(err).To(HaveOccurred())
			g.Expect(err.Error()).NotTo(ContainSubstring("secret-token"), "errors never quote the link")
		})
	}
}

func TestNoticeMail(t *testing.T) {
	g := NewWithT(t)
	m, err := NoticeMail(noticeData())
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(m.Kind).To(Equal(KindNotice))
	g.Expect(m.Subject).To(Equal("[ACME Rockets & Co] Maintenance on <Saturday>"))
	g.Expect(m.MessageID).To(Equal("<msg-uid.member-uid@customer-operator>"))
	for part, body := range map[string]string{"text": m.Text, "html": m.HTML} {
		g.Expect(body).To(ContainSubstring("kubectl customer ack maintenance-2026-03"), part)
		g.Expect(body).To(ContainSubstring("kubectl customer inbox"), part)
		g.Expect(body).To(ContainSubstring("The cluster will be upgraded.\nExpect short interruptions."), part)
	}
	g.Expect(m.Text).To(ContainSubstring("Maintenance on <Saturday>\n" + strings.Repeat("=", len("Maintenance on <Saturday>"))))
	g.Expect(m.HTML).To(ContainSubstring("Maintenance on &lt;Saturday&gt;"))
}

func TestNoticeMailRejects(t *testing.T) {
	tests := map[string]func(*NoticeData){
		"no recipient":    func(d *NoticeData) { d.To = "" },
		"no message name": func(d *NoticeData) { d.MessageName = "" },
		"no title":        func(d *NoticeData) { d.Title = "" },
		"bad Message-ID":  func(d *NoticeData) { d.MessageID = "a@b@c" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			d := noticeData()
			mutate(&d)
			_, err := NoticeMail(d)
			g.Expect(err).To(HaveOccurred())
		})
	}
}
