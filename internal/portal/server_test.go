package portal

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/invitation"
)

var (
	_ manager.Runnable               = &Server{}
	_ manager.LeaderElectionRunnable = &Server{}
)

type response struct {
	code   int
	header http.Header
	body   string
}

func (p *testPortal) do(method, target string, body io.Reader, mutate ...func(*http.Request)) response {
	req := httptest.NewRequest(method, target, body)
	req.RemoteAddr = "198.51.100.7:51234"
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, f := range mutate {
		f(req)
	}
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, req)
	return response{code: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

func (p *testPortal) get(token string) response {
	return p.do(http.MethodGet, invitation.PathPrefix+token, nil)
}

// post accepts as the page's form does, with the role the page showed (testMembership's
// Editor unless given).
func (p *testPortal) post(token string, shown ...v1alpha1.Role) response {
	role := testMembership().Spec.Role
	if len(shown) > 0 {
		role = shown[0]
	}
	return p.do(http.MethodPost, invitation.PathPrefix+token, strings.NewReader("role="+string(role)))
}

func h1(body string) string {
	m := regexp.MustCompile(`<h1>([^<]*)</h1>`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

func TestShowInvitation(t *testing.T) {
	g := NewWithT(t)
	p := newTestPortal(t, newFakeStore(testMembership(), testCustomer()))

	res := p.get(tokenOf(testMembership(), 2))
	g.Expect(res.code).To(Equal(http.StatusOK))
	g.Expect(res.header.Get("Content-Type")).To(Equal("text/html; charset=utf-8"))
	g.Expect(res.body).To(ContainSubstring(`<dd id="customer">ACME Rockets &amp; &lt;Co&gt;</dd>`))
	g.Expect(res.body).To(ContainSubstring(`<span id="role">Editor</span>`))
	g.Expect(res.body).To(ContainSubstring(`<dd id="email">alice@example.com</dd>`))
	g.Expect(res.body).To(ContainSubstring(`<dd id="expiry">Monday, 11 May 2026, 10:00 UTC</dd>`))
	g.Expect(res.body).To(MatchRegexp(`<form method="post">\s*<input type="hidden" name="role" value="Editor">\s*<button id="accept" type="submit">`))
	g.Expect(res.body).NotTo(ContainSubstring("<script"))
	g.Expect(p.store.accepts).To(BeZero(), "GET never accepts: mail scanners prefetch links")
}

func TestAcceptInvitation(t *testing.T) {
	g := NewWithT(t)
	p := newTestPortal(t, newFakeStore(testMembership(), testCustomer()))
	token := tokenOf(testMembership(), 2)

	res := p.post(token)
	g.Expect(res.code).To(Equal(http.StatusOK))
	g.Expect(h1(res.body)).To(Equal("Welcome to ACME Rockets &amp; &lt;Co&gt;"))
	g.Expect(res.body).To(ContainSubstring(`<strong id="customer">ACME Rockets &amp; &lt;Co&gt;</strong>`))
	g.Expect(res.body).To(ContainSubstring(`<strong id="role">Editor</strong>`))
	g.Expect(res.body).To(ContainSubstring("kubectl customer inbox"))
	g.Expect(res.body).To(ContainSubstring(`<code id="username">oidc:alice@example.com</code>`))
	g.Expect(res.body).NotTo(ContainSubstring("As an Admin"))

	stored := p.store.membership(testUID)
	g.Expect(stored.Status.AcceptedTime.Time).To(Equal(p.clock.Now()))
	g.Expect(stored.Status.AcceptedRound).To(Equal(int32(2)))

	again := p.post(token)
	g.Expect(again.code).To(Equal(http.StatusConflict), "single use")
	g.Expect(h1(again.body)).To(Equal("This invitation was already accepted"))
	g.Expect(p.get(token).code).To(Equal(http.StatusConflict))
	g.Expect(p.store.accepts).To(Equal(1))
}

// A link of a round the cache has not seen yet (the mail can outrun the watch), or
// of a membership the cache does not hold yet, opens: a valid MAC sends the portal
// to the API server before it refuses. A forged token never gets that far.
func TestLinkNewerThanTheCacheIsCheckedUncached(t *testing.T) {
	g := NewWithT(t)
	store := newFakeStore(testMembership(), testCustomer())
	behind := testMembership()
	behind.Status.Invitation.Round = 1
	store.cached = map[types.UID]*v1alpha1.CustomerMembership{testUID: behind}
	p := newTestPortal(t, store)

	g.Expect(p.get(tokenOf(testMembership(), 2)).code).To(Equal(http.StatusOK))
	g.Expect(store.freshReads).To(Equal(1))

	store.cached = map[types.UID]*v1alpha1.CustomerMembership{}
	g.Expect(p.post(tokenOf(testMembership(), 2)).code).To(Equal(http.StatusOK))
	g.Expect(store.freshReads).To(Equal(2))

	store.cached = nil // caught up
	g.Expect(p.get(tokenOf(testMembership(), 2)).code).To(Equal(http.StatusConflict), "accepted: single use")
	g.Expect(store.freshReads).To(Equal(2), "answers the cache can give cost no uncached read")
	g.Expect(p.get("not-a-token").code).To(Equal(http.StatusNotFound))
	g.Expect(store.freshReads).To(Equal(2), "a token without a valid MAC never reaches the API server")
}

func TestAcceptedPageForAdmins(t *testing.T) {
	g := NewWithT(t)
	m := testMembership()
	m.Spec.Role = v1alpha1.RoleAdmin
	p := newTestPortal(t, newFakeStore(m, testCustomer()))

	res := p.post(tokenOf(m, 2), v1alpha1.RoleAdmin)
	g.Expect(res.code).To(Equal(http.StatusOK))
	g.Expect(res.body).To(ContainSubstring("customers.partnerops.io/customer: acme"))
}

// TestAcceptsOnlyTheRoleShown: an Admin may change spec.role while the invitee has
// the page open, without a new round; the invitee accepts what they saw or nothing.
func TestAcceptsOnlyTheRoleShown(t *testing.T) {
	g := NewWithT(t)
	m := testMembership()
	store := newFakeStore(m, testCustomer())
	p := newTestPortal(t, store)
	token := tokenOf(m, 2)

	g.Expect(p.get(token).body).To(ContainSubstring(`<input type="hidden" name="role" value="Editor">`))
	store.memberships[testUID].Spec.Role = v1alpha1.RoleAdmin // while the page is open

	res := p.post(token, v1alpha1.RoleEditor)
	g.Expect(res.code).To(Equal(http.StatusConflict))
	g.Expect(res.body).To(ContainSubstring("The role of this invitation is now Admin"))
	g.Expect(res.body).To(ContainSubstring(`<input type="hidden" name="role" value="Admin">`), "the page again, with the role of now")
	g.Expect(store.accepts).To(BeZero(), "nothing accepted")
	g.Expect(p.do(http.MethodPost, invitation.PathPrefix+token, strings.NewReader("")).code).To(Equal(http.StatusConflict),
		"a form without the role accepts nothing either")
	g.Expect(store.accepts).To(BeZero())

	g.Expect(p.post(token, v1alpha1.RoleAdmin).code).To(Equal(http.StatusOK), "accepted once the person has seen Admin")
	g.Expect(store.accepts).To(Equal(1))
}

func TestRefusals(t *testing.T) {
	otherKeyToken := invitation.Token([]byte(strings.Repeat("k", 32)), invitation.Claim{Name: "acme-alice", UID: testUID, Round: 2})
	valid := tokenOf(testMembership(), 2)
	raw, _ := base64.RawURLEncoding.DecodeString(valid)
	raw[20] ^= 1 // a bit of the MAC
	tampered := base64.RawURLEncoding.EncodeToString(raw)

	tests := []struct {
		name     string
		token    string
		mutate   func(*fakeStore, *testPortal)
		wantCode int
		wantH1   string
	}{
		{name: "tampered token", token: tampered, wantCode: 404, wantH1: "This invitation link is not valid"},
		{name: "token signed with another key", token: otherKeyToken, wantCode: 404, wantH1: "This invitation link is not valid"},
		{name: "garbage token", token: "hello", wantCode: 404, wantH1: "This invitation link is not valid"},
		{name: "unknown membership", token: invitation.Token(testKey, invitation.Claim{Name: "acme-carol", UID: "11111111-2222-4333-8444-555555555555", Round: 2}), wantCode: 404, wantH1: "This invitation link is not valid"},
		{name: "membership created again under the same name", token: invitation.Token(testKey, invitation.Claim{Name: "acme-alice", UID: "11111111-2222-4333-8444-555555555555", Round: 2}), wantCode: 404, wantH1: "This invitation link is not valid"},
		{name: "older round (resent)", token: tokenOf(testMembership(), 1), wantCode: 410, wantH1: "This invitation was replaced by a newer one"},
		{name: "round from the future", token: tokenOf(testMembership(), 3), wantCode: 404, wantH1: "This invitation link is not valid"},
		{
			name: "expired", token: valid, wantCode: 410, wantH1: "This invitation has expired",
			mutate: func(_ *fakeStore, p *testPortal) { p.clock.SetTime(expiry.Add(time.Second)) },
		},
		{
			name: "expires exactly now", token: valid, wantCode: 410, wantH1: "This invitation has expired",
			mutate: func(_ *fakeStore, p *testPortal) { p.clock.SetTime(expiry) },
		},
		{
			// Written with the attempt, before the mail: never valid without a bound.
			name: "a round without an expiry (a status edited or restored)", token: valid, wantCode: 404, wantH1: "This invitation link is not valid",
			mutate: func(s *fakeStore, _ *testPortal) { s.memberships[testUID].Status.Invitation.ExpiryTime = nil },
		},
		{
			name: "already accepted", token: valid, wantCode: 409, wantH1: "This invitation was already accepted",
			mutate: func(s *fakeStore, _ *testPortal) {
				s.memberships[testUID].Status.AcceptedTime = &metav1.Time{Time: sentTime}
				s.memberships[testUID].Status.AcceptedRound = 2
			},
		},
		{
			name: "customer gone", token: valid, wantCode: 410, wantH1: "This customer account no longer exists",
			mutate: func(s *fakeStore, _ *testPortal) { delete(s.customers, "acme") },
		},
		{
			name: "customer being deleted", token: valid, wantCode: 410, wantH1: "This customer account no longer exists",
			mutate: func(s *fakeStore, _ *testPortal) {
				s.customers["acme"].DeletionTimestamp = &metav1.Time{Time: sentTime}
			},
		},
		{
			name: "membership being deleted", token: valid, wantCode: 404, wantH1: "This invitation link is not valid",
			mutate: func(s *fakeStore, _ *testPortal) {
				s.memberships[testUID].DeletionTimestamp = &metav1.Time{Time: sentTime}
			},
		},
		{
			name: "membership without invitation (None)", token: valid, wantCode: 404, wantH1: "This invitation link is not valid",
			mutate: func(s *fakeStore, _ *testPortal) { s.memberships[testUID].Spec.Invitation = v1alpha1.InvitationNone },
		},
		{
			name: "invitation not recorded yet", token: valid, wantCode: 404, wantH1: "This invitation link is not valid",
			mutate: func(s *fakeStore, _ *testPortal) { s.memberships[testUID].Status.Invitation = nil },
		},
		{
			name: "store unavailable", token: valid, wantCode: 503, wantH1: "Something went wrong",
			mutate: func(s *fakeStore, _ *testPortal) { s.err = errors.New("etcd is on fire") },
		},
	}
	for _, tt := range tests {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(tt.name+" "+method, func(t *testing.T) {
				g := NewWithT(t)
				store := newFakeStore(testMembership(), testCustomer())
				p := newTestPortal(t, store)
				if tt.mutate != nil {
					tt.mutate(store, p)
				}
				res := p.do(method, invitation.PathPrefix+tt.token, strings.NewReader(""))
				g.Expect(res.code).To(Equal(tt.wantCode))
				g.Expect(h1(res.body)).To(Equal(tt.wantH1))
				g.Expect(res.body).NotTo(ContainSubstring("alice@example.com"), "nothing about the membership on a refusal")
				g.Expect(res.body).NotTo(ContainSubstring(`id="accept"`))
				g.Expect(store.accepts).To(BeZero())
				g.Expect(p.logs.String()).NotTo(ContainSubstring(tt.token), "never log the token")
			})
		}
	}
}

func TestTokensOfOtherMembershipsRevealNothing(t *testing.T) {
	g := NewWithT(t)
	other := testMembership()
	other.Name, other.UID, other.Spec.Email = "acme-bob", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "bob@example.com"
	p := newTestPortal(t, newFakeStore(testMembership(), other, testCustomer()))

	res := p.get(tokenOf(testMembership(), 2))
	g.Expect(res.code).To(Equal(http.StatusOK))
	g.Expect(res.body).NotTo(ContainSubstring("bob@example.com"))

	forged := invitation.Token(testKey[:31], invitation.Claim{Name: other.Name, UID: other.UID, Round: 2}) // wrong key: a guessed MAC
	g.Expect(p.get(forged).code).To(Equal(http.StatusNotFound))
}

func TestSecurityHeadersOnEveryResponse(t *testing.T) {
	p := newTestPortal(t, newFakeStore(testMembership(), testCustomer()))
	targets := map[string]response{
		"invitation": p.get(tokenOf(testMembership(), 2)),
		"invalid":    p.get("nope"),
		"not found":  p.do(http.MethodGet, "/", nil),
		"accepted":   p.post(tokenOf(testMembership(), 2)),
		"healthz":    p.do(http.MethodGet, "/healthz", nil),
	}
	for name, res := range targets {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(res.header.Get("Content-Security-Policy")).To(HavePrefix("default-src 'none'; style-src 'sha256-"))
			g.Expect(res.header.Get("Content-Security-Policy")).To(ContainSubstring("frame-ancestors 'none'"))
			g.Expect(res.header.Get("X-Frame-Options")).To(Equal("DENY"))
			g.Expect(res.header.Get("Referrer-Policy")).To(Equal("no-referrer"))
			g.Expect(res.header.Get("Cache-Control")).To(Equal("no-store"))
			g.Expect(res.header.Get("X-Content-Type-Options")).To(Equal("nosniff"))
		})
	}
}

