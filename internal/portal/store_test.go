package portal

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return scheme
}

// newClientStore is a ClientStore over controller-runtime's fake client with the
// status subresource, as in a real manager.
func newClientStore(t *testing.T, funcs *interceptor.Funcs, objs ...client.Object) (*ClientStore, client.Client) {
	t.Helper()
	b := fake.NewClientBuilder().
		WithScheme(newScheme(t)).
		WithStatusSubresource(&v1alpha1.CustomerMembership{}, &v1alpha1.Customer{}).
		WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	c := b.Build()
	return &ClientStore{Client: c}, c
}

func getMembership(t *testing.T, c client.Client, name string) *v1alpha1.CustomerMembership {
	t.Helper()
	var m v1alpha1.CustomerMembership
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, &m); err != nil {
		t.Fatal(err)
	}
	return &m
}

func TestClientStoreLookups(t *testing.T) {
	g := NewWithT(t)
	other := testMembership()
	other.Name, other.UID = "acme-bob", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
	store, _ := newClientStore(t, nil, testMembership(), other, testCustomer())
	ctx := context.Background()

	m, err := store.Membership(ctx, "acme-alice", testUID)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(m.UID).To(Equal(testUID))

	m, err = store.Membership(ctx, "acme-bob", other.UID)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(m.UID).To(Equal(other.UID))

	_, err = store.Membership(ctx, "acme-carol", "11111111-2222-4333-8444-555555555555")
	g.Expect(err).To(MatchError(ErrNotFound))

	_, err = store.Membership(ctx, "acme-alice", other.UID)
	g.Expect(err).To(MatchError(ErrNotFound), "the name's object has another UID: deleted and created again")

	c, err := store.Customer(ctx, "acme")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(c.Spec.DisplayName).To(Equal("ACME Rockets & <Co>"))

	_, err = store.Customer(ctx, "globex")
	g.Expect(err).To(MatchError(ErrNotFound))
}

func TestClientStoreLookupErrorsAreWrapped(t *testing.T) {
	g := NewWithT(t)
	boom := errors.New("apiserver unreachable")
	store, _ := newClientStore(t, &interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return boom
		},
	})
	_, err := store.Membership(context.Background(), "acme-alice", testUID)
	g.Expect(err).To(MatchError(boom))
	g.Expect(err).NotTo(MatchError(ErrNotFound))
	_, err = store.Customer(context.Background(), "acme")
	g.Expect(err).To(MatchError(boom))
}

func TestClientStoreAccept(t *testing.T) {
	g := NewWithT(t)
	store, c := newClientStore(t, nil, testMembership(), testCustomer())
	ctx := context.Background()
	now := sentTime.Add(time.Hour)

	m, err := store.Membership(ctx, "acme-alice", testUID)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(store.Accept(ctx, m, 2, now)).To(Succeed())

	stored := getMembership(t, c, "acme-alice")
	g.Expect(stored.Status.AcceptedTime.Time).To(BeTemporally("==", now))
	g.Expect(stored.Status.AcceptedRound).To(Equal(int32(2)))
	g.Expect(equality.Semantic.DeepEqual(stored.Status.Invitation, testMembership().Status.Invitation)).To(BeTrue(), "the rest of status untouched")
	g.Expect(stored.Spec).To(Equal(testMembership().Spec), "never the spec")
	g.Expect(m.Status.AcceptedTime).To(BeNil(), "the caller's object is not modified")

	g.Expect(store.Accept(ctx, m, 2, now)).To(MatchError(ErrAlreadyAccepted), "single use, even with a stale copy")
}

// TestClientStoreAcceptRetriesConflicts: another writer (the controller) patches
// the status between our read and our patch. The optimistic lock makes our patch
// fail; Accept re-reads and succeeds without losing the other write.
func TestClientStoreAcceptRetriesConflicts(t *testing.T) {
	g := NewWithT(t)
	var once sync.Once
	funcs := &interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			once.Do(func() {
				other := getMembership(t, c, obj.GetName())
				other.Status.ObservedGeneration = 7
				g.Expect(c.Status().Update(ctx, other)).To(Succeed())
			})
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}
	store, c := newClientStore(t, funcs, testMembership(), testCustomer())
	ctx := context.Background()

	m, err := store.Membership(ctx, "acme-alice", testUID)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(store.Accept(ctx, m, 2, sentTime.Add(time.Hour))).To(Succeed())

	stored := getMembership(t, c, "acme-alice")
	g.Expect(stored.Status.AcceptedRound).To(Equal(int32(2)))
	g.Expect(stored.Status.ObservedGeneration).To(Equal(int64(7)), "the concurrent write survives")
}

