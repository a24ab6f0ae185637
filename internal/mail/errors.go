package mail

import (
	"errors"
	"net/textproto"
	"strings"

	gomail "github.com/wneessen/go-mail"
)

// Error is a failed delivery. Permanent tells the caller whether sending the same
// message again can succeed:
//
//   - Permanent: the server refused this message with a 5xx reply to RCPT TO (no
//     such mailbox, a policy on the recipient) or to the end of DATA (the content
//     refused), or the message itself is invalid. Retrying the same message will
//     fail the same way; report it and stop.
//   - Transient: everything else: 4xx replies, connection failures, timeouts,
//     a cancelled context, any reply refusing the sender rather than the message:
//     a failed EHLO, STARTTLS or AUTH, a 5xx to MAIL FROM (the From address not
//     allowed, relaying denied, authentication required, a quota), a 530
//     (authentication required) at any step, or a 5xx with a security or policy
//     status (5.7.x) at RCPT TO, where Postfix and Exchange refuse relaying and
//     unauthorized senders. The server or our configuration is at fault, not the
//     message, and every mail fails alike until it is fixed. Retry with backoff.
//
// Recipient tells whether the server answered RCPT TO for this recipient (no such
// mailbox, greylisting, a full mailbox, a policy on the recipient or on relaying):
// the connection works and answers at once, so other recipients may still be
// tried, and one whose refusal is about them alone does not hold up the rest.
//
// The text never contains the body (invitation links are secrets), only the
// recipient, the server's reply and the Message-ID.
type Error struct {
	// Permanent is true when retrying the same message cannot help.
	Permanent bool
	// Recipient is true when the server refused this recipient at RCPT TO.
	Recipient bool
	// Code is the SMTP reply code when the server gave one, else 0.
	Code int
	err  error
}

func (e *Error) Error() string { return e.err.Error() }

func (e *Error) Unwrap() error { return e.err }

// IsPermanent reports whether err is a delivery error that retrying cannot fix.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

// IsRecipientRefusal reports whether err is the server's answer to RCPT TO for
// this recipient, so that other recipients may still be tried.
func IsRecipientRefusal(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Recipient
}

func permanent(err error) *Error { return &Error{Permanent: true, err: err} }

func transient(err error) *Error { return &Error{err: err} }

// classifySend turns an error of a send over an established connection into an
// *Error, permanent only for a 5xx reply that refuses the message (see Error).
func classifySend(err error) *Error {
	code := replyCode(err)
	var se *gomail.SendError
	var reason gomail.SendErrReason = -1
	if errors.As(err, &se) {
		reason = se.Reason
	}
	policy := code == codeAuthRequired || (reason == gomail.ErrSMTPRcptTo && strings.HasPrefix(enhancedCode(err), "5.7."))
	refused := code >= 500 && code < 600 && !policy
	return &Error{
		Permanent: refused && (reason == gomail.ErrSMTPRcptTo || reason == gomail.ErrSMTPDataClose),
		Recipient: reason == gomail.ErrSMTPRcptTo && code != 0,
		Code:      code,
		err:       err,
	}
}

// codeAuthRequired is SMTP's "authentication required" (RFC 4954), which some
// servers give at RCPT TO: our configuration, never the recipient.
const codeAuthRequired = 530

// enhancedCode is the reply's enhanced status code (RFC 3463, e.g. "5.7.1"), or "".
func enhancedCode(err error) string {
	var se *gomail.SendError
	if errors.As(err, &se) && se.EnhancedStatusCode() != "" {
		return se.EnhancedStatusCode()
	}
	var tp *textproto.Error
	if errors.As(err, &tp) {
		if code, _, ok := strings.Cut(tp.Msg, " "); ok && strings.Count(code, ".") == 2 {
			return code
		}
	}
	return ""
}

// replyCode finds the SMTP reply code in err: a textproto.Error in its chain, else
// the code go-mail parsed from the server's reply (its SendError does not unwrap).
func replyCode(err error) int {
	var tp *textproto.Error
	if errors.As(err, &tp) {
		return tp.Code
	}
	var se *gomail.SendError
	if errors.As(err, &se) {
		return se.ErrorCode()
	}
	return 0
}