// TestCSPAllowsTheInlineStyle: the hash in the CSP must be that of the <style>
// element, or browsers would render the page unstyled.
func TestCSPAllowsTheInlineStyle(t *testing.T) {
	g := NewWithT(t)
	p := newTestPortal(t, newFakeStore(testMembership(), testCustomer()))
	res := p.get(tokenOf(testMembership(), 2))

	style := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(res.body)
	g.Expect(style).To(HaveLen(2))
	sum := sha256.Sum256([]byte(style[1]))
	g.Expect(res.header.Get("Content-Security-Policy")).To(ContainSubstring("'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"))
}

func TestOddRequests(t *testing.T) {
	token := tokenOf(testMembership(), 2)
	tests := []struct {
		name      string
		method    string
		target    string
		body      string
		header    map[string]string
		wantCode  int
		wantAllow string
	}{
		{name: "root", method: "GET", target: "/", wantCode: 404},
		{name: "unknown path", method: "GET", target: "/admin", wantCode: 404},
		{name: "no token", method: "GET", target: "/invitations/", wantCode: 404},
		{name: "extra segment", method: "GET", target: "/invitations/" + token + "/x", wantCode: 404},
		{name: "PUT", method: "PUT", target: "/invitations/" + token, wantCode: 405, wantAllow: "GET, POST"},
		{name: "DELETE", method: "DELETE", target: "/invitations/" + token, wantCode: 405, wantAllow: "GET, POST"},
		{name: "HEAD", method: "HEAD", target: "/invitations/" + token, wantCode: 405, wantAllow: "GET, POST"},
		{name: "huge body", method: "POST", target: "/invitations/" + token, body: "a=" + strings.Repeat("x", MaxBodyBytes), wantCode: 413},
		{name: "bad form", method: "POST", target: "/invitations/" + token, body: "%zz", wantCode: 400},
		{
			name: "cross-site POST", method: "POST", target: "/invitations/" + token, wantCode: 403,
			header: map[string]string{"Sec-Fetch-Site": "cross-site"},
		},
		{
			name: "cross-origin POST from an old browser", method: "POST", target: "/invitations/" + token, wantCode: 403,
			header: map[string]string{"Origin": "https://evil.example"},
		},
		{name: "healthz", method: "GET", target: "/healthz", wantCode: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			store := newFakeStore(testMembership(), testCustomer())
			p := newTestPortal(t, store)
			res := p.do(tt.method, tt.target, strings.NewReader(tt.body), func(r *http.Request) {
				for k, v := range tt.header {
					r.Header.Set(k, v)
				}
			})
			g.Expect(res.code).To(Equal(tt.wantCode))
			g.Expect(res.header.Get("Allow")).To(Equal(tt.wantAllow))
			g.Expect(store.accepts).To(BeZero())
		})
	}
}