func TestClientStoreAcceptRechecksAfterConflict(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*v1alpha1.CustomerMembership)
		wantErr error
	}{
		{
			name: "accepted meanwhile (second click, second replica)",
			change: func(m *v1alpha1.CustomerMembership) {
				m.Status.AcceptedTime = &metav1.Time{Time: sentTime}
				m.Status.AcceptedRound = 2
			},
			wantErr: ErrAlreadyAccepted,
		},
		{
			name:    "a new round started meanwhile",
			change:  func(m *v1alpha1.CustomerMembership) { m.Status.Invitation.Round = 3 },
			wantErr: ErrReplaced,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			store, c := newClientStore(t, nil, testMembership(), testCustomer())
			ctx := context.Background()
			m, err := store.Membership(ctx, "acme-alice", testUID) // the portal's read...
			g.Expect(err).NotTo(HaveOccurred())

			changed := getMembership(t, c, "acme-alice") // ...then someone else writes
			tt.change(changed)
			g.Expect(c.Status().Update(ctx, changed)).To(Succeed())

			g.Expect(store.Accept(ctx, m, 2, sentTime.Add(time.Hour))).To(MatchError(tt.wantErr))
			g.Expect(getMembership(t, c, "acme-alice").Status).To(Equal(changed.Status), "nothing overwritten")
		})
	}
}

func TestClientStoreAcceptGoneMembership(t *testing.T) {
	g := NewWithT(t)
	store, c := newClientStore(t, nil, testMembership(), testCustomer())
	ctx := context.Background()
	m, err := store.Membership(ctx, "acme-alice", testUID)
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(c.Delete(ctx, m.DeepCopy())).To(Succeed())
	g.Expect(store.Accept(ctx, m, 2, sentTime.Add(time.Hour))).To(MatchError(ErrNotFound))
}

func TestClientStoreAcceptRecreatedMembership(t *testing.T) {
	g := NewWithT(t)
	store, c := newClientStore(t, nil, testMembership(), testCustomer())
	ctx := context.Background()
	m, err := store.Membership(ctx, "acme-alice", testUID)
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(c.Delete(ctx, m.DeepCopy())).To(Succeed())
	recreated := testMembership()
	recreated.UID = types.UID("99999999-2222-4333-8444-555555555555")
	g.Expect(c.Create(ctx, recreated)).To(Succeed())

	g.Expect(store.Accept(ctx, m, 2, sentTime.Add(time.Hour))).To(MatchError(ErrNotFound), "same name, another membership")
}

func TestClientStoreAcceptReportsOtherErrors(t *testing.T) {
	g := NewWithT(t)
	funcs := &interceptor.Funcs{
		SubResourcePatch: func(context.Context, client.Client, string, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
			return apierrors.NewForbidden(v1alpha1.GroupVersion.WithResource("customermemberships").GroupResource(), "acme-alice", errors.New("no"))
		},
	}
	store, _ := newClientStore(t, funcs, testMembership(), testCustomer())
	m := testMembership()
	err := store.Accept(context.Background(), m, 2, sentTime.Add(time.Hour))
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue())
	g.Expect(err).To(MatchError(ContainSubstring(`recording acceptance of membership "acme-alice"`)))
}

// TestPortalWithClientStore runs the handler against the client-backed store: the
// whole acceptance as the manager wires it, short of a real API server.
func TestPortalWithClientStore(t *testing.T) {
	g := NewWithT(t)
	store, c := newClientStore(t, nil, testMembership(), testCustomer())
	p, err := New(Options{Key: testKey, Store: store, Clock: newTestPortal(t, newFakeStore()).clock})
	g.Expect(err).NotTo(HaveOccurred())
	tp := &testPortal{Server: p}

	token := tokenOf(testMembership(), 2)
	g.Expect(tp.get(tokenOf(testMembership(), 1)).code).To(Equal(http.StatusGone))
	g.Expect(tp.get(token).code).To(Equal(http.StatusOK))
	g.Expect(tp.post(token).code).To(Equal(http.StatusOK))
	g.Expect(getMembership(t, c, "acme-alice").Status.AcceptedRound).To(Equal(int32(2)))
	g.Expect(tp.post(token).code).To(Equal(http.StatusConflict))
	g.Expect(tp.get(tokenOf(testMembership(), 1)).code).To(Equal(http.StatusConflict), "once accepted, every link says so")
}
