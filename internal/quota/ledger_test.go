package quota

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// newLedger returns a ledger over a fake API server holding objs, with both its
// readers and its writer on it (the fake checks resourceVersion preconditions, so
// the optimistic lock is real).
func newLedger(t *testing.T, funcs *interceptor.Funcs, objs ...client.Object) (*Ledger, client.Client) {
	b := fake.NewClientBuilder().WithScheme(testScheme(t)).
		WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.Customer{}).
		WithIndex(&corev1.Namespace{}, NamespaceCustomerIndex, func(o client.Object) []string {
			return IndexNamespaceByCustomer(o.(*corev1.Namespace))
		})
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	c := b.Build()
	return &Ledger{
		APIReader: c, Client: c, Cache: c,
		DefaultMaxProjects: 10,
		TTL:                time.Minute,
		OperatorNamespace:  "customer-operator-system",
		Now:                func() time.Time { return t0 },
	}, c
}

// countPatches counts the ledger's status writes and the conflicts among them.
func countPatches(writes, conflicts *atomic.Int32) *interceptor.Funcs {
	return &interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			writes.Add(1)
			err := c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			if apierrors.IsConflict(err) {
				conflicts.Add(1)
			}
			return err
		},
	}
}

func project(name, customer string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.CustomerLabel: customer}}}
}

func TestLedgerAdmitsExactlyTheQuotaUnderConcurrency(t *testing.T) {
	g := NewWithT(t)
	// Batching makes the ledger the only writer of a customer within a replica:
	// concurrent requests never conflict with each other.
	var writes, conflicts atomic.Int32
	funcs := countPatches(&writes, &conflicts)
	ledger, c := newLedger(t, funcs, customerWith(0))

	var admitted, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: fmt.Sprintf("acme-%d", i)})
			g.Expect(err).NotTo(HaveOccurred())
			if d.Allowed() {
				admitted.Add(1)
				return
			}
			g.Expect(d.Outcome).To(Equal(OverQuota))
			g.Expect(d.Message()).To(Equal(`customer "acme" has 10 of 10 projects (default quota); ask your partner to raise spec.maxProjects`))
			refused.Add(1)
		})
	}
	wg.Wait()
	g.Expect(admitted.Load()).To(Equal(int32(10)))
	g.Expect(refused.Load()).To(Equal(int32(90)))
	g.Expect(conflicts.Load()).To(BeZero())
	g.Expect(writes.Load()).To(BeNumerically("<=", 10), "one write per batch, and only batches that reserve write")

	var customer v1alpha1.Customer
	g.Expect(c.Get(context.Background(), client.ObjectKey{Name: "acme"}, &customer)).To(Succeed())
	g.Expect(customer.Status.Reservations).To(HaveLen(10))
	for _, r := range customer.Status.Reservations {
		g.Expect(r.ExpiresAt.Time.Equal(t0.Add(time.Minute))).To(BeTrue(), "expires TTL after now: %v", r.ExpiresAt)
	}
}

func TestLedgerReadsTheQuotaAndLiveProjects(t *testing.T) {
	g := NewWithT(t)
	deleting := metav1.NewTime(t0)
	terminating := project("acme-old", "acme")
	terminating.DeletionTimestamp = &deleting
	terminating.Finalizers = []string{"kubernetes"}
	quota := &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "acme"},
		Spec: v1alpha1.CustomerQuotaSpec{Customer: "acme", MaxProjects: ptr.To[int32](2)}}
	ledger, _ := newLedger(t, nil, customerWith(1), quota, project("acme-web", "acme"), terminating,
		project("other-web", "other"))

	d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-api"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(Reserved), "the terminating project does not count")

	d, err = ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-db"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(OverQuota))
	g.Expect(d.Message()).To(Equal(`customer "acme" has 2 of 2 projects (CustomerQuota "acme"); ask your partner to raise spec.maxProjects`))

	d, err = ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(AlreadyCounted), "re-creating an existing project is not a quota matter")
}