func TestRateLimit(t *testing.T) {
	g := NewWithT(t)
	p := newTestPortal(t, newFakeStore(testMembership(), testCustomer()))
	from := func(addr string) func(*http.Request) { return func(r *http.Request) { r.RemoteAddr = addr } }

	for i := range DefaultRateBurst {
		g.Expect(p.do("GET", "/invitations/guess"+fmt.Sprint(i), nil, from("203.0.113.9:1000")).code).To(Equal(404))
	}
	limited := p.do("GET", "/invitations/guess", nil, from("203.0.113.9:1001"))
	g.Expect(limited.code).To(Equal(http.StatusTooManyRequests), "the guesser, once over the limit")
	g.Expect(limited.header.Get("Retry-After")).To(Equal("60"))
	g.Expect(h1(limited.body)).To(Equal("Too many attempts"))

	// A colleague behind the same address (an office NAT) still opens and accepts
	// their invitation: a link the operator signed is no guess, and does not count.
	valid := "/invitations/" + tokenOf(testMembership(), 2)
	g.Expect(p.do("GET", valid, nil, from("203.0.113.9:1002")).code).To(Equal(200), "a valid link, from the limited address")
	g.Expect(p.do("GET", "/invitations/guess", nil, from("203.0.113.9:1003")).code).To(Equal(429), "and it does not refill the guesser's")

	g.Expect(p.do("GET", "/invitations/x", nil, from("203.0.113.10:1000")).code).To(Equal(404), "other clients are not affected")
	g.Expect(p.do("GET", "/healthz", nil, from("203.0.113.9:1000")).code).To(Equal(200), "only token attempts count")

	p.clock.SetTime(p.clock.Now().Add(6 * time.Second)) // 10 per minute: one more attempt
	g.Expect(p.do("GET", "/invitations/x", nil, from("203.0.113.9:1000")).code).To(Equal(404))
	g.Expect(p.do("GET", "/invitations/x", nil, from("203.0.113.9:1000")).code).To(Equal(429))
}

