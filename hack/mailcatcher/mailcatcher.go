// Package mailcatcher is the local run's mail catcher: an SMTP server that
// accepts every message (plain SMTP; any AUTH PLAIN credentials, none needed)
// and a small web UI to read them, with their links clickable, so that an
// invitation can be followed in a browser. Messages are kept as files in a
// directory, so they survive a restart of the local run: the operator never
// sends an invitation twice.
//
// Web UI and API:
//
//	GET  /                       the messages, newest first
//	GET  /messages/{id}          one message: headers, links, text, HTML
//	GET  /messages/{id}/html     its HTML part (sandboxed)
//	GET  /messages/{id}/raw      its source
//	GET  /api/messages           all messages as JSON (for scripts and tests)
//	POST /delete                 deletes every message
//	GET  /healthz                200 when serving
package mailcatcher

import (
	"bytes"
	"context"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"html/template"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Options configures Start.
type Options struct {
	// SMTPAddr is where SMTP is served, e.g. 127.0.0.1:1025.
	SMTPAddr string
	// HTTPAddr is where the web UI is served, e.g. 127.0.0.1:8025.
	HTTPAddr string
	// Dir keeps the messages; empty means memory only.
	Dir string
	// MaxMessages is how many messages are kept (the oldest go first); zero means 1000.
	MaxMessages int
	// Log receives one line per message and errors; nil means silence.
	Log io.Writer
}

// Message is one received message.
type Message struct {
	ID       int       `json:"id"`
	Received time.Time `json:"received"`
	// From and To are the SMTP envelope.
	From string   `json:"from"`
	To   []string `json:"to"`
	// Raw is the message as received (not in the JSON API: see /messages/{id}/raw).
	Raw []byte `json:"-"`

	Subject   string   `json:"subject"`
	MessageID string   `json:"messageId"`
	Text      string   `json:"text"`
	HTML      string   `json:"html"`
	Links     []string `json:"links"`
	header    mail.Header
}

// Catcher is a running mail catcher.
type Catcher struct {
	opts   Options
	log    *log.Logger
	smtp   *smtp.Server
	http   *http.Server
	smtpL  net.Listener
	httpL  net.Listener
	mu     sync.Mutex
	msgs   []*Message
	nextID int

	errOnce sync.Once
	done    chan struct{}
	err     error
}

// Start listens on both addresses, loads the messages kept in Dir and serves
// until Close.
func Start(opts Options) (*Catcher, error) {
	if opts.MaxMessages == 0 {
		opts.MaxMessages = 1000
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	c := &Catcher{opts: opts, log: log.New(opts.Log, "mailcatcher: ", log.LstdFlags), nextID: 1, done: make(chan struct{})}
	if err := c.load(); err != nil {
		return nil, err
	}
	var err error
	if c.smtpL, err = net.Listen("tcp", opts.SMTPAddr); err != nil {
		return nil, fmt.Errorf("SMTP: %w", err)
	}
	if c.httpL, err = net.Listen("tcp", opts.HTTPAddr); err != nil {
		_ = c.smtpL.Close()
		return nil, fmt.Errorf("web UI: %w", err)
	}
	c.smtp = smtp.NewServer(backend{c})
	c.smtp.Domain = "localhost"
	c.smtp.AllowInsecureAuth = true
	c.smtp.MaxMessageBytes = 25 << 20
	c.smtp.MaxRecipients = 100
	c.smtp.ReadTimeout = time.Minute
	c.smtp.WriteTimeout = time.Minute
	c.http = &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go c.serve("SMTP", func() error { return c.smtp.Serve(c.smtpL) }, smtp.ErrServerClosed)
	go c.serve("web UI", func() error { return c.http.Serve(c.httpL) }, http.ErrServerClosed)
	c.log.Printf("SMTP on %s, web UI on http://%s", c.smtpL.Addr(), c.httpL.Addr())
	return c, nil
}

func (c *Catcher) serve(what string, serve func() error, closed error) {
	if err := serve(); err != nil && !errors.Is(err, closed) {
		c.errOnce.Do(func() { c.err = fmt.Errorf("mail catcher %s: %w", what, err); close(c.done) })
	}
}

// SMTPAddr is the address SMTP is served on.
func (c *Catcher) SMTPAddr() string { return c.smtpL.Addr().String() }

// HTTPAddr is the address the web UI is served on.
func (c *Catcher) HTTPAddr() string { return c.httpL.Addr().String() }

// Done is closed when a server stops on an error (not after Close); see Err.
func (c *Catcher) Done() <-chan struct{} { return c.done }

// Err is the error that closed Done.
func (c *Catcher) Err() error { return c.err }

// Close stops both servers.
func (c *Catcher) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(c.smtp.Close(), c.http.Shutdown(ctx))
}

// Messages returns the messages, oldest first.
func (c *Catcher) Messages() []*Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

func (c *Catcher) message(id int) *Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.msgs {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// stored is a message as kept in Dir.
type stored struct {
	Received time.Time `json:"received"`
	From     string    `json:"from"`
	To       []string  `json:"to"`
	Raw      []byte    `json:"raw"`
}

func (c *Catcher) load() error {
	if c.opts.Dir == "" {
		return nil
	}
	if err := os.MkdirAll(c.opts.Dir, 0o755); err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(c.opts.Dir, "*.json"))
	if err != nil {
		return err
	}
	type numbered struct {
		id   int
		path string
	}
	var found []numbered
	for _, f := range files {
		if id, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".json")); err == nil {
			found = append(found, numbered{id, f})
		}
	}
	slices.SortFunc(found, func(a, b numbered) int { return a.id - b.id })
	for _, f := range found {
		data, err := os.ReadFile(f.path)
		if err != nil {
			return err
		}
		var s stored
		if err := json.Unmarshal(data, &s); err != nil {
			c.log.Printf("skipping %s: %v", f.path, err)
			continue
		}
		c.msgs = append(c.msgs, parse(f.id, s))
		c.nextID = f.id + 1
	}
	return nil
}

