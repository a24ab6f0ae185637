package quota

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// FieldManager is the field manager of the ledger's writes to Customer status.
const FieldManager = "customer-operator-admission"

// conflictBackoff bounds the re-reads after an optimistic-lock conflict (another
// replica or the controller wrote the Customer in between): about half a second in
// all, well inside AdmissionTimeout.
var conflictBackoff = wait.Backoff{Steps: 10, Duration: 5 * time.Millisecond, Factor: 1.5, Jitter: 0.5}

// Ledger reserves project slots for the namespace admission webhook.
//
// Concurrent requests for one customer are batched, as kube-apiserver's quota
// evaluator does: while one write for a customer is in flight, the requests that
// arrive queue up, and the next write decides all of them at once. Within a replica
// there is then a single writer per customer, so a burst of creates costs a few
// writes instead of a storm of conflicts. Between replicas, and against the
// controller, the optimistic lock decides: a conflict re-reads the Customer and
// decides the whole batch again.
type Ledger struct {
	// APIReader reads the Customer as stored (uncached): every decision is taken
	// or validated against the latest reservations, never only a cache's. It also
	// reads a CustomerQuota the cache does not have (yet).
	APIReader client.Reader
	// Client writes the Customer's status.
	Client client.Client
	// Cache reads live projects (by NamespaceCustomerIndex), CustomerQuotas, and
	// the Customer for a first attempt that the optimistic lock validates.
	Cache client.Reader
	// DefaultMaxProjects caps customers without a CustomerQuota.
	DefaultMaxProjects int32
	// TTL is a reservation's lifetime: AdmissionTimeout plus a grace period.
	TTL time.Duration
	// OperatorNamespace is never a project.
	OperatorNamespace string
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	mu sync.Mutex
	// queued holds, for each customer whose batch writer is running, the requests
	// for its next batch. A customer without a running writer has no key.
	queued map[string][]*slotRequest
	// written remembers, per customer, the Customer as this ledger last wrote it,
	// until the cache has caught up: the next create of a burst then starts from
	// the ledger's own write instead of conflicting with it.
	written map[string]ownWrite
}

// ownWrite is a Customer as the ledger wrote it, and the resourceVersion that write
// replaced: while the cache still shows that version, this one is newer.
type ownWrite struct {
	replaced string
	customer *v1alpha1.Customer
	at       time.Time
}

// ownWriteTTL bounds how long a write is remembered: a watch event normally
// reaches the cache in milliseconds.
const ownWriteTTL = 10 * time.Second

type slotRequest struct {
	slot Slot
	done chan slotResult
}

type slotResult struct {
	decision Decision
	err      error
}

// Reserve decides whether slot's namespace may become a project of customer and,
// when it needs a slot and one is free, reserves it before returning. A denial is
// a Decision, not an error; an error means the slot could not be decided.
func (l *Ledger) Reserve(ctx context.Context, customer string, slot Slot) (decision Decision, err error) {
	start := time.Now()
	defer func() { observeReserve(start, decision, err) }()
	req := &slotRequest{slot: slot, done: make(chan slotResult, 1)}
	l.mu.Lock()
	if l.queued == nil {
		l.queued = make(map[string][]*slotRequest)
	}
	_, running := l.queued[customer]
	l.queued[customer] = append(l.queued[customer], req)
	l.mu.Unlock()
	if !running {
		go l.writeBatches(customer)
	}

	select {
	case res := <-req.done:
		return res.decision, res.err
	case <-ctx.Done():
		// The batch may still reserve the slot: it then lapses unused, which is
		// safe (a slot is held too long, never given out twice).
		return Decision{}, fmt.Errorf("waiting for a project slot of customer %q: %w", customer, ctx.Err())
	}
}

// Check decides like Reserve but reserves nothing: for dry-run requests.
func (l *Ledger) Check(ctx context.Context, customer string, slot Slot) (Decision, error) {
	decisions, err := l.decide(ctx, customer, []Slot{slot}, false)
	if err != nil {
		return Decision{}, err
	}
	return decisions[0], nil
}

