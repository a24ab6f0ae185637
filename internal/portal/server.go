// Package portal serves the invitation acceptance page on its own listener
// (--portal-bind-address): GET /invitations/{token} shows the customer, the role and
// an Accept button; POST to the same URL accepts.
//
// Security design:
//   - The token in the URL is the capability (see package invitation): whoever has
//     the link may accept, and nothing else is needed, so there is no session and no
//     cookie to forge. A cross-site POST would need the token too; on top of that,
//     net/http's CrossOriginProtection refuses cross-origin POSTs from browsers.
//   - GET never changes anything, so mail scanners that prefetch links do not accept
//     invitations; only the button's POST does.
//   - The token is never logged or stored: logs carry the UID prefix and round.
//   - Every response forbids framing, referrers and caching, and a CSP allows
//     nothing but the page's own inline style.
//   - Attempts are rate-limited per client address, with a bounded memory.
//   - An invalid, tampered or foreign token gets the same 404 whatever the reason;
//     only a valid token learns about its own membership.
//
// The Server is a controller-runtime Runnable that does not need leader election:
// every replica serves the portal.
package portal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/invitation"
)

// Defaults of Options.
const (
	// DefaultRateLimit allows 10 token attempts per minute per client...
	DefaultRateLimit = rate.Limit(10.0 / 60.0)
	// DefaultRateBurst ...after a burst of 20.
	DefaultRateBurst = 20
	// DefaultMaxClients bounds the rate limiter's memory.
	DefaultMaxClients = 10000
	// MaxBodyBytes bounds request bodies: the Accept form has one short field.
	MaxBodyBytes = 4 << 10

	// ShutdownTimeout bounds how long the portal waits for requests in flight when
	// the manager stops (before the controllers are stopped).
	ShutdownTimeout = 10 * time.Second
	// DefaultAPITimeout bounds a request's reads and accept, inside the server's
	// 10 s WriteTimeout.
	DefaultAPITimeout = 8 * time.Second
)

// Options configure a Server.
type Options struct {
	// BindAddress is where Start listens, e.g. ":8082".
	BindAddress string
	// Key is the invitation HMAC key (invitation.EnsureKey).
	Key []byte
	// Store reads memberships and customers and records acceptance.
	Store Store
	// Clock decides expiry; default the real clock.
	Clock clock.PassiveClock
	// Logger; default controller-runtime's logger named "portal".
	Logger logr.Logger
	// RateLimit and RateBurst limit token attempts per client address.
	RateLimit rate.Limit
	RateBurst int
	// MaxClients is how many client addresses the rate limiter remembers.
	MaxClients int
	// TrustedProxies are the addresses of reverse proxies (an ingress) whose
	// X-Forwarded-For names the real client. Empty: the peer is the client.
	TrustedProxies []netip.Prefix
	// APITimeout bounds a request's reads and accept; default DefaultAPITimeout.
	APITimeout time.Duration
}

// Server is the portal.
type Server struct {
	bindAddress string
	key         []byte
	store       Store
	clock       clock.PassiveClock
	log         logr.Logger
	limiter     *clientLimiter
	trusted     []netip.Prefix
	apiTimeout  time.Duration
	handler     http.Handler
	// listening is true while Start serves (ListeningCheck).
	listening atomic.Bool
}