func TestLedgerCheckReservesNothing(t *testing.T) {
	g := NewWithT(t)
	ledger, c := newLedger(t, nil, customerWith(0))
	d, err := ledger.Check(context.Background(), "acme", Slot{Namespace: "acme-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(Reserved))

	var customer v1alpha1.Customer
	g.Expect(c.Get(context.Background(), client.ObjectKey{Name: "acme"}, &customer)).To(Succeed())
	g.Expect(customer.Status.Reservations).To(BeEmpty())
}

func TestLedgerMissingOrDeletingCustomer(t *testing.T) {
	g := NewWithT(t)
	deleting := customerWith(0)
	deleting.Name = "leaving"
	deleting.DeletionTimestamp = ptr.To(metav1.NewTime(t0))
	deleting.Finalizers = []string{v1alpha1.CustomerFinalizer}
	ledger, _ := newLedger(t, nil, deleting)

	d, err := ledger.Reserve(context.Background(), "nope", Slot{Namespace: "nope-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(CustomerNotFound))

	d, err = ledger.Reserve(context.Background(), "leaving", Slot{Namespace: "leaving-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(CustomerDeleting))
}

// A conflicting write between the read and the write (another replica took the
// last slot) makes the ledger read again and decide again, never overwrite.
func TestLedgerDecidesAgainAfterAConflict(t *testing.T) {
	g := NewWithT(t)
	var raced atomic.Bool
	var ledgerClient client.Client
	funcs := &interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			if !raced.Swap(true) {
				// Another replica reserves the last free slot first.
				var other v1alpha1.Customer
				g.Expect(c.Get(ctx, client.ObjectKeyFromObject(obj), &other)).To(Succeed())
				other.Status.Reservations = append(other.Status.Reservations, reservation("acme-elsewhere", t0.Add(time.Minute)))
				g.Expect(c.Status().Update(ctx, &other)).To(Succeed())
			}
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}
	quota := &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "acme"},
		Spec: v1alpha1.CustomerQuotaSpec{Customer: "acme", MaxProjects: ptr.To[int32](1)}}
	ledger, c := newLedger(t, funcs, customerWith(0), quota)
	ledgerClient = c

	d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(OverQuota), "decided again on the fresh read, which has no free slot")

	var customer v1alpha1.Customer
	g.Expect(ledgerClient.Get(context.Background(), client.ObjectKey{Name: "acme"}, &customer)).To(Succeed())
	g.Expect(customer.Status.Reservations).To(HaveLen(1), "the other replica's reservation is kept, no other added")
	g.Expect(customer.Status.Reservations[0].Namespace).To(Equal("acme-elsewhere"))
}

func TestLedgerGivesUpAfterBoundedConflicts(t *testing.T) {
	g := NewWithT(t)
	funcs := &interceptor.Funcs{
		SubResourcePatch: func(context.Context, client.Client, string, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
			return apierrors.NewConflict(schema.GroupResource{Group: v1alpha1.GroupName, Resource: "customers"}, "acme", fmt.Errorf("changed"))
		},
	}
	ledger, _ := newLedger(t, funcs, customerWith(0))
	_, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-web"})
	g.Expect(apierrors.IsConflict(err)).To(BeTrue(), "got %v", err)
}

// staleCache answers Customer reads with a fixed, older copy and everything else
// from the store: a cache that has not seen the latest writes yet.
type staleCache struct {
	client.Reader
	customer *v1alpha1.Customer
	reads    atomic.Int32
}

func (s *staleCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if c, ok := obj.(*v1alpha1.Customer); ok {
		s.reads.Add(1)
		s.customer.DeepCopyInto(c)
		return nil
	}
	return s.Reader.Get(ctx, key, obj, opts...)
}

func quotaOf(max int32) *v1alpha1.CustomerQuota {
	return &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "acme"},
		Spec: v1alpha1.CustomerQuotaSpec{Customer: "acme", MaxProjects: ptr.To(max)}}
}

// A cache that misses a reservation would admit one project too many: the write
// based on it conflicts, and the decision is taken again from the store.
func TestLedgerStaleCacheMissingAReservationConflicts(t *testing.T) {
	g := NewWithT(t)
	ledger, c := newLedger(t, nil, customerWith(0, reservation("acme-api", t0.Add(time.Minute))), quotaOf(1))
	var stored v1alpha1.Customer
	g.Expect(c.Get(context.Background(), client.ObjectKey{Name: "acme"}, &stored)).To(Succeed())
	stale := customerWith(0)
	stale.ResourceVersion = "1" // older than the store's
	g.Expect(stale.ResourceVersion).NotTo(Equal(stored.ResourceVersion))
	cache := &staleCache{Reader: c, customer: stale}
	ledger.Cache = cache

	d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(OverQuota), "acme-api's reservation holds the only slot")
	g.Expect(cache.reads.Load()).To(Equal(int32(1)), "the cache is tried once, then the store decides")
	g.Expect(c.Get(context.Background(), client.ObjectKey{Name: "acme"}, &stored)).To(Succeed())
	g.Expect(stored.Status.Reservations).To(ConsistOf(HaveField("Namespace", "acme-api")))
}

