package mail

import (
	"fmt"
	"net/textproto"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// Kind says what a mail is for. It labels the metrics, so it takes a few fixed values.
type Kind string

const (
	// KindInvitation is an invitation of a CustomerMembership.
	KindInvitation Kind = "invitation"
	// KindNotice announces a CustomerMessage to one recipient.
	KindNotice Kind = "notice"
)

// Message is one outgoing mail to one recipient.
type Message struct {
	// Kind labels the metrics (invitation or notice).
	Kind Kind
	// To is the recipient's address.
	To string
	// Subject is the subject line; line breaks are folded into spaces.
	Subject string
	// Text is the text/plain body (required).
	Text string
	// HTML is the optional text/html alternative.
	HTML string
	// MessageID is the Message-ID header, with or without angle brackets. Callers pass a
	// stable value (see InvitationMessageID), so that a mail re-sent after a crash
	// carries the same ID and receivers can tell it is the same mail.
	MessageID string
	// Headers are extra header fields. They cannot replace the fields this package
	// sets itself (From, To, Subject, Message-ID, Date, MIME and content fields).
	Headers map[string]string
}

// reservedHeaders are set by toMsg and cannot be overridden through Message.Headers.
var reservedHeaders = map[string]bool{
	"From": true, "To": true, "Cc": true, "Bcc": true, "Sender": true, "Reply-To": true,
	"Subject": true, "Message-Id": true, "Date": true, "Mime-Version": true,
	"Content-Type": true, "Content-Transfer-Encoding": true,
}

// InvitationMessageID is the Message-ID of the invitation mail of a membership in a
// round: stable across re-sends of that round, different for the next round.
func InvitationMessageID(membershipUID string, round int32) string {
	return fmt.Sprintf("<%s.%d@customer-operator>", membershipUID, round)
}

// NoticeMessageID is the Message-ID of the notice of a CustomerMessage to one member.
func NoticeMessageID(messageUID, membershipUID string) string {
	return fmt.Sprintf("<%s.%s@customer-operator>", messageUID, membershipUID)
}

// toMsg turns m into a go-mail message from the given sender address. Its errors
// are about the message itself, so they are permanent: sending it again as it is
// cannot succeed.
func toMsg(from string, m Message) (*gomail.Msg, error) {
	if strings.TrimSpace(m.Text) == "" {
		return nil, fmt.Errorf("message to %q has no text body", m.To)
	}
	id, err := bareMessageID(m.MessageID)
	if err != nil {
		return nil, err
	}
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := msg.From(from); err != nil {
		return nil, fmt.Errorf("invalid sender address %q: %w", from, err)
	}
	if err := msg.To(m.To); err != nil {
		return nil, fmt.Errorf("invalid recipient address %q: %w", m.To, err)
	}
	msg.Subject(foldLine(m.Subject))
	msg.SetMessageIDWithValue(id)
	msg.SetDateWithValue(time.Now())
	msg.SetUserAgent("customer-operator")
	if err := setHeaders(msg, m.Headers); err != nil {
		return nil, err
	}
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}

// bareMessageID checks a Message-ID (RFC 5322 msg-id, simplified to what we make:
// local@domain without spaces or brackets inside) and strips its angle brackets,
// which go-mail adds back.
func bareMessageID(id string) (string, error) {
	bare := strings.TrimSuffix(strings.TrimPrefix(id, "<"), ">")
	local, domain, _ := strings.Cut(bare, "@")
	valid := local != "" && domain != "" && strings.Count(bare, "@") == 1
	for _, r := range bare {
		if r <= ' ' || r > '~' || strings.ContainsRune("<>\"(),:;[\\]", r) {
			valid = false
		}
	}
	if !valid {
		return "", fmt.Errorf("invalid Message-ID %q: want <local@domain>", id)
	}
	return bare, nil
}

func setHeaders(msg *gomail.Msg, headers map[string]string) error {
	for name, value := range headers {
		canonical := textproto.CanonicalMIMEHeaderKey(name)
		if reservedHeaders[canonical] || !validHeaderName(name) {
			return fmt.Errorf("header %q cannot be set on a message", name)
		}
		msg.SetGenHeader(gomail.Header(canonical), foldLine(value))
	}
	return nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, r := range name {
		if r <= ' ' || r > '~' || r == ':' {
			return false
		}
	}
	return true
}

// foldLine turns a value that came from user input (a display name, a title) into
// one header line: line breaks and other control characters become spaces. go-mail
// would encode them, but a subject with an encoded line break reads badly.
func foldLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r < 0x20 || r == 0x7f
	}), " ")
}