func TestRateLimiterIsBounded(t *testing.T) {
	g := NewWithT(t)
	p := newTestPortal(t, newFakeStore(), func(o *Options) { o.MaxClients = 100 })
	for i := range 1000 {
		addr := fmt.Sprintf("10.0.%d.%d:1234", i/256, i%256)
		p.do("GET", "/invitations/x", nil, func(r *http.Request) { r.RemoteAddr = addr })
	}
	g.Expect(p.limiter.len()).To(Equal(100))
}

func TestClientAddr(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name    string
		remote  string
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{name: "peer", remote: "198.51.100.7:1234", want: "198.51.100.7"},
		{name: "forwarded header ignored from untrusted peer", remote: "198.51.100.7:1234", xff: []string{"1.2.3.4"}, trusted: proxies, want: "198.51.100.7"},
		{name: "forwarded header ignored without trusted proxies", remote: "10.1.1.1:1234", xff: []string{"1.2.3.4"}, want: "10.1.1.1"},
		{name: "client behind trusted proxy", remote: "10.1.1.1:1234", xff: []string{"1.2.3.4"}, trusted: proxies, want: "1.2.3.4"},
		{name: "right-most untrusted hop wins over a spoofed left one", remote: "10.1.1.1:1234", xff: []string{"6.6.6.6, 1.2.3.4, 10.2.2.2"}, trusted: proxies, want: "1.2.3.4"},
		{name: "several headers", remote: "10.1.1.1:1234", xff: []string{"6.6.6.6", "1.2.3.4"}, trusted: proxies, want: "1.2.3.4"},
		{name: "garbage hop stops the walk", remote: "10.1.1.1:1234", xff: []string{"1.2.3.4, garbage"}, trusted: proxies, want: "10.1.1.1"},
		{name: "a hop with a port (Azure Application Gateway)", remote: "10.1.1.1:1234", xff: []string{"6.6.6.6, 1.2.3.4:50123"}, trusted: proxies, want: "1.2.3.4"},
		{name: "an IPv6 hop with a port", remote: "10.1.1.1:1234", xff: []string{"[2001:db8:1:2::7]:443"}, trusted: proxies, want: "2001:db8:1:2::"},
		{name: "IPv6 grouped by /64", remote: "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443", want: "2001:db8:1:2::"},
		{name: "IPv4-mapped IPv6", remote: "[::ffff:198.51.100.7]:443", want: "198.51.100.7"},
		{name: "unparsable peer", remote: "pipe", want: "0.0.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			g.Expect(clientAddr(r, tt.trusted).String()).To(Equal(tt.want))
		})
	}
}