// A cache that still shows a released reservation would deny a create that has a
// free slot: a denial is never taken from the cache alone.
func TestLedgerDenialFromTheCacheIsConfirmed(t *testing.T) {
	g := NewWithT(t)
	ledger, c := newLedger(t, nil, customerWith(0), quotaOf(1))
	cache := &staleCache{Reader: c, customer: customerWith(0, reservation("acme-api", t0.Add(time.Minute)))}
	ledger.Cache = cache

	d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(Reserved))
	var stored v1alpha1.Customer
	g.Expect(c.Get(context.Background(), client.ObjectKey{Name: "acme"}, &stored)).To(Succeed())
	g.Expect(stored.Status.Reservations).To(ConsistOf(HaveField("Namespace", "acme-web")))
}

// The common case: a current cache decides, and the write is the only round trip.
func TestLedgerCurrentCacheWritesOnce(t *testing.T) {
	g := NewWithT(t)
	var writes, conflicts atomic.Int32
	ledger, c := newLedger(t, countPatches(&writes, &conflicts), customerWith(0), quotaOf(2))
	var apiReads atomic.Int32
	ledger.APIReader = readerFunc(func(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
		apiReads.Add(1)
		return c.Get(ctx, key, obj, opts...)
	})
	d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(Reserved))
	g.Expect(writes.Load()).To(Equal(int32(1)))
	g.Expect(conflicts.Load()).To(BeZero())
	g.Expect(apiReads.Load()).To(BeZero(), "no uncached read when the write validates the cached one")
}

type readerFunc func(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error

func (f readerFunc) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return f(ctx, key, obj, opts...)
}

func (readerFunc) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return fmt.Errorf("not used")
}

// Serial creates for one customer: the cache has not yet seen the ledger's own
// last write, so the next decision starts from that write instead of conflicting.
func TestLedgerStartsFromItsOwnWriteWhileTheCacheLags(t *testing.T) {
	g := NewWithT(t)
	var writes, conflicts atomic.Int32
	funcs := countPatches(&writes, &conflicts)
	ledger, c := newLedger(t, funcs, customerWith(0), quotaOf(2))
	var initial v1alpha1.Customer
	g.Expect(c.Get(context.Background(), client.ObjectKey{Name: "acme"}, &initial)).To(Succeed())
	ledger.Cache = &staleCache{Reader: c, customer: &initial} // never sees a write

	for _, ns := range []string{"acme-web", "acme-api"} {
		d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: ns})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(d.Outcome).To(Equal(Reserved), ns)
	}
	g.Expect(writes.Load()).To(Equal(int32(2)))
	g.Expect(conflicts.Load()).To(BeZero())

	// The third is over quota: a denial is confirmed from the store, which has both.
	d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-db"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(OverQuota))
	var stored v1alpha1.Customer
	g.Expect(c.Get(context.Background(), client.ObjectKey{Name: "acme"}, &stored)).To(Succeed())
	g.Expect(stored.Status.Reservations).To(ConsistOf(HaveField("Namespace", "acme-web"), HaveField("Namespace", "acme-api")))
}

