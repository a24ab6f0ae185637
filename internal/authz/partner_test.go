package authz

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// fakeAuthorizer answers SubjectAccessReviews: partners are the users in allowed.
// It records every review it was asked.
func fakeAuthorizer(allowed map[string]bool, asked *[]authorizationv1.SubjectAccessReviewSpec) client.Client {
	return fake.NewClientBuilder().WithScheme(scheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(_ context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
			review := obj.(*authorizationv1.SubjectAccessReview)
			*asked = append(*asked, review.Spec)
			review.Status.Allowed = allowed[review.Spec.User]
			return nil
		},
	}).Build()
}

func TestSARCheckerAsksForCreateCustomers(t *testing.T) {
	g := NewWithT(t)
	var asked []authorizationv1.SubjectAccessReviewSpec
	checker := &SARChecker{Client: fakeAuthorizer(map[string]bool{"partner": true}, &asked)}

	user := authenticationv1.UserInfo{Username: "partner", UID: "u1", Groups: []string{"ops"},
		Extra: map[string]authenticationv1.ExtraValue{"scopes": {"a"}}}
	g.Expect(checker.IsPartner(context.Background(), user)).To(BeTrue())
	g.Expect(checker.IsPartner(context.Background(), authenticationv1.UserInfo{Username: "alice"})).To(BeFalse())

	g.Expect(asked).To(HaveLen(2))
	g.Expect(asked[0].User).To(Equal("partner"))
	g.Expect(asked[0].UID).To(Equal("u1"))
	g.Expect(asked[0].Groups).To(Equal([]string{"ops"}))
	g.Expect(asked[0].Extra).To(HaveKeyWithValue("scopes", authorizationv1.ExtraValue{"a"}))
	g.Expect(*asked[0].ResourceAttributes).To(Equal(authorizationv1.ResourceAttributes{
		Group: "customers.partnerops.io", Resource: "customers", Verb: "create"}))
}

func TestSARCheckerCachesForTTLOnly(t *testing.T) {
	g := NewWithT(t)
	var asked []authorizationv1.SubjectAccessReviewSpec
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	checker := &SARChecker{
		Client: fakeAuthorizer(map[string]bool{"partner": true}, &asked),
		TTL:    10 * time.Second,
		Now:    func() time.Time { return now },
	}
	partner := authenticationv1.UserInfo{Username: "partner"}
	for range 3 {
		g.Expect(checker.IsPartner(context.Background(), partner)).To(BeTrue())
	}
	g.Expect(asked).To(HaveLen(1), "answers within the TTL come from the cache")

	// Another group set is another requester.
	g.Expect(checker.IsPartner(context.Background(), authenticationv1.UserInfo{Username: "partner", Groups: []string{"x"}})).To(BeTrue())
	g.Expect(asked).To(HaveLen(2))

	now = now.Add(11 * time.Second)
	g.Expect(checker.IsPartner(context.Background(), partner)).To(BeTrue())
	g.Expect(asked).To(HaveLen(3), "an expired answer is asked again")
}