func (c *Catcher) add(from string, to []string, raw []byte) error {
	s := stored{Received: time.Now().UTC(), From: from, To: to, Raw: raw}
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.nextID
	if c.opts.Dir != "" {
		data, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(c.opts.Dir, strconv.Itoa(id)+".json"), data, 0o644); err != nil {
			return err
		}
	}
	c.nextID++
	m := parse(id, s)
	c.msgs = append(c.msgs, m)
	for len(c.msgs) > c.opts.MaxMessages {
		c.removeLocked(c.msgs[0].ID)
	}
	c.log.Printf("message %d from %s to %s: %q", id, from, strings.Join(to, ", "), m.Subject)
	return nil
}

func (c *Catcher) deleteAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.msgs) > 0 {
		c.removeLocked(c.msgs[0].ID)
	}
}

func (c *Catcher) removeLocked(id int) {
	c.msgs = slices.DeleteFunc(c.msgs, func(m *Message) bool { return m.ID == id })
	if c.opts.Dir != "" {
		_ = os.Remove(filepath.Join(c.opts.Dir, strconv.Itoa(id)+".json"))
	}
}

// backend and session implement go-smtp's server side: every sender and
// recipient is accepted, and so is any AUTH PLAIN.
type backend struct{ c *Catcher }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{c: b.c}, nil }

type session struct {
	c    *Catcher
	from string
	to   []string
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(string, string, string) error { return nil }), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return s.c.add(s.from, s.to, raw)
}

func (s *session) Reset() { s.from, s.to = "", nil }

func (s *session) Logout() error { return nil }

// parse reads what the UI shows from a message; a message it cannot parse is
// still listed, with its source.
func parse(id int, s stored) *Message {
	m := &Message{ID: id, Received: s.Received, From: s.From, To: s.To, Raw: s.Raw}
	msg, err := mail.ReadMessage(bytes.NewReader(s.Raw))
	if err != nil {
		m.Subject = "(unreadable message: " + err.Error() + ")"
		return m
	}
	m.header = msg.Header
	dec := new(mime.WordDecoder)
	m.Subject = decodeHeader(dec, msg.Header.Get("Subject"))
	m.MessageID = msg.Header.Get("Message-ID")
	walkParts(msg.Header, msg.Body, m, 0)
	m.Links = links(m.Text, m.HTML)
	return m
}

