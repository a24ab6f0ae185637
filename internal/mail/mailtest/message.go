package mailtest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"
)

// Message is a received mail: the envelope, the parsed header and the decoded text
// and HTML parts.
type Message struct {
	// From and To are the envelope sender and recipients (MAIL FROM, RCPT TO).
	From string
	To   []string
	// Header is the parsed header; values are as sent (encoded words not decoded).
	Header mail.Header
	// Subject is the decoded Subject header.
	Subject string
	// MessageID is the Message-ID header, with its angle brackets.
	MessageID string
	// Text and HTML are the decoded text/plain and text/html parts.
	Text, HTML string
	// Raw is the message as transferred.
	Raw []byte
	// TLS says whether the message came over a STARTTLS connection.
	TLS bool
	// AuthUser is the SMTP AUTH username of the session, if any.
	AuthUser string
	// ReceivedAt is when the server accepted the message.
	ReceivedAt time.Time
}

var wordDecoder = mime.WordDecoder{}

func parseMessage(raw []byte) (Message, error) {
	parsed, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return Message{}, fmt.Errorf("reading header: %w", err)
	}
	subject, err := wordDecoder.DecodeHeader(parsed.Header.Get("Subject"))
	if err != nil {
		return Message{}, fmt.Errorf("decoding subject: %w", err)
	}
	m := Message{
		Header:    parsed.Header,
		Subject:   subject,
		MessageID: parsed.Header.Get("Message-Id"),
		Raw:       raw,
	}
	err = collectParts(&m, parsed.Header.Get("Content-Type"), parsed.Header.Get("Content-Transfer-Encoding"), parsed.Body)
	return m, err
}

// collectParts walks a (possibly nested) MIME body and keeps the first text/plain
// and text/html parts.
func collectParts(m *Message, contentType, transferEncoding string, body io.Reader) error {
	if contentType == "" {
		contentType = "text/plain"
	}
	mediaType, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return fmt.Errorf("parsing content type %q: %w", contentType, err)
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("reading MIME part: %w", err)
			}
			// multipart.Reader already decodes quoted-printable parts and drops
			// their Content-Transfer-Encoding header.
			if err := collectParts(m, part.Header.Get("Content-Type"), part.Header.Get("Content-Transfer-Encoding"), part); err != nil {
				return err
			}
		}
	}
	content, err := io.ReadAll(decodeTransfer(transferEncoding, body))
	if err != nil {
		return fmt.Errorf("decoding %s part: %w", mediaType, err)
	}
	switch {
	case mediaType == "text/plain" && m.Text == "":
		m.Text = normalizeNewlines(string(content))
	case mediaType == "text/html" && m.HTML == "":
		m.HTML = normalizeNewlines(string(content))
	}
	return nil
}

func decodeTransfer(encoding string, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, r) // skips the line breaks itself
	}
	return r
}

func normalizeNewlines(s string) string { return strings.ReplaceAll(s, "\r\n", "\n") }
