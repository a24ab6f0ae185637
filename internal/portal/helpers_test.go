package portal

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/invitation"
)

var (
	testKey  = bytes.Repeat([]byte{0x5a}, invitation.MinKeyLen)
	testUID  = types.UID("0b6f8a8e-8d1c-4b4e-9c7a-2f1e3d4c5b6a")
	sentTime = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)
	expiry   = sentTime.Add(168 * time.Hour)
)

func testCustomer() *v1alpha1.Customer {
	return &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: "acme", UID: "customer-uid"},
		Spec:       v1alpha1.CustomerSpec{Identifier: "acme", DisplayName: "ACME Rockets & <Co>"},
	}
}

// testMembership is invited in round 2, sent at sentTime, not accepted.
func testMembership() *v1alpha1.CustomerMembership {
	return &v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: "acme-alice", UID: testUID},
		Spec: v1alpha1.CustomerMembershipSpec{
			Customer:   "acme",
			Email:      "alice@example.com",
			Role:       v1alpha1.RoleEditor,
			Invitation: v1alpha1.InvitationEmail,
		},
		Status: v1alpha1.CustomerMembershipStatus{
			Username: "oidc:alice@example.com",
			Invitation: &v1alpha1.InvitationStatus{
				Round:      2,
				SentTime:   &metav1.Time{Time: sentTime},
				ExpiryTime: &metav1.Time{Time: expiry},
				Attempts:   1,
			},
		},
	}
}

func tokenOf(m *v1alpha1.CustomerMembership, round int32) string {
	return invitation.Token(testKey, invitation.Claim{Name: m.Name, UID: m.UID, Round: round})
}

// fakeStore is an in-memory Store.
type fakeStore struct {
	mu          sync.Mutex
	memberships map[types.UID]*v1alpha1.CustomerMembership
	// cached, when set, is what Membership (the cache) returns instead of
	// memberships (the API server, FreshMembership): a cache that is behind.
	cached     map[types.UID]*v1alpha1.CustomerMembership
	freshReads int
	customers  map[string]*v1alpha1.Customer
	err        error  // returned by every call when set
	panicWith  string // panics in Membership when set
	accepts    int
}

func newFakeStore(objs ...any) *fakeStore {
	s := &fakeStore{memberships: map[types.UID]*v1alpha1.CustomerMembership{}, customers: map[string]*v1alpha1.Customer{}}
	for _, o := range objs {
		switch o := o.(type) {
		case *v1alpha1.CustomerMembership:
			s.memberships[o.UID] = o
		case *v1alpha1.Customer:
			s.customers[o.Name] = o
		default:
			panic(fmt.Sprintf("unexpected %T", o))
		}
	}
	return s
}

func (s *fakeStore) Membership(_ context.Context, name string, uid types.UID) (*v1alpha1.CustomerMembership, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.panicWith != "" {
		panic(s.panicWith)
	}
	if s.err != nil {
		return nil, s.err
	}
	view := s.memberships
	if s.cached != nil {
		view = s.cached
	}
	m, ok := view[uid]
	if !ok || m.Name != name {
		return nil, ErrNotFound
	}
	return m.DeepCopy(), nil
}

func (s *fakeStore) FreshMembership(_ context.Context, name string, uid types.UID) (*v1alpha1.CustomerMembership, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.freshReads++
	if s.err != nil {
		return nil, s.err
	}
	m, ok := s.memberships[uid]
	if !ok || m.Name != name {
		return nil, ErrNotFound
	}
	return m.DeepCopy(), nil
}

func (s *fakeStore) Customer(_ context.Context, name string) (*v1alpha1.Customer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	c, ok := s.customers[name]
	if !ok {
		return nil, ErrNotFound
	}
	return c.DeepCopy(), nil
}

func (s *fakeStore) Accept(_ context.Context, m *v1alpha1.CustomerMembership, round int32, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	stored, ok := s.memberships[m.UID]
	if !ok {
		return ErrNotFound
	}
	if err := CheckInvitation(stored, round, now); err != nil {
		return err
	}
	stored.Status.AcceptedTime = &metav1.Time{Time: now}
	stored.Status.AcceptedRound = round
	s.accepts++
	return nil
}

func (s *fakeStore) membership(uid types.UID) *v1alpha1.CustomerMembership {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.memberships[uid].DeepCopy()
}

// logBuffer collects log lines, so tests can check that no token is ever logged.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.lines = append(b.lines, prefix+" "+args)
	}, funcr.Options{Verbosity: 10})
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

type testPortal struct {
	*Server
	store *fakeStore
	clock *clocktesting.FakePassiveClock
	logs  *logBuffer
}

func newTestPortal(t *testing.T, store *fakeStore, mutate ...func(*Options)) *testPortal {
	t.Helper()
	clk := clocktesting.NewFakePassiveClock(sentTime.Add(time.Hour))
	logs := &logBuffer{}
	opts := Options{Key: testKey, Store: store, Clock: clk, Logger: logs.logger()}
	for _, f := range mutate {
		f(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &testPortal{Server: s, store: store, clock: clk, logs: logs}
}
