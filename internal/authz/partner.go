// Package authz answers "is this requester a partner?" the way DESIGN.md defines it:
// a requester is a partner when the cluster's authorizer allows them to create
// customers. Asking the authorizer (SubjectAccessReview) rather than matching group
// names keeps every RBAC layout working: cluster-admins, the shipped
// customer-operator-partner ClusterRole, GitOps service accounts.
package authz

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// PartnerChecker decides whether a requester is a partner.
type PartnerChecker interface {
	IsPartner(ctx context.Context, user authenticationv1.UserInfo) (bool, error)
}

// SARChecker asks the API server with a SubjectAccessReview. Answers are cached for
// a short TTL (like the API server's own webhook authorizer cache), and concurrent
// questions about one requester share one review, so that a burst of admissions by
// one requester costs one review, however many of its requests arrive at once.
type SARChecker struct {
	Client client.Client
	TTL    time.Duration
	Now    func() time.Time

	answers answers[bool]
}

// reviewTimeout bounds a shared review: it runs detached from the request that
// started it, so that this request's cancellation does not fail the others.
const reviewTimeout = 10 * time.Second

// maxCacheEntries bounds an answer cache; past it the cache is simply reset.
const maxCacheEntries = 10000

// IsPartner reports whether user may create customers.
func (s *SARChecker) IsPartner(ctx context.Context, user authenticationv1.UserInfo) (bool, error) {
	allowed, err := s.answers.get(ctx, s.now, cacheKey(user), func(ctx context.Context) (bool, time.Duration, error) {
		allowed, err := s.review(ctx, user)
		return allowed, s.TTL, err
	})
	if err != nil && ctx.Err() != nil {
		return false, fmt.Errorf("asking the authorizer whether %q is a partner: %w", user.Username, err)
	}
	return allowed, err
}

// review asks the API server whether user may create customers.
func (s *SARChecker) review(ctx context.Context, user authenticationv1.UserInfo) (bool, error) {
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	review := &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user.Username,
			UID:    user.UID,
			Groups: user.Groups,
			Extra:  extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Group:    v1alpha1.GroupVersion.Group,
				Resource: "customers",
				Verb:     "create",
			},
		},
	}
	if err := s.Client.Create(ctx, review); err != nil {
		return false, fmt.Errorf("asking the authorizer whether %q is a partner: %w", user.Username, err)
	}
	return review.Status.Allowed, nil
}

func (s *SARChecker) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func cacheKey(user authenticationv1.UserInfo) string {
	return fmt.Sprintf("%q|%q|%q|%v", user.Username, user.UID, user.Groups, user.Extra)
}
