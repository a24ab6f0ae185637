package authz

import (
	"context"
	"fmt"
	"sync"
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

func TestSARCheckerAsksOnceForConcurrentQuestions(t *testing.T) {
	g := NewWithT(t)
	var mu sync.Mutex
	asked := 0
	release := make(chan struct{})
	authorizer := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(_ context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
			mu.Lock()
			asked++
			mu.Unlock()
			<-release
			obj.(*authorizationv1.SubjectAccessReview).Status.Allowed = true
			return nil
		},
	}).Build()
	checker := &SARChecker{Client: authorizer, TTL: 10 * time.Second}
	askedSoFar := func() int { mu.Lock(); defer mu.Unlock(); return asked }

	// A burst of one requester's admissions: all ask before the first answer.
	const callers = 20
	answers := make(chan error, callers)
	for range callers {
		go func() {
			partner, err := checker.IsPartner(context.Background(), authenticationv1.UserInfo{Username: "partner"})
			if err == nil && !partner {
				err = fmt.Errorf("not a partner")
			}
			answers <- err
		}()
	}
	g.Eventually(askedSoFar).Should(Equal(1))
	time.Sleep(100 * time.Millisecond) // room for the others to ask too
	close(release)
	for range callers {
		g.Expect(<-answers).To(Succeed())
	}
	g.Expect(askedSoFar()).To(Equal(1), "concurrent questions about one requester share one review")
}

func TestSARCheckerCallerGivesUpAloneOnCancel(t *testing.T) {
	g := NewWithT(t)
	release := make(chan struct{})
	authorizer := fake.NewClientBuilder().WithScheme(scheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			obj.(*authorizationv1.SubjectAccessReview).Status.Allowed = true
			return nil
		},
	}).Build()
	checker := &SARChecker{Client: authorizer, TTL: 10 * time.Second}
	user := authenticationv1.UserInfo{Username: "partner"}

	// The request that starts the review is cancelled: it fails, the review goes on
	// for another request waiting on it.
	first, cancel := context.WithCancel(context.Background())
	failed := make(chan error, 1)
	go func() { _, err := checker.IsPartner(first, user); failed <- err }()
	second := make(chan bool, 1)
	time.Sleep(50 * time.Millisecond)
	go func() { ok, _ := checker.IsPartner(context.Background(), user); second <- ok }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	g.Expect(<-failed).To(MatchError(context.Canceled))
	close(release)
	g.Expect(<-second).To(BeTrue(), "the review outlives the request that started it")
}
