// Package mail sends the operator's e-mail (invitations and message notices) over
// SMTP, renders their templates and counts what was sent.
//
// The controller decides when to send and records attempts in status; this package
// only delivers one message per call and says, through *Error, whether a failure is
// worth retrying. Delivery is at-least-once: a mail that the server accepted but
// whose acknowledgement was lost may be sent again, which is why every mail carries
// a stable Message-ID chosen by the caller.
package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// Sender delivers one message. Implementations are safe for concurrent use.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// SenderFunc adapts a function to Sender (handy in tests of callers).
type SenderFunc func(ctx context.Context, m Message) error

// Send calls f.
func (f SenderFunc) Send(ctx context.Context, m Message) error { return f(ctx, m) }

// TLSPolicy says whether the SMTP connection must be encrypted with STARTTLS.
type TLSPolicy string

const (
	// TLSMandatory refuses to send unless the server offers STARTTLS and the
	// handshake succeeds (certificate verified). The default.
	TLSMandatory TLSPolicy = "mandatory"
	// TLSOpportunistic uses STARTTLS when the server offers it, else sends in clear.
	TLSOpportunistic TLSPolicy = "opportunistic"
	// TLSNone never uses TLS: for a mail catcher on loopback.
	TLSNone TLSPolicy = "none"
)

// ParseTLSPolicy parses the --smtp-tls flag; "" means TLSMandatory.
func ParseTLSPolicy(s string) (TLSPolicy, error) {
	switch p := TLSPolicy(s); p {
	case "":
		return TLSMandatory, nil
	case TLSMandatory, TLSOpportunistic, TLSNone:
		return p, nil
	}
	return "", fmt.Errorf("unknown SMTP TLS policy %q: want %s, %s or %s", s, TLSMandatory, TLSOpportunistic, TLSNone)
}

func (p TLSPolicy) goMail() gomail.TLSPolicy {
	switch p {
	case TLSOpportunistic:
		return gomail.TLSOpportunistic
	case TLSNone:
		return gomail.NoTLS
	}
	return gomail.TLSMandatory
}

// Defaults of Config.
const (
	DefaultTimeout        = 10 * time.Second
	DefaultMaxConnections = 2
	DefaultIdleTimeout    = 30 * time.Second
)

// Config configures an SMTPSender.
type Config struct {
	// Address is the server's host:port.
	Address string
	// From is the sender address, e.g. "Customer Operator <noreply@example.com>".
	From string
	// TLS is the STARTTLS policy; empty means TLSMandatory.
	TLS TLSPolicy
	// TLSConfig overrides the TLS client configuration (e.g. a private CA). Its
	// ServerName defaults to the host of Address.
	TLSConfig *tls.Config
	// Username and Password enable SMTP AUTH (the strongest mechanism the server
	// offers; PLAIN and LOGIN only over TLS). Load them with LoadCredentials.
	Username, Password string
	// Timeout bounds the dial and each SMTP command; default DefaultTimeout.
	Timeout time.Duration
	// MaxConnections is how many connections are kept open and used in parallel;
	// default DefaultMaxConnections.
	MaxConnections int
	// IdleTimeout closes a pooled connection that was idle longer than this before
	// it is used again (servers drop idle clients); default DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// String describes the configuration without the password, so that logging a
// Config is safe.
func (c Config) String() string {
	return fmt.Sprintf("smtp://%s (tls=%s, user=%q, from=%q)", c.Address, c.tlsPolicy(), c.Username, c.From)
}

func (c Config) tlsPolicy() TLSPolicy {
	if c.TLS == "" {
		return TLSMandatory
	}
	return c.TLS
}

// SMTPSender sends mail over a small pool of SMTP connections that stay open
// between messages (RSET in between), which is what makes hundreds of mails per
// second possible: a new connection costs a handshake, EHLO, STARTTLS and AUTH.
type SMTPSender struct {
	address string
	from    string
	idle    time.Duration
	// pool holds every connection slot; a slot is taken for the whole of a send.
	pool      chan *conn
	closed    chan struct{}
	closeOnce sync.Once
}

// NewSMTPSender checks cfg and prepares the pool. It does not connect: the first
// Send does, so a manager starts even while the mail server is down.
func NewSMTPSender(cfg Config) (*SMTPSender, error) {
	host, portStr, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("SMTP address %q must be host:port: %w", cfg.Address, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("SMTP address %q has an invalid port", cfg.Address)
	}
	if _, err := ParseTLSPolicy(string(cfg.TLS)); err != nil {
		return nil, err
	}
	if _, err := toMsg(cfg.From, Message{To: "check@example.com", Text: "x", MessageID: "<check@example.com>"}); err != nil {
		return nil, fmt.Errorf("SMTP sender: %w", err)
	}
	if cfg.Username != "" && cfg.Password == "" {
		return nil, errors.New("SMTP username given without a password")
	}
	cfg.Timeout = orDefault(cfg.Timeout, DefaultTimeout)
	cfg.IdleTimeout = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.MaxConnections = orDefault(cfg.MaxConnections, DefaultMaxConnections)

	s := &SMTPSender{
		address: cfg.Address,
		from:    cfg.From,
		idle:    cfg.IdleTimeout,
		pool:    make(chan *conn, cfg.MaxConnections),
		closed:  make(chan struct{}),
	}
	for range cfg.MaxConnections {
		c, err := newConn(host, port, cfg)
		if err != nil {
			return nil, err
		}
		s.pool <- c
	}
	return s, nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Send delivers m, reusing a pooled connection. It returns an *Error (see
// IsPermanent) on failure and honours ctx: cancelling it aborts the SMTP dialogue.
// It counts nothing: WithMetrics does, for whatever sender the operator runs.
func (s *SMTPSender) Send(ctx context.Context, m Message) error {
	msg, err := toMsg(s.from, m)
	if err != nil {
		return permanent(fmt.Errorf("building mail: %w", err))
	}
	c, err := s.acquire(ctx)
	if err != nil {
		return transient(err)
	}
	defer s.release(c)

	for {
		reused := c.connected
		if err := c.connect(ctx, s.idle); err != nil {
			return transient(fmt.Errorf("connecting to SMTP server %s: %w", s.address, err))
		}
		err := c.send(ctx, msg)
		switch {
		case err == nil:
			return nil
		case msg.IsDelivered():
			// The server took the mail; only the RSET after it failed.
			c.drop()
			return nil
		}
		c.drop()
		if ctx.Err() != nil {
			return transient(fmt.Errorf("sending mail to %s: %w", m.To, context.Cause(ctx)))
		}
		if reused && isStale(err) {
			// The pooled connection died while idle (the NOOP before MAIL failed), so
			// nothing was sent: retry once on a fresh connection.
			continue
		}
		return classifySend(fmt.Errorf("sending mail to %s via %s: %w", m.To, s.address, err))
	}
}

// isStale reports a connection that failed its liveness check before anything was sent.
func isStale(err error) bool {
	var se *gomail.SendError
	return errors.As(err, &se) && se.Reason == gomail.ErrConnCheck
}

var errClosed = errors.New("SMTP sender is closed")

func (s *SMTPSender) acquire(ctx context.Context) (*conn, error) {
	select {
	case <-s.closed:
		return nil, errClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for an SMTP connection: %w", context.Cause(ctx))
	case c := <-s.pool:
		select {
		case <-s.closed:
			s.pool <- c
			return nil, errClosed
		default:
			return c, nil
		}
	}
}

func (s *SMTPSender) release(c *conn) { s.pool <- c }

// Close waits for sends in flight, then says QUIT on every open connection. Sends
// after Close fail.
func (s *SMTPSender) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		close(s.closed)
		for range cap(s.pool) {
			c := <-s.pool
			errs = append(errs, c.quit())
			defer s.release(c)
		}
	})
	return errors.Join(errs...)
}