func decodeHeader(dec *mime.WordDecoder, v string) string {
	if d, err := dec.DecodeHeader(v); err == nil {
		return d
	}
	return v
}

// walkParts collects the first text/plain and text/html parts; h is a
// mail.Header or a textproto.MIMEHeader (canonical keys).
func walkParts(h map[string][]string, body io.Reader, m *Message, depth int) {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	ctype := get("Content-Type")
	if ctype == "" {
		ctype = "text/plain"
	}
	mediaType, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		mediaType = "text/plain"
	}
	if strings.HasPrefix(mediaType, "multipart/") && depth < 10 {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err != nil {
				return
			}
			walkParts(p.Header, p, m, depth+1)
		}
	}
	var r io.Reader = body
	switch strings.ToLower(get("Content-Transfer-Encoding")) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r) // it skips line breaks
	}
	data, err := io.ReadAll(io.LimitReader(r, 5<<20))
	if err != nil && len(data) == 0 {
		return
	}
	switch {
	case mediaType == "text/plain" && m.Text == "":
		m.Text = string(data)
	case mediaType == "text/html" && m.HTML == "":
		m.HTML = string(data)
	}
}

var (
	urlRE  = regexp.MustCompile(`https?://[^\s<>"'()\[\]]+`)
	hrefRE = regexp.MustCompile(`(?i)href\s*=\s*(?:"([^"]*)"|'([^']*)')`)
)

// links lists the http(s) links of a message, once each, in order.
func links(text, htmlBody string) []string {
	var out []string
	add := func(u string) {
		u = strings.TrimRight(u, ".,;:!?")
		if (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) && !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	for _, m := range hrefRE.FindAllStringSubmatch(htmlBody, -1) {
		add(html.UnescapeString(m[1] + m[2]))
	}
	for _, u := range urlRE.FindAllString(text, -1) {
		add(u)
	}
	return out
}

// segment is a piece of text, a link when URL is set.
type segment struct{ Text, URL string }

func linkify(text string) []segment {
	var out []segment
	last := 0
	for _, loc := range urlRE.FindAllStringIndex(text, -1) {
		u := strings.TrimRight(text[loc[0]:loc[1]], ".,;:!?")
		end := loc[0] + len(u)
		out = append(out, segment{Text: text[last:loc[0]]}, segment{Text: u, URL: u})
		last = end
	}
	return append(out, segment{Text: text[last:]})
}

//go:embed templates/*.html
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"linkify": linkify,
	"time":    func(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05") },
	"join":    strings.Join,
}).ParseFS(templateFS, "templates/*.html"))

// Handler serves the web UI and the API.
func (c *Catcher) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		msgs := c.Messages()
		slices.Reverse(msgs)
		render(w, "list.html", msgs)
	})
	mux.HandleFunc("GET /messages/{id}", c.withMessage(func(w http.ResponseWriter, m *Message) {
		type header struct{ Name, Value string }
		var headers []header
		dec := new(mime.WordDecoder)
		for _, k := range []string{"From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-Id"} {
			if v := m.header.Get(k); v != "" {
				headers = append(headers, header{k, decodeHeader(dec, v)})
			}
		}
		render(w, "message.html", map[string]any{"Message": m, "Headers": headers})
	}))
	mux.HandleFunc("GET /messages/{id}/html", c.withMessage(func(w http.ResponseWriter, m *Message) {
		// Shown as sent, but sandboxed: no scripts, links open in a new tab.
		w.Header().Set("Content-Security-Policy", "sandbox allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, `<base target="_blank">`+m.HTML)
	}))
	mux.HandleFunc("GET /messages/{id}/raw", c.withMessage(func(w http.ResponseWriter, m *Message) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(m.Raw)
	}))
	mux.HandleFunc("GET /api/messages", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(c.Messages())
	})
	mux.HandleFunc("POST /delete", func(w http.ResponseWriter, r *http.Request) {
		c.deleteAll()
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

func (c *Catcher) withMessage(serve func(http.ResponseWriter, *Message)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		m := c.message(id)
		if err != nil || m == nil {
			http.NotFound(w, r)
			return
		}
		serve(w, m)
	}
}

func render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}