// writeBatches decides the queued requests of customer, batch after batch, until
// none are left.
func (l *Ledger) writeBatches(customer string) {
	for {
		l.mu.Lock()
		batch := l.queued[customer]
		if len(batch) == 0 {
			delete(l.queued, customer)
			l.mu.Unlock()
			return
		}
		l.queued[customer] = nil
		l.mu.Unlock()

		slots := make([]Slot, len(batch))
		for i, req := range batch {
			slots[i] = req.slot
		}
		// Not any one request's context: the batch serves them all.
		ctx, cancel := context.WithTimeout(context.Background(), AdmissionTimeout)
		decisions, err := l.decide(ctx, customer, slots, true)
		cancel()
		if err != nil {
			logf.Log.WithName("quota").Error(err, "Could not reserve project slots", "customer", customer, "requests", len(batch))
		}
		for i, req := range batch {
			res := slotResult{err: err}
			if err == nil {
				res.decision = decisions[i]
			}
			req.done <- res
		}
	}
}

// decide decides every slot in order and, when reserve is set and something
// changed, writes the reservations with an optimistic lock.
//
// The first attempt reads the Customer from the cache: when it leads to a write,
// the lock validates it (a stale read conflicts), so the common case costs one
// round trip to the API server. A decision that writes nothing (a denial, a
// namespace that holds its slot already, a dry run) has no lock to validate it, so
// it is taken again from the Customer as stored; so is every attempt after a
// conflict.
func (l *Ledger) decide(ctx context.Context, customerName string, slots []Slot, reserve bool) ([]Decision, error) {
	var decisions []Decision
	all := func(outcome Outcome) {
		decisions = make([]Decision, len(slots))
		for i := range decisions {
			decisions[i] = Decision{Outcome: outcome, Customer: customerName}
		}
	}
	cached := l.Cache != nil && reserve
	attempt := func() error {
		fromCache := cached
		cached = false
		reader := l.APIReader
		if fromCache {
			reader = l.Cache
		}
		customer := &v1alpha1.Customer{}
		err := reader.Get(ctx, client.ObjectKey{Name: customerName}, customer)
		if fromCache && err == nil {
			customer = l.newerOwnWrite(customer)
		}
		if err != nil {
			if apierrors.IsNotFound(err) {
				if fromCache {
					return errRetryUncached
				}
				all(CustomerNotFound)
				return nil
			}
			return fmt.Errorf("reading customer %q: %w", customerName, err)
		}
		if !customer.DeletionTimestamp.IsZero() {
			// Deletion is for good: a cache that shows it is right.
			all(CustomerDeleting)
			return nil
		}
		live, err := l.liveProjects(ctx, customerName)
		if err != nil {
			return err
		}
		if err := l.outdateGoneProjects(ctx, slots, live); err != nil {
			return err
		}
		limit, err := l.limit(ctx, customerName)
		if err != nil {
			return err
		}

		now := l.now()
		expiresAt := ExpiresAt(now, l.TTL)
		tally := NewTally(customer, live, now)
		decisions = make([]Decision, len(slots))
		for i, slot := range slots {
			decisions[i] = tally.Admit(slot, limit, expiresAt)
		}
		if !reserve || !tally.Changed() {
			if fromCache {
				return errRetryUncached
			}
			return nil
		}
		before := customer.DeepCopy()
		customer.Status.Reservations = tally.Reservations()
		// The resourceVersion of the read is the lock: no other writer's change to
		// the Customer (a reservation, the controller's release) can be lost.
		patch := client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})
		start := time.Now()
		err = l.Client.Status().Patch(ctx, customer, patch, client.FieldOwner(FieldManager))
		observeWrite(start, err)
		if apierrors.IsNotFound(err) {
			// Deleted since it was read (or only the cache still had it): decided
			// again from the store, which says CustomerNotFound, not a 500.
			l.forgetOwnWrite(customerName)
			return errRetryUncached
		}
		if err != nil {
			l.forgetOwnWrite(customerName)
			return err
		}
		l.rememberOwnWrite(before.ResourceVersion, customer)
		return nil
	}
	err := retry.OnError(conflictBackoff, apierrors.IsConflict, func() error {
		if err := attempt(); !errors.Is(err, errRetryUncached) {
			return err
		}
		return attempt()
	})
	if err != nil {
		return nil, err
	}
	return decisions, nil
}

