package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authenticationclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authorizationclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// How long the metrics guard keeps an answer, as controller-runtime's
// filters.WithAuthenticationAndAuthorization does: a token's identity for a
// minute, an allowed scrape for five, a refused one for thirty seconds.
const (
	tokenTTL = time.Minute
	allowTTL = 5 * time.Minute
	denyTTL  = 30 * time.Second
)

// MetricsFilter is the metrics server's FilterProvider for --metrics-secure: a
// scrape must carry a bearer token that the API server authenticates (TokenReview)
// and whose user may use the request's verb on its path (a SubjectAccessReview of
// the non-resource URL, "get /metrics" for a scrape), else it is answered 401 or 403.
//
// It does what controller-runtime's filters.WithAuthenticationAndAuthorization
// does, with the same cache lifetimes, in the two reviews that filter makes through
// k8s.io/apiserver. That library (with CEL, gRPC and OpenTelemetry, which it brings)
// was 10.5 MB of the manager's 55 MB of code and read-only data, which the kernel
// maps into the process as it runs: resident memory paid by every replica for one
// scrape a minute (docs/benchmarks.md).
func MetricsFilter(cfg *rest.Config, hc *http.Client) (metricsserver.Filter, error) {
	authn, err := authenticationclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("metrics authentication: %w", err)
	}
	authzClient, err := authorizationclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("metrics authorization: %w", err)
	}
	g := &MetricsGuard{
		ReviewToken: func(ctx context.Context, token string) (*authenticationv1.TokenReviewStatus, error) {
			review, err := authn.TokenReviews().Create(ctx,
				&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
			if err != nil {
				return nil, err
			}
			return &review.Status, nil
		},
		ReviewAccess: func(ctx context.Context, spec authorizationv1.SubjectAccessReviewSpec) (*authorizationv1.SubjectAccessReviewStatus, error) {
			review, err := authzClient.SubjectAccessReviews().Create(ctx,
				&authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
			if err != nil {
				return nil, err
			}
			return &review.Status, nil
		},
	}
	return g.Filter, nil
}

// MetricsGuard authenticates and authorizes scrapes with the API server's reviews,
// caching the answers. MetricsFilter builds it with the API server's clients.
type MetricsGuard struct {
	// ReviewToken asks who a bearer token belongs to (a TokenReview).
	ReviewToken func(ctx context.Context, token string) (*authenticationv1.TokenReviewStatus, error)
	// ReviewAccess asks whether a user may do something (a SubjectAccessReview).
	ReviewAccess func(ctx context.Context, spec authorizationv1.SubjectAccessReviewSpec) (*authorizationv1.SubjectAccessReviewStatus, error)
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	tokens answers[*authenticationv1.UserInfo]
	access answers[accessAnswer]
}

type accessAnswer struct {
	allowed bool
	reason  string
}

// Filter wraps the metrics handler: a metricsserver.Filter.
func (g *MetricsGuard) Filter(log logr.Logger, next http.Handler) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ctx := req.Context()
		token, ok := bearerToken(req)
		if !ok {
			http.Error(w, "Unauthorized: a bearer token is required", http.StatusUnauthorized)
			return
		}
		user, err := g.authenticate(ctx, token)
		if err != nil {
			log.Error(err, "Could not authenticate a metrics request")
			http.Error(w, "Authentication failed", http.StatusInternalServerError)
			return
		}
		if user == nil {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		verb, path := strings.ToLower(req.Method), req.URL.Path
		answer, err := g.authorize(ctx, user, verb, path)
		if err != nil {
			log.Error(err, "Could not authorize a metrics request", "user", user.Username, "verb", verb, "path", path)
			http.Error(w, "Authorization failed", http.StatusInternalServerError)
			return
		}
		if !answer.allowed {
			msg := fmt.Sprintf("Forbidden: user %q may not %s %q (bind the ClusterRole customer-operator-metrics-reader)", user.Username, verb, path)
			if answer.reason != "" {
				msg += ": " + answer.reason
			}
			http.Error(w, msg, http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, req)
	}), nil
}

// authenticate returns the token's user, or nil when the API server does not
// accept the token.
func (g *MetricsGuard) authenticate(ctx context.Context, token string) (*authenticationv1.UserInfo, error) {
	sum := sha256.Sum256([]byte(token))
	return g.tokens.get(ctx, g.now, hex.EncodeToString(sum[:]), func(ctx context.Context) (*authenticationv1.UserInfo, time.Duration, error) {
		status, err := g.ReviewToken(ctx, token)
		if err != nil {
			return nil, 0, fmt.Errorf("reviewing a bearer token: %w", err)
		}
		if !status.Authenticated {
			return nil, tokenTTL, nil
		}
		user := status.User
		return &user, tokenTTL, nil
	})
}

// authorize asks whether user may use verb on the non-resource URL path.
func (g *MetricsGuard) authorize(ctx context.Context, user *authenticationv1.UserInfo, verb, path string) (accessAnswer, error) {
	key := cacheKey(*user) + "|" + verb + " " + path
	return g.access.get(ctx, g.now, key, func(ctx context.Context) (accessAnswer, time.Duration, error) {
		extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
		for k, v := range user.Extra {
			extra[k] = authorizationv1.ExtraValue(v)
		}
		status, err := g.ReviewAccess(ctx, authorizationv1.SubjectAccessReviewSpec{
			User:                  user.Username,
			UID:                   user.UID,
			Groups:                user.Groups,
			Extra:                 extra,
			NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
		})
		if err != nil {
			return accessAnswer{}, 0, fmt.Errorf("asking the authorizer whether %q may %s %q: %w", user.Username, verb, path, err)
		}
		if status.Allowed && !status.Denied {
			return accessAnswer{allowed: true}, allowTTL, nil
		}
		return accessAnswer{reason: status.Reason}, denyTTL, nil
	})
}

func (g *MetricsGuard) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// bearerToken returns the token of an "Authorization: Bearer <token>" header.
func bearerToken(req *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(req.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// answers caches the answers to one kind of review for the TTL each answer comes
// with; concurrent questions with one key share one review, which runs detached from
// the request that started it (reviewTimeout) so that its cancellation fails no
// other. Errors are not cached.
type answers[V any] struct {
	mu     sync.Mutex
	cache  map[string]timed[V]
	flight singleflight.Group
}

type timed[V any] struct {
	value   V
	expires time.Time
}

func (a *answers[V]) get(ctx context.Context, now func() time.Time, key string, review func(context.Context) (V, time.Duration, error)) (V, error) {
	if v, ok := a.cached(now, key); ok {
		return v, nil
	}
	result := a.flight.DoChan(key, func() (any, error) {
		// A flight that began after another ended finds that one's answer.
		if v, ok := a.cached(now, key); ok {
			return v, nil
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reviewTimeout)
		defer cancel()
		v, ttl, err := review(ctx)
		if err == nil && ttl > 0 {
			a.mu.Lock()
			if a.cache == nil || len(a.cache) >= maxCacheEntries {
				a.cache = make(map[string]timed[V])
			}
			a.cache[key] = timed[V]{value: v, expires: now().Add(ttl)}
			a.mu.Unlock()
		}
		return v, err
	})
	select {
	case r := <-result:
		if r.Err != nil {
			var zero V
			return zero, r.Err
		}
		return r.Val.(V), nil
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

func (a *answers[V]) cached(now func() time.Time, key string) (V, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.cache[key]
	if !ok || !now().Before(t.expires) {
		var zero V
		return zero, false
	}
	return t.value, true
}