func TestPanicsBecome500(t *testing.T) {
	g := NewWithT(t)
	store := newFakeStore(testMembership(), testCustomer())
	store.panicWith = "boom"
	p := newTestPortal(t, store)

	res := p.get(tokenOf(testMembership(), 2))
	g.Expect(res.code).To(Equal(http.StatusInternalServerError))
	g.Expect(h1(res.body)).To(Equal("Something went wrong"))
	g.Expect(p.logs.String()).To(ContainSubstring("panicked"))
	g.Expect(p.logs.String()).NotTo(ContainSubstring(tokenOf(testMembership(), 2)))
}

func TestLogsNeverContainTheToken(t *testing.T) {
	g := NewWithT(t)
	p := newTestPortal(t, newFakeStore(testMembership(), testCustomer()))
	token := tokenOf(testMembership(), 2)

	g.Expect(p.post(token).code).To(Equal(200))
	logs := p.logs.String()
	g.Expect(logs).To(ContainSubstring("Invitation accepted"))
	g.Expect(logs).To(ContainSubstring(`"uid"="0b6f8a8e"`))
	g.Expect(logs).To(ContainSubstring(`"round"=2`))
	g.Expect(logs).NotTo(ContainSubstring(token))
	g.Expect(logs).NotTo(ContainSubstring(string(testUID)), "only a prefix of the UID")
}