// conn is one pooled connection: a go-mail client (configuration plus the SMTP
// session) and the raw network connection under it, which is what a cancelled
// context closes to interrupt a blocked read or write.
type conn struct {
	client    *gomail.Client
	timeout   time.Duration
	connected bool
	lastUsed  time.Time

	mu      sync.Mutex
	raw     net.Conn
	aborted bool
}

func newConn(host string, port int, cfg Config) (*conn, error) {
	c := &conn{timeout: cfg.Timeout}
	opts := []gomail.Option{
		gomail.WithPort(port),
		gomail.WithTimeout(cfg.Timeout),
		gomail.WithTLSPolicy(cfg.tlsPolicy().goMail()),
		gomail.WithDialContextFunc(c.dial),
	}
	if cfg.TLSConfig != nil {
		tlsConfig := cfg.TLSConfig.Clone()
		if tlsConfig.ServerName == "" {
			tlsConfig.ServerName = host
		}
		opts = append(opts, gomail.WithTLSConfig(tlsConfig))
	}
	if cfg.Username != "" {
		opts = append(opts,
			gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(cfg.Username),
			gomail.WithPassword(cfg.Password))
	}
	client, err := gomail.NewClient(host, opts...)
	if err != nil {
		return nil, fmt.Errorf("configuring SMTP client: %w", err)
	}
	c.client = client
	return c, nil
}

// connect makes sure the slot has a live session, replacing one idle for too long.
func (c *conn) connect(ctx context.Context, idle time.Duration) error {
	if c.connected && time.Since(c.lastUsed) > idle {
		_ = c.quit()
	}
	if c.connected {
		return nil
	}
	c.mu.Lock()
	c.raw, c.aborted = nil, false
	c.mu.Unlock()

	stop := context.AfterFunc(ctx, c.abort)
	err := c.client.DialWithContext(ctx)
	if !stop() {
		err = errors.Join(context.Cause(ctx), err)
	}
	if err != nil {
		c.drop()
		return err
	}
	c.connected = true
	c.lastUsed = time.Now()
	return nil
}

// send runs one SMTP transaction (NOOP, MAIL, RCPT, DATA, RSET) on the session.
func (c *conn) send(ctx context.Context, msg *gomail.Msg) error {
	c.extendDeadline()
	stop := context.AfterFunc(ctx, c.abort)
	defer stop()
	err := c.client.Send(msg)
	c.lastUsed = time.Now()
	return err
}

// extendDeadline gives an idle session a fresh deadline before it is used: go-mail
// sets one per command, so after an idle spell the old one has passed and even the
// NOOP that checks the session would fail.
func (c *conn) extendDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.raw != nil {
		_ = c.raw.SetDeadline(time.Now().Add(c.timeout))
	}
}

// dial is go-mail's dial function: it keeps the raw connection so abort can close it.
func (c *conn) dial(ctx context.Context, network, address string) (net.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		_ = raw.Close()
		return nil, context.Canceled
	}
	c.raw = raw
	return raw, nil
}

// abort interrupts whatever the session is doing by closing the raw connection:
// go-mail's SMTP client holds its own lock while blocked in I/O, so asking it to
// close would wait for the very I/O we want to stop.
func (c *conn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	if c.raw != nil {
		_ = c.raw.Close()
	}
}

// drop forgets the session without the courtesy of QUIT: after an error it may be
// in any state.
func (c *conn) drop() {
	c.abort()
	c.connected = false
}

// quit ends the session politely.
func (c *conn) quit() error {
	if !c.connected {
		return nil
	}
	c.extendDeadline()
	err := c.client.Close()
	c.drop()
	return err
}
