package mail

import (
	"errors"
	"net/textproto"

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
//     allowed, relaying denied, authentication required, a quota) or a 530
//     (authentication required) at any step. The server or our configuration is
//     at fault, not the message, and every mail fails alike until it is fixed.
//     Retry with backoff.
//
// The text never contains the body (invitation links are secrets), only the
// recipient, the server's reply and the Message-ID.
type Error struct {
	// Permanent is true when retrying the same message cannot help.
	Permanent bool
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

func permanent(err error) *Error { return &Error{Permanent: true, err: err} }

func transient(err error) *Error { return &Error{err: err} }

// classifySend turns an error of a send over an established connection into an
// *Error, permanent only for a 5xx reply that refuses the message (see Error).
func classifySend(err error) *Error {
	code := replyCode(err)
	return &Error{Permanent: refusesMessage(err, code), Code: code, err: err}
}

// codeAuthRequired is SMTP's "authentication required" (RFC 4954), which some
// servers give at RCPT TO: our configuration, never the recipient.
const codeAuthRequired = 530

// refusesMessage reports a 5xx reply to the steps that concern this message: RCPT
// TO and the end of DATA. A 5xx to MAIL FROM refuses the sender, which is the same
// for every mail; a 5xx to the DATA command itself (503 bad sequence) is a protocol
// problem, the recipient having been accepted.
func refusesMessage(err error, code int) bool {
	if code < 500 || code >= 600 || code == codeAuthRequired {
		return false
	}
	var se *gomail.SendError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Reason {
	case gomail.ErrSMTPRcptTo, gomail.ErrSMTPDataClose:
		return true
	}
	return false
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
