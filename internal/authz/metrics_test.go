package authz

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
)

// fakeReviews answers TokenReviews from a token table and SubjectAccessReviews
// from a set of allowed users, counting the reviews.
type fakeReviews struct {
	mu        sync.Mutex
	users     map[string]authenticationv1.UserInfo
	allowed   map[string]bool
	fail      error
	tokens    int
	access    int
	lastSpecs []authorizationv1.SubjectAccessReviewSpec
}

func (f *fakeReviews) guard(now func() time.Time) *MetricsGuard {
	return &MetricsGuard{
		Now: now,
		ReviewToken: func(_ context.Context, token string) (*authenticationv1.TokenReviewStatus, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.tokens++
			if f.fail != nil {
				return nil, f.fail
			}
			user, ok := f.users[token]
			return &authenticationv1.TokenReviewStatus{Authenticated: ok, User: user}, nil
		},
		ReviewAccess: func(_ context.Context, spec authorizationv1.SubjectAccessReviewSpec) (*authorizationv1.SubjectAccessReviewStatus, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.access++
			f.lastSpecs = append(f.lastSpecs, spec)
			if f.allowed[spec.User] {
				return &authorizationv1.SubjectAccessReviewStatus{Allowed: true}, nil
			}
			return &authorizationv1.SubjectAccessReviewStatus{Reason: "no RBAC policy matched"}, nil
		},
	}
}

func (f *fakeReviews) counts() (tokens, access int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokens, f.access
}

func serve(t *testing.T, g *MetricsGuard, authorization string) (int, string) {
	t.Helper()
	h, err := g.Filter(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("metrics"))
	}))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestMetricsGuardRefusesWithoutABearerToken(t *testing.T) {
	f := &fakeReviews{}
	g := f.guard(nil)
	for _, header := range []string{"", "Basic dXNlcjpwdw==", "Bearer", "Bearer   "} {
		if code, _ := serve(t, g, header); code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: got %d, want 401", header, code)
		}
	}
	if tokens, access := f.counts(); tokens+access != 0 {
		t.Errorf("a request without a token made %d TokenReviews and %d SubjectAccessReviews, want none", tokens, access)
	}
}

func TestMetricsGuardAuthenticatesThenAuthorizes(t *testing.T) {
	f := &fakeReviews{
		users: map[string]authenticationv1.UserInfo{
			"scraper-token":  {Username: "system:serviceaccount:monitoring:prometheus", UID: "u1", Groups: []string{"system:serviceaccounts"}, Extra: map[string]authenticationv1.ExtraValue{"k": {"v"}}},
			"stranger-token": {Username: "stranger"},
		},
		allowed: map[string]bool{"system:serviceaccount:monitoring:prometheus": true},
	}
	g := f.guard(nil)

	if code, _ := serve(t, g, "Bearer unknown"); code != http.StatusUnauthorized {
		t.Errorf("unknown token: got %d, want 401", code)
	}
	code, body := serve(t, g, "Bearer stranger-token")
	if code != http.StatusForbidden || !strings.Contains(body, `user "stranger" may not get "/metrics"`) || !strings.Contains(body, "no RBAC policy matched") {
		t.Errorf("stranger: got %d %q, want 403 naming the user, the verb, the path and the reason", code, body)
	}
	if code, body := serve(t, g, "bearer scraper-token"); code != http.StatusOK || body != "metrics" {
		t.Errorf("scraper: got %d %q, want 200 and the metrics", code, body)
	}
	spec := f.lastSpecs[len(f.lastSpecs)-1]
	if spec.NonResourceAttributes == nil || spec.NonResourceAttributes.Path != "/metrics" || spec.NonResourceAttributes.Verb != "get" ||
		spec.ResourceAttributes != nil || spec.UID != "u1" || len(spec.Groups) != 1 || spec.Extra["k"][0] != "v" {
		t.Errorf("SubjectAccessReview spec %+v: want the whole user and get on the non-resource URL /metrics", spec)
	}
}

func TestMetricsGuardCachesAnswersForTheirTTL(t *testing.T) {
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	f := &fakeReviews{
		users:   map[string]authenticationv1.UserInfo{"scraper": {Username: "prometheus"}, "stranger": {Username: "stranger"}},
		allowed: map[string]bool{"prometheus": true},
	}
	g := f.guard(clock)
	for range 3 {
		serve(t, g, "Bearer scraper")
		serve(t, g, "Bearer stranger")
		serve(t, g, "Bearer unknown")
	}
	if tokens, access := f.counts(); tokens != 3 || access != 2 {
		t.Fatalf("three rounds of three scrapes made %d TokenReviews and %d SubjectAccessReviews, want 3 and 2", tokens, access)
	}
	// Past the refusal's 30 s: the stranger is asked about again, the scraper not.
	now = now.Add(denyTTL)
	serve(t, g, "Bearer scraper")
	serve(t, g, "Bearer stranger")
	if _, access := f.counts(); access != 3 {
		t.Errorf("after %s: %d SubjectAccessReviews, want 3 (the refusal asked again, the permission cached)", denyTTL, access)
	}
	// Past the token's minute: every token is reviewed again.
	now = now.Add(tokenTTL)
	serve(t, g, "Bearer scraper")
	if tokens, _ := f.counts(); tokens != 4 {
		t.Errorf("after %s: %d TokenReviews, want 4", tokenTTL, tokens)
	}
	now = now.Add(allowTTL)
	serve(t, g, "Bearer scraper")
	if _, access := f.counts(); access != 4 {
		t.Errorf("after %s: %d SubjectAccessReviews, want 4 (the permission asked again)", allowTTL, access)
	}
}

func TestMetricsGuardDoesNotCacheErrors(t *testing.T) {
	f := &fakeReviews{
		users:   map[string]authenticationv1.UserInfo{"scraper": {Username: "prometheus"}},
		allowed: map[string]bool{"prometheus": true},
		fail:    errors.New("connection refused"),
	}
	g := f.guard(nil)
	if code, _ := serve(t, g, "Bearer scraper"); code != http.StatusInternalServerError {
		t.Errorf("review failing: got %d, want 500", code)
	}
	f.mu.Lock()
	f.fail = nil
	f.mu.Unlock()
	if code, _ := serve(t, g, "Bearer scraper"); code != http.StatusOK {
		t.Errorf("review back: got %d, want 200 (the error was not cached)", code)
	}
}