// New checks o and builds the Server.
func New(o Options) (*Server, error) {
	if len(o.Key) < invitation.MinKeyLen {
		return nil, fmt.Errorf("portal: invitation key must have at least %d bytes", invitation.MinKeyLen)
	}
	if o.Store == nil {
		return nil, errors.New("portal: a Store is required")
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger.GetSink() == nil {
		o.Logger = ctrllog.Log.WithName("portal")
	}
	if o.RateLimit == 0 {
		o.RateLimit = DefaultRateLimit
	}
	if o.RateBurst == 0 {
		o.RateBurst = DefaultRateBurst
	}
	if o.MaxClients == 0 {
		o.MaxClients = DefaultMaxClients
	}
	if o.APITimeout == 0 {
		o.APITimeout = DefaultAPITimeout
	}
	s := &Server{
		bindAddress: o.BindAddress,
		key:         o.Key,
		store:       o.Store,
		clock:       o.Clock,
		log:         o.Logger,
		limiter:     newClientLimiter(o.RateLimit, o.RateBurst, o.MaxClients),
		trusted:     o.TrustedProxies,
		apiTimeout:  o.APITimeout,
	}
	s.handler = s.routes()
	return s, nil
}

// Handler is the portal's HTTP handler (for tests and for mounting elsewhere).
func (s *Server) Handler() http.Handler { return s.handler }

// NeedLeaderElection is false: every replica serves the portal.
func (s *Server) NeedLeaderElection() bool { return false }

// Start listens on BindAddress and serves until ctx is done, then shuts down
// gracefully. It implements manager.Runnable.
func (s *Server) Start(ctx context.Context) error {
	if s.bindAddress == "" {
		return errors.New("portal: no bind address")
	}
	ln, err := net.Listen("tcp", s.bindAddress)
	if err != nil {
		return fmt.Errorf("portal: listening on %s: %w", s.bindAddress, err)
	}
	s.listening.Store(true)
	defer s.listening.Store(false)
	return s.serve(ctx, ln)
}

// ListeningCheck is a readiness check: it fails until the portal listens, so that
// the portal's Service sends no link to a replica that cannot answer it yet.
func (s *Server) ListeningCheck(*http.Request) error {
	if !s.listening.Load() {
		return errors.New("the invitation portal is not listening yet")
	}
	return nil
}

func (s *Server) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		// No BaseContext from ctx: requests in flight at shutdown should finish,
		// not be cancelled with the manager's context.
	}
	s.log.Info("Serving invitation portal", "address", ln.Addr().String())

	errCh := make(chan error, 1)
	go func() { errCh <- srv.Serve(ln) }()
	select {
	case err := <-errCh:
		return fmt.Errorf("portal: serving: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("portal: shutting down: %w", err)
	}
	return nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(invitation.PathPrefix+"{token}", s.serveInvitation)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { renderMessage(w, pageNotFound) })

	csrf := http.NewCrossOriginProtection()
	csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		renderMessage(w, messagePage{http.StatusForbidden, "Forbidden", "Cross-origin request refused",
			"Open the invitation link directly in your browser and press Accept there."})
	}))
	return s.recoverPanics(withSecurityHeaders(csrf.Handler(mux)))
}

func withSecurityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header())
		next.ServeHTTP(w, r)
	})
}

// recoverPanics turns a panic into a 500 page and a log line (without the URL,
// which holds the token) instead of a dropped connection and a stack on stderr.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error(fmt.Errorf("panic: %v", v), "Portal handler panicked", "method", r.Method)
				renderMessage(w, messagePage{http.StatusInternalServerError, "Error", "Something went wrong",
					"The invitation could not be processed. Please try again later."})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// serveInvitation handles GET (show) and POST (accept) of /invitations/{token}.
