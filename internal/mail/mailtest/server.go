// Package mailtest runs a real SMTP server in the test process (emersion/go-smtp)
// that keeps what it receives, so tests of the mail package and the controllers'
// envtest suite check delivery end to end, over TCP, without a mail catcher.
//
// It can simulate what goes wrong with real servers: an outage (Stop, Start on the
// same address), 4xx/5xx replies (FailNext, FailAlways), a slow server (SetDelay),
// STARTTLS (WithTLS) and SMTP AUTH (WithAuth).
package mailtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Stage is the SMTP command a failure is injected at.
type Stage string

const (
	// StageMail fails MAIL FROM.
	StageMail Stage = "MAIL"
	// StageRcpt fails RCPT TO.
	StageRcpt Stage = "RCPT"
	// StageData fails at the end of DATA, after the message was transferred.
	StageData Stage = "DATA"
)

// Option configures a Server.
type Option func(*Server)

// WithAddr listens on addr (host:port) instead of a free port the kernel picks.
// A server that is stopped and started again (an outage) needs a port outside the
// range the kernel gives outgoing connections, or one of those may take it
// meanwhile.
func WithAddr(addr string) Option { return func(s *Server) { s.addr = addr } }

// WithTLS makes the server offer STARTTLS with the given configuration.
func WithTLS(config *tls.Config) Option {
	return func(s *Server) { s.tlsConfig = config }
}

// WithAuth makes the server offer AUTH PLAIN (over TLS only, as real servers do,
// unless WithInsecureAuth) and require it for MAIL.
func WithAuth(username, password string) Option {
	return func(s *Server) { s.username, s.password = username, password }
}

// WithInsecureAuth offers AUTH on connections without TLS too.
func WithInsecureAuth() Option {
	return func(s *Server) { s.insecureAuth = true }
}

// Server is an SMTP server on 127.0.0.1 that records every message it accepts.
// All methods are safe for concurrent use.
type Server struct {
	tlsConfig          *tls.Config
	username, password string
	insecureAuth       bool

	mu          sync.Mutex
	addr        string
	srv         *smtp.Server
	stopped     chan struct{}
	messages    []Message
	connections int
	failures    map[Stage]*failure
	delay       time.Duration
}

type failure struct {
	code      int
	enhanced  [3]int
	remaining int // < 0: until cleared
}

// NewServer starts a server on a free port of 127.0.0.1.
func NewServer(opts ...Option) (*Server, error) {
	s := &Server{addr: "127.0.0.1:0", failures: map[Stage]*failure{}}
	for _, opt := range opts {
		opt(s)
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Addr is the server's host:port. It stays the same across Stop and Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Start (re)starts the server on its address after Stop: the end of an outage.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("mailtest: server already running")
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("mailtest: listening on %s: %w", s.addr, err)
	}
	s.addr = ln.Addr().String()
	s.srv = s.newSMTPServer()
	s.stopped = make(chan struct{})
	go func(srv *smtp.Server) { _ = srv.Serve(ln) }(s.srv)
	return nil
}

// Stop closes the listener and every open connection: an outage. Clients get
// "connection refused" until Start.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	close(s.stopped)
	err := s.srv.Close()
	s.srv = nil
	return err
}

// Close stops the server for good (same as Stop; for defer and t.Cleanup).
func (s *Server) Close() error { return s.Stop() }

func (s *Server) newSMTPServer() *smtp.Server {
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = "mailtest.local"
	srv.TLSConfig = s.tlsConfig
	srv.AllowInsecureAuth = s.insecureAuth
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 100
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	return srv
}

// Messages returns a copy of every message received so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// MessagesTo returns the messages with rcpt among their envelope recipients
// (compared case-insensitively).
func (s *Server) MessagesTo(rcpt string) []Message {
	var out []Message
	for _, m := range s.Messages() {
		for _, to := range m.To {
			if strings.EqualFold(to, rcpt) {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// Connections is the number of SMTP connections accepted so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connections
}

// Reset forgets received messages, the connection count, failures and delay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages, s.connections, s.delay = nil, 0, 0
	s.failures = map[Stage]*failure{}
}

// FailNext makes the next n commands of stage fail with the reply code (e.g. 451
// for a transient, 550 for a permanent failure), with the enhanced status code
// <class>.0.0.
func (s *Server) FailNext(stage Stage, code, n int) {
	s.FailNextWith(stage, code, [3]int{code / 100, 0, 0}, n)
}

// FailNextWith is FailNext with an enhanced status code of the caller's (e.g.
// 5.7.1, relaying denied, or 5.1.1, no such mailbox).
func (s *Server) FailNextWith(stage Stage, code int, enhanced [3]int, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures[stage] = &failure{code: code, enhanced: enhanced, remaining: n}
}

// FailAlways makes every command of stage fail with the reply code until ClearFailures.
func (s *Server) FailAlways(stage Stage, code int) { s.FailNext(stage, code, -1) }

// ClearFailures ends injected failures.
func (s *Server) ClearFailures() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = map[Stage]*failure{}
}

// SetDelay makes the server wait d before answering the end of DATA: a slow or hung
// server. Stop cuts the wait short.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// injected returns the error to answer stage with, if one is due.
func (s *Server) injected(stage Stage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.failures[stage]
	if f == nil || f.remaining == 0 {
		return nil
	}
	if f.remaining > 0 {
		f.remaining--
	}
	return &smtp.SMTPError{
		Code:         f.code,
		EnhancedCode: smtp.EnhancedCode(f.enhanced),
		Message:      fmt.Sprintf("mailtest: injected %s failure", stage),
	}
}

func (s *Server) wait() {
	s.mu.Lock()
	delay, stopped := s.delay, s.stopped
	s.mu.Unlock()
	if delay <= 0 {
		return
	}
	select {
	case <-time.After(delay):
	case <-stopped:
	}
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.messages = append(s.messages, m)
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	s.connections++
	s.mu.Unlock()
	return &session{server: s, conn: c}, nil
}

// session is one SMTP connection.
type session struct {
	server   *Server
	conn     *smtp.Conn
	authUser string
	from     string
	to       []string
}

var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errAuthFailed   = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
)

func (ss *session) AuthMechanisms() []string {
	if ss.server.username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.server.username == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.server.username || password != ss.server.password {
			return errAuthFailed
		}
		ss.authUser = username
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.server.username != "" && ss.authUser == "" {
		return errAuthRequired
	}
	if err := ss.server.injected(StageMail); err != nil {
		return err
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.server.injected(StageRcpt); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.server.wait()
	if err := ss.server.injected(StageData); err != nil {
		return err
	}
	m, err := parseMessage(raw)
	if err != nil {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "mailtest: cannot parse message: " + err.Error()}
	}
	m.From, m.To, m.AuthUser = ss.from, append([]string(nil), ss.to...), ss.authUser
	_, m.TLS = ss.conn.TLSConnectionState()
	m.ReceivedAt = time.Now()
	ss.server.record(m)
	return nil
}

func (ss *session) Reset() { ss.from, ss.to = "", nil }

func (ss *session) Logout() error { return nil }

// WaitForMessages polls until at least n messages arrived or ctx ends; for tests
// that do not use Gomega's Eventually.
func (s *Server) WaitForMessages(ctx context.Context, n int) ([]Message, error) {
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		if msgs := s.Messages(); len(msgs) >= n {
			return msgs, nil
		}
		select {
		case <-ctx.Done():
			return s.Messages(), fmt.Errorf("mailtest: waiting for %d messages: %w", n, ctx.Err())
		case <-ticker.C:
		}
	}
}