// sampleCount reads how many observations a histogram series holds.
func sampleCount(t *testing.T, vec *prometheus.HistogramVec, label string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := vec.WithLabelValues(label).(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func TestLedgerRecordsItsLatencies(t *testing.T) {
	g := NewWithT(t)
	var writes, conflicts atomic.Int32
	ledger, _ := newLedger(t, countPatches(&writes, &conflicts), customerWith(0), quotaOf(1))
	reserved, denied := sampleCount(t, reserveSeconds, "reserved"), sampleCount(t, reserveSeconds, "denied")
	ok := sampleCount(t, writeSeconds, "ok")

	d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(Reserved))
	d, err = ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-api"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(OverQuota))

	g.Expect(sampleCount(t, reserveSeconds, "reserved")).To(Equal(reserved + 1))
	g.Expect(sampleCount(t, reserveSeconds, "denied")).To(Equal(denied + 1))
	g.Expect(sampleCount(t, writeSeconds, "ok")).To(Equal(ok+1), "one write: the denial wrote nothing")
}

// notCached hides the CustomerQuotas from a reader, as a cache that has not seen a
// quota created together with its customer and projects.
type notCached struct{ client.Reader }

func (n notCached) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*v1alpha1.CustomerQuota); ok {
		return apierrors.NewNotFound(v1alpha1.GroupVersion.WithResource("customerquotas").GroupResource(), key.Name)
	}
	return n.Reader.Get(ctx, key, obj, opts...)
}

// A quota applied in the same sync as its projects may reach the API server before
// the cache: the limit is then the stored quota's, not --default-max-projects.
func TestLedgerReadsAQuotaTheCacheHasNotSeen(t *testing.T) {
	g := NewWithT(t)
	ledger, c := newLedger(t, nil, customerWith(0), quotaOf(1))
	ledger.Cache = notCached{Reader: c}

	d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(Reserved))
	d, err = ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-api"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(OverQuota), "the stored quota allows 1, the default 10")
	g.Expect(d.Message()).To(ContainSubstring(`(CustomerQuota "acme")`))

	// Without a quota anywhere, the default applies.
	g.Expect(c.Delete(context.Background(), quotaOf(1))).To(Succeed())
	d, err = ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-api"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(Reserved))
	g.Expect(d.Limit.Max).To(Equal(int32(10)))
}

// A Customer deleted from the store that the cache still holds: the reservation
// write finds nothing, and the answer is DESIGN's CustomerNotFound, not an error.
func TestLedgerCustomerGoneWhileStillCached(t *testing.T) {
	g := NewWithT(t)
	ledger, c := newLedger(t, nil, quotaOf(3))
	cached := customerWith(0)
	cached.ResourceVersion = "7"
	ledger.Cache = &staleCache{Reader: c, customer: cached}

	d, err := ledger.Reserve(context.Background(), "acme", Slot{Namespace: "acme-web"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(CustomerNotFound))
	g.Expect(d.Message()).To(Equal(`customer "acme" does not exist (label customers.partnerops.io/customer): create the Customer first`))
}

// A partner removes the customer label of a project and puts it back before the
// cache has seen the removal: the request's old object (unlabelled) is newer than
// the cached copy (still a project). The ledger must reserve a slot instead of
// finding the namespace counted; otherwise, once the cache sees the removal, the
// slot looks free, is given to a create, and the namespace comes back on top of it.
func TestLedgerRelabelAgainstAStaleCache(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	quota := &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "acme"},
		Spec: v1alpha1.CustomerQuotaSpec{Customer: "acme", MaxProjects: ptr.To[int32](3)}}
	ledger, c := newLedger(t, nil, customerWith(2), quota, project("acme-web", "acme"), project("acme-db", "acme"))

	cached := &corev1.Namespace{}
	g.Expect(c.Get(ctx, client.ObjectKey{Name: "acme-web"}, cached)).To(Succeed())
	// The label removal was stored at the next version; the cache still shows the one before.
	removedAt, err := strconv.ParseUint(cached.ResourceVersion, 10, 64)
	g.Expect(err).NotTo(HaveOccurred())
	removed := strconv.FormatUint(removedAt+1, 10)

	d, err := ledger.Reserve(ctx, "acme", Slot{Namespace: "acme-web", After: removed})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(Reserved), "the cached copy predates the request's old object")
	customer := &v1alpha1.Customer{}
	g.Expect(c.Get(ctx, client.ObjectKey{Name: "acme"}, customer)).To(Succeed())
	g.Expect(customer.Status.Reservations).To(ConsistOf(HaveField("AfterResourceVersion", removed)))

	// The cache (and the controller) now see the removal: acme-web is no project,
	// status.projects says 1. The reservation keeps acme-web's slot.
	g.Expect(c.Get(ctx, client.ObjectKey{Name: "acme-web"}, cached)).To(Succeed())
	delete(cached.Labels, v1alpha1.CustomerLabel)
	g.Expect(c.Update(ctx, cached)).To(Succeed())
	g.Expect(c.Get(ctx, client.ObjectKey{Name: "acme"}, customer)).To(Succeed())
	customer.Status.Projects = 1
	customer.Status.Reservations = Pending(customer.Status.Reservations, Projects{"acme-db": "1"}, t0)
	g.Expect(c.Status().Update(ctx, customer)).To(Succeed())

	d, err = ledger.Reserve(ctx, "acme", Slot{Namespace: "acme-api"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(Reserved))
	d, err = ledger.Reserve(ctx, "acme", Slot{Namespace: "acme-x"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(OverQuota), "acme-db, acme-api and the relabelled acme-web fill the quota of 3")
}

// staleNamespaces is a cache that still lists namespaces the API server has
// deleted (its watch is behind).
type staleNamespaces struct {
	client.Reader
	gone []corev1.Namespace
}

func (s staleNamespaces) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if err := s.Reader.List(ctx, list, opts...); err != nil {
		return err
	}
	if nsList, ok := list.(*corev1.NamespaceList); ok {
		nsList.Items = append(nsList.Items, s.gone...)
	}
	return nil
}