func (s *Server) serveInvitation(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		renderMessage(w, pageMethodNotAllowed)
		return
	}
	now := s.clock.Now()
	claim, err := invitation.Open(s.key, r.PathValue("token"))
	if err != nil {
		// Only a token that fails its MAC counts against the client: the limit slows
		// guessing, and a link the operator signed is no guess. Counting every request
		// let one guesser on a shared address (an office NAT, a carrier-grade NAT)
		// lock everyone behind it out of their invitations, and a team accepting
		// together (a GET and a POST each) ran into it after ten people.
		if !s.limiter.allow(clientAddr(r, s.trusted), now) {
			w.Header().Set("Retry-After", "60")
			renderMessage(w, pageTooMany)
			return
		}
		renderMessage(w, pageInvalid)
		return
	}
	round := claim.Round
	log := s.log.WithValues("membership", claim.Name, "uid", invitation.UIDPrefix(claim.UID), "round", round)
	// The reads and the accept finish before the server's WriteTimeout cuts the
	// answer off: an accept that commits after the person was shown an error would
	// greet their retry with "already accepted".
	ctx, cancel := context.WithTimeout(r.Context(), s.apiTimeout)
	defer cancel()

	m, customer, err := s.lookup(ctx, claim, now)
	if err != nil {
		s.renderError(w, log, err)
		return
	}
	if r.Method == http.MethodGet {
		render(w, http.StatusOK, invitationPage(m, customer))
		return
	}
	if page, ok := readForm(w, r); !ok {
		renderMessage(w, page)
		return
	}
	if seen := r.PostForm.Get("role"); seen != string(m.Spec.Role) {
		// spec.role may change while the page is open (a customer's Admin edits it),
		// and the round stays: accept only the role the person was shown. The page
		// again, with the role of now, and nothing accepted.
		page := invitationPage(m, customer)
		page.Changed = fmt.Sprintf("The role of this invitation is now %s. Review it, then accept again.", m.Spec.Role)
		render(w, http.StatusConflict, page)
		return
	}
	if err := s.store.Accept(ctx, m, round, now); err != nil {
		s.renderError(w, log, err)
		return
	}
	log.Info("Invitation accepted", "customer", customer.Name)
	render(w, http.StatusOK, acceptedPage(m, customer))
}

// lookup finds the membership of a verified token and its customer, and checks
// that the token may still be used.
func (s *Server) lookup(ctx context.Context, claim invitation.Claim, now time.Time) (*v1alpha1.CustomerMembership, *v1alpha1.Customer, error) {
	m, err := s.store.Membership(ctx, claim.Name, claim.UID)
	if err == nil {
		err = CheckInvitation(m, claim.Round, now)
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotInvited) {
		// The MAC is valid, so the operator signed this link; a cache behind the
		// newest round (written to status just before the mail) or the membership
		// itself (a replica just started) must not make it look forged. The API
		// server decides.
		m, err = s.store.FreshMembership(ctx, claim.Name, claim.UID)
		if err == nil {
			err = CheckInvitation(m, claim.Round, now)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	customer, err := s.store.Customer(ctx, string(m.Spec.Customer))
	if errors.Is(err, ErrNotFound) || err == nil && customer.DeletionTimestamp != nil {
		return nil, nil, errCustomerGone
	}
	if err != nil {
		return nil, nil, err
	}
	return m, customer, nil
}

var errCustomerGone = errors.New("customer gone")

// readForm drains the (empty) Accept form within MaxBodyBytes.
func readForm(w http.ResponseWriter, r *http.Request) (messagePage, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return pageTooLarge, false
		}
		return pageBadRequest, false
	}
	return messagePage{}, true
}

// renderError answers a failed lookup or accept: a refusal page for the reasons a
// link cannot be used, a 503 (and an error log) for anything else.
func (s *Server) renderError(w http.ResponseWriter, log logr.Logger, err error) {
	page, refused := refusalPage(err)
	if !refused {
		log.Error(err, "Invitation request failed")
		renderMessage(w, pageUnavailable)
		return
	}
	log.V(1).Info("Invitation link refused", "reason", err.Error())
	renderMessage(w, page)
}

func refusalPage(err error) (messagePage, bool) {
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNotInvited):
		return pageInvalid, true
	case errors.Is(err, ErrReplaced):
		return pageReplaced, true
	case errors.Is(err, ErrExpired):
		return pageExpired, true
	case errors.Is(err, ErrAlreadyAccepted):
		return pageAlreadyAccepted, true
	case errors.Is(err, errCustomerGone):
		return pageCustomerGone, true
	}
	return messagePage{}, false
}