// errRetryUncached makes decide take a decision read from the cache again from
// the Customer as stored.
var errRetryUncached = errors.New("decision from the cache needs confirming")

// newerOwnWrite returns this ledger's last write of the customer if the cached
// copy is the version that write replaced (the cache has not seen it yet), else
// the cached copy. Either way the write that follows carries the lock.
func (l *Ledger) newerOwnWrite(cached *v1alpha1.Customer) *v1alpha1.Customer {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.written[cached.Name]
	if !ok {
		return cached
	}
	if w.replaced != cached.ResourceVersion || w.customer.UID != cached.UID {
		// The cache has our write, or a newer one: it is current again.
		delete(l.written, cached.Name)
		return cached
	}
	return w.customer.DeepCopy()
}

func (l *Ledger) rememberOwnWrite(replaced string, written *v1alpha1.Customer) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written == nil {
		l.written = map[string]ownWrite{}
	}
	for name, w := range l.written {
		if now.Sub(w.at) > ownWriteTTL {
			delete(l.written, name)
		}
	}
	l.written[written.Name] = ownWrite{replaced: replaced, customer: written.DeepCopy(), at: now}
}

func (l *Ledger) forgetOwnWrite(customer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.written, customer)
}

// outdateGoneProjects looks at the creates of a name that the cache shows as a
// live project: usually a re-applied create of an existing namespace (the API
// server answers AlreadyExists), which needs no slot. But a namespace of that
// name may be gone, and this create a new one, while the cache still shows the
// old: it then needs a slot like any create, held until the cache shows a
// version newer than the old one. So the name is read from the API server (only
// on this path), and a namespace that is not there turns the slot into one that
// waits for a version after the cached copy's.
func (l *Ledger) outdateGoneProjects(ctx context.Context, slots []Slot, live Projects) error {
	for i := range slots {
		slot := &slots[i]
		if slot.After != "" || !live.Has(slot.Namespace) {
			continue
		}
		err := l.APIReader.Get(ctx, client.ObjectKey{Name: slot.Namespace}, &corev1.Namespace{})
		if apierrors.IsNotFound(err) {
			slot.After = live[slot.Namespace]
			continue
		}
		if err != nil {
			return fmt.Errorf("reading namespace %q: %w", slot.Namespace, err)
		}
	}
	return nil
}

// liveProjects reads the customer's live projects from the cache.
func (l *Ledger) liveProjects(ctx context.Context, customer string) (Projects, error) {
	var list corev1.NamespaceList
	if err := l.Cache.List(ctx, &list, client.MatchingFields{NamespaceCustomerIndex: customer},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the projects of customer %q: %w", customer, err)
	}
	return LiveProjects(list.Items, l.OperatorNamespace), nil
}

// limit reads the customer's CustomerQuota from the cache, and from the API
// server when the cache has none: a quota applied together with its customer and
// projects (one kubectl apply, one GitOps sync) may not have reached the cache yet,
// and judging those projects by --default-max-projects would admit more than the
// quota allows. Only customers without a quota pay that read.
func (l *Ledger) limit(ctx context.Context, customer string) (Limit, error) {
	q := &v1alpha1.CustomerQuota{}
	err := l.Cache.Get(ctx, client.ObjectKey{Name: customer}, q)
	if apierrors.IsNotFound(err) && l.APIReader != nil {
		err = l.APIReader.Get(ctx, client.ObjectKey{Name: customer}, q)
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return LimitFor(nil, l.DefaultMaxProjects), nil
		}
		return Limit{}, fmt.Errorf("reading CustomerQuota %q: %w", customer, err)
	}
	return LimitFor(q, l.DefaultMaxProjects), nil
}

func (l *Ledger) now() time.Time {
	if l.Now == nil {
		return time.Now()
	}
	return l.Now()
}