// A project is deleted and a new namespace of the same name created while the
// cache still shows the old one: the create needs a slot like any other (the
// old namespace's no longer counts), held until the cache shows the new one.
// Taken as already counted, it let one more create in once the cache saw the
// deletion: a, b and c against a quota of 2.
func TestLedgerCreateOfANameTheCacheStillShows(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	quota := &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "acme"},
		Spec: v1alpha1.CustomerQuotaSpec{Customer: "acme", MaxProjects: ptr.To[int32](2)}}
	ledger, c := newLedger(t, nil, customerWith(2), quota, project("acme-b", "acme"))
	old := project("acme-a", "acme")
	old.ResourceVersion = "5"
	ledger.Cache = staleNamespaces{Reader: c, gone: []corev1.Namespace{*old}}

	d, err := ledger.Reserve(ctx, "acme", Slot{Namespace: "acme-a"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(OverQuota), "the stale acme-a still counts until the cache sees it go: on the safe side")

	// The controller saw the deletion (status.projects 1); this cache has not yet.
	customer := &v1alpha1.Customer{}
	g.Expect(c.Get(ctx, client.ObjectKey{Name: "acme"}, customer)).To(Succeed())
	customer.Status.Projects = 1
	g.Expect(c.Status().Update(ctx, customer)).To(Succeed())
	ledger.Cache = c // the cache catches up with the deletion

	d, err = ledger.Reserve(ctx, "acme", Slot{Namespace: "acme-a"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(Reserved))
	d, err = ledger.Reserve(ctx, "acme", Slot{Namespace: "acme-c"})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(d.Outcome).To(Equal(OverQuota), "acme-b and the new acme-a fill the quota of 2")

	t.Run("a reservation made while the cache still showed the old namespace waits for a newer one", func(t *testing.T) {
		g := NewWithT(t)
		ledger, c := newLedger(t, nil, customerWith(1), quota)
		ledger.Cache = staleNamespaces{Reader: c, gone: []corev1.Namespace{*old}}
		d, err := ledger.Reserve(ctx, "acme", Slot{Namespace: "acme-a"})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(d.Outcome).To(Equal(Reserved), "not AlreadyCounted: acme-a is gone from the API server")
		customer := &v1alpha1.Customer{}
		g.Expect(c.Get(ctx, client.ObjectKey{Name: "acme"}, customer)).To(Succeed())
		g.Expect(customer.Status.Reservations).To(ConsistOf(HaveField("AfterResourceVersion", "5")))
		g.Expect(Pending(customer.Status.Reservations, Projects{"acme-a": "5"}, t0)).To(HaveLen(1), "the old copy does not release it")
		g.Expect(Pending(customer.Status.Reservations, Projects{"acme-a": "9"}, t0)).To(BeEmpty(), "the new namespace does")
	})
	t.Run("a re-applied create of a namespace that exists needs no slot", func(t *testing.T) {
		g := NewWithT(t)
		ledger, _ := newLedger(t, nil, customerWith(2), quota, project("acme-a", "acme"), project("acme-b", "acme"))
		d, err := ledger.Reserve(ctx, "acme", Slot{Namespace: "acme-a"})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(d.Outcome).To(Equal(AlreadyCounted))
	})
}