func TestNewValidates(t *testing.T) {
	g := NewWithT(t)
	_, err := New(Options{Key: []byte("short"), Store: newFakeStore()})
	g.Expect(err).To(HaveOccurred())
	_, err = New(Options{Key: testKey})
	g.Expect(err).To(HaveOccurred())
}

func TestServeUntilCancelled(t *testing.T) {
	g := NewWithT(t)
	p := newTestPortal(t, newFakeStore(testMembership(), testCustomer()))
	g.Expect(p.NeedLeaderElection()).To(BeFalse(), "every replica serves the portal")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.serve(ctx, ln) }()

	base := "http://" + ln.Addr().String()
	res, err := http.Get(base + invitation.PathPrefix + tokenOf(testMembership(), 2))
	g.Expect(err).NotTo(HaveOccurred())
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	g.Expect(res.StatusCode).To(Equal(http.StatusOK))
	g.Expect(string(body)).To(ContainSubstring(`id="accept"`))

	// A real browser form post: same origin, so CrossOriginProtection lets it through.
	req, _ := http.NewRequest(http.MethodPost, base+invitation.PathPrefix+tokenOf(testMembership(), 2), strings.NewReader("role=Editor"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	res, err = http.DefaultClient.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	_ = res.Body.Close()
	g.Expect(res.StatusCode).To(Equal(http.StatusOK))

	cancel()
	g.Eventually(done).Should(Receive(BeNil()))
}

func TestStartFailsOnBusyAddress(t *testing.T) {
	g := NewWithT(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	defer ln.Close()
	p := newTestPortal(t, newFakeStore(), func(o *Options) { o.BindAddress = ln.Addr().String() })
	g.Expect(p.Start(context.Background())).To(MatchError(ContainSubstring("listening on")))
}

// The portal's readiness: not ready until Start listens, and not after it stops.
func TestListeningCheck(t *testing.T) {
	g := NewWithT(t)
	p := newTestPortal(t, newFakeStore(), func(o *Options) { o.BindAddress = "127.0.0.1:0" })
	g.Expect(p.ListeningCheck(nil)).To(MatchError(ContainSubstring("not listening yet")))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Start(ctx) }()
	g.Eventually(func() error { return p.ListeningCheck(nil) }).Should(Succeed())

	cancel()
	g.Eventually(done).Should(Receive(BeNil()))
	g.Expect(p.ListeningCheck(nil)).To(HaveOccurred())
}

// FuzzServeHTTP: whatever the path and method, the portal answers with a page and
// never fails or panics.
func FuzzServeHTTP(f *testing.F) {
	f.Add("GET", "/invitations/"+tokenOf(testMembership(), 2))
	f.Add("POST", "/invitations/"+tokenOf(testMembership(), 1))
	f.Add("GET", "/invitations/%2e%2e/x")
	f.Add("OPTIONS", "/")
	f.Fuzz(func(t *testing.T, method, path string) {
		p := newTestPortal(t, newFakeStore(testMembership(), testCustomer()), func(o *Options) { o.RateBurst = 1 << 30 })
		req := &http.Request{
			Method:     method,
			URL:        &url.URL{Path: path},
			Header:     http.Header{},
			Host:       "portal.example.com",
			RemoteAddr: "192.0.2.1:1234",
			Body:       http.NoBody,
		}
		rec := httptest.NewRecorder()
		p.Handler().ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: %d", method, path, rec.Code)
		}
	})
}

