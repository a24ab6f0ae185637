package mail

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"maps"
	"net/url"
	"slices"
	"strings"
	texttemplate "text/template"
	"time"
	"unicode/utf8"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

// timeLayout is how expiry times appear in mails: unambiguous for any reader, so
// always in UTC with the zone spelled out.
const timeLayout = "Monday, 2 January 2006, 15:04 MST"

var templateFuncs = map[string]any{
	"formatTime":      func(t time.Time) string { return t.UTC().Format(timeLayout) },
	"roleDescription": roleDescription,
	"underline":       func(s string) string { return strings.Repeat("=", min(utf8.RuneCountInString(foldLine(s)), 72)) },
	// oneLine keeps a partner's display name or title on its line in the text part:
	// line breaks in it could otherwise set text of theirs, a link, above the real one.
	"oneLine": foldLine,
}

var (
	invitationText = texttemplate.Must(texttemplate.New("invitation.txt.tmpl").Funcs(templateFuncs).ParseFS(templateFS, "templates/invitation.txt.tmpl"))
	invitationHTML = htmltemplate.Must(htmltemplate.New("invitation.html.tmpl").Funcs(templateFuncs).ParseFS(templateFS, "templates/invitation.html.tmpl"))
	noticeText     = texttemplate.Must(texttemplate.New("notice.txt.tmpl").Funcs(templateFuncs).ParseFS(templateFS, "templates/notice.txt.tmpl"))
	noticeHTML     = htmltemplate.Must(htmltemplate.New("notice.html.tmpl").Funcs(templateFuncs).ParseFS(templateFS, "templates/notice.html.tmpl"))
)

// roleDescription says in a few words what a role allows, so that the invitee knows
// what they accept.
func roleDescription(role string) string {
	switch role {
	case "Admin":
		return "create and manage projects, invite colleagues"
	case "Editor":
		return "change workloads in the projects"
	case "Viewer":
		return "read the projects"
	}
	return "access to the projects"
}

// autoSubmitted marks our mails as automatic (RFC 3834), so that vacation
// responders do not answer them.
var autoSubmitted = map[string]string{"Auto-Submitted": "auto-generated"}

// InvitationData is what an invitation mail says.
type InvitationData struct {
	// To is the invitee's address (spec.email).
	To string
	// MessageID is the stable Message-ID of this round (InvitationMessageID).
	MessageID string
	// CustomerDisplayName is the customer's spec.displayName.
	CustomerDisplayName string
	// Role is the membership's spec.role.
	Role string
	// Link is the acceptance link, <portal-url>/invitations/<token> (invitation.Link).
	Link string
	// ExpiryTime is when the link stops working.
	ExpiryTime time.Time
}

// InvitationMail renders the invitation mail (text and HTML).
func InvitationMail(d InvitationData) (Message, error) {
	if err := requireFields(map[string]string{
		"recipient": d.To, "Message-ID": d.MessageID, "customer display name": d.CustomerDisplayName,
		"role": d.Role, "link": d.Link,
	}); err != nil {
		return Message{}, fmt.Errorf("invitation mail: %w", err)
	}
	if err := checkLink(d.Link); err != nil {
		return Message{}, fmt.Errorf("invitation mail: %w", err)
	}
	if d.ExpiryTime.IsZero() {
		return Message{}, errors.New("invitation mail: expiry time is required")
	}
	return render(KindInvitation, d.To, d.MessageID,
		fmt.Sprintf("Invitation to %s (%s)", d.CustomerDisplayName, d.Role),
		invitationText, invitationHTML, d)
}

// NoticeData is what a notice mail (a CustomerMessage with notify Email) says.
type NoticeData struct {
	// To is the recipient's address.
	To string
	// MessageID is the stable Message-ID of this notice to this recipient (NoticeMessageID).
	MessageID string
	// CustomerDisplayName is the customer's spec.displayName.
	CustomerDisplayName string
	// MessageName is the CustomerMessage's metadata.name, which `kubectl customer ack` takes.
	MessageName string
	// Title is the message's spec.title.
	Title string
	// Body is the message's spec.body, shown as preformatted text.
	Body string
}

// NoticeMail renders the notice mail (text and HTML).
func NoticeMail(d NoticeData) (Message, error) {
	if err := requireFields(map[string]string{
		"recipient": d.To, "Message-ID": d.MessageID, "customer display name": d.CustomerDisplayName,
		"message name": d.MessageName, "title": d.Title,
	}); err != nil {
		return Message{}, fmt.Errorf("notice mail: %w", err)
	}
	return render(KindNotice, d.To, d.MessageID,
		fmt.Sprintf("[%s] %s", d.CustomerDisplayName, d.Title),
		noticeText, noticeHTML, d)
}

func render(kind Kind, to, messageID, subject string, text *texttemplate.Template, html *htmltemplate.Template, data any) (Message, error) {
	var textBody, htmlBody bytes.Buffer
	if err := text.Execute(&textBody, data); err != nil {
		return Message{}, fmt.Errorf("rendering %s mail text: %w", kind, err)
	}
	if err := html.Execute(&htmlBody, data); err != nil {
		return Message{}, fmt.Errorf("rendering %s mail HTML: %w", kind, err)
	}
	if _, err := bareMessageID(messageID); err != nil {
		return Message{}, fmt.Errorf("%s mail: %w", kind, err)
	}
	return Message{
		Kind:      kind,
		To:        to,
		Subject:   foldLine(subject),
		Text:      textBody.String(),
		HTML:      htmlBody.String(),
		MessageID: messageID,
		Headers:   maps.Clone(autoSubmitted),
	}, nil
}

func requireFields(fields map[string]string) error {
	var missing []string
	for name, value := range fields {
		if strings.TrimSpace(value) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(slices.Sorted(slices.Values(missing)), ", "))
	}
	return nil
}

// checkLink accepts only absolute http(s) links: anything else in a mail is either a
// bug or an attempt to smuggle in a javascript: or data: URL. Its error does not
// quote the link, which carries the invitation token.
func checkLink(link string) error {
	u, err := url.Parse(link)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("link must be an absolute http(s) URL")
	}
	return nil
}
