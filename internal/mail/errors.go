package mail

import (
	"errors"
	"net/textproto"

	gomail "github.com/wneessen/go-mail"
)

// Error is a failed delivery. Permanent tells the caller whether sending the same
// message again can succeed:
//
//   - Permanent: the server refused this message with a 5xx reply to MAIL, RCPT or
//     DATA (no such mailbox, policy rejection), or the message itself is invalid.
//     Retrying the same message will fail the same way; report it and stop.
//   - Transient: everything else: 4xx replies, connection failures, timeouts,
//     a cancelled context, a failed STARTTLS or AUTH (the server or our
//     configuration is at fault, not the message). Retry with backoff.
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
// *Error, permanent only for a 5xx reply.
func classifySend(err error) *Error {
	code := replyCode(err)
	return &Error{Permanent: code >= 500 && code < 600, Code: code, err: err}
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