// blockingAccept is a store whose Accept waits for its context: an API server
// that does not answer.
type blockingAccept struct {
	*fakeStore
	ended chan error
}

func (s blockingAccept) Accept(ctx context.Context, _ *v1alpha1.CustomerMembership, _ int32, _ time.Time) error {
	<-ctx.Done()
	s.ended <- ctx.Err()
	return ctx.Err()
}

// TestAcceptEndsBeforeTheAnswerIsCutOff: the accept's API call has a deadline of
// its own, inside the server's WriteTimeout, so that it cannot commit after the
// person was shown an error.
func TestAcceptEndsBeforeTheAnswerIsCutOff(t *testing.T) {
	g := NewWithT(t)
	store := blockingAccept{fakeStore: newFakeStore(testMembership(), testCustomer()), ended: make(chan error, 1)}
	p := newTestPortal(t, store.fakeStore, func(o *Options) { o.Store = store; o.APITimeout = 50 * time.Millisecond })

	g.Expect(p.post(tokenOf(testMembership(), 2)).code).To(Equal(http.StatusServiceUnavailable))
	g.Expect(<-store.ended).To(MatchError(context.DeadlineExceeded))
	g.Expect(DefaultAPITimeout).To(BeNumerically("<", 10*time.Second), "inside the server's WriteTimeout")
}
