package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/mail/mailtest"
)

// benchLabel marks what the bench created, so the floor's objects can be
// deleted by selector.
const benchLabel = "bench.partnerops.io/set"

// customerSet is what one customer of the benchmark consists of: the Customer,
// its CustomerQuota and two memberships with e-mail invitations.
func customerSet(prefix string, i int) []client.Object {
	name := fmt.Sprintf("%s-%d", prefix, i)
	labels := map[string]string{benchLabel: prefix}
	meta := func(n string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: n, Labels: labels} }
	return []client.Object{
		&v1alpha1.Customer{ObjectMeta: meta(name), Spec: v1alpha1.CustomerSpec{Identifier: name, DisplayName: "Customer " + name}},
		// Far above what the admission phases create, so every create is "under quota".
		&v1alpha1.CustomerQuota{ObjectMeta: meta(name), Spec: v1alpha1.CustomerQuotaSpec{Customer: v1alpha1.CustomerName(name), MaxProjects: ptr.To[int32](100000)}},
		&v1alpha1.CustomerMembership{ObjectMeta: meta(name + "-admin"), Spec: v1alpha1.CustomerMembershipSpec{
			Customer: v1alpha1.CustomerName(name), Email: "admin@" + name + ".example.com", Role: v1alpha1.RoleAdmin, Invitation: v1alpha1.InvitationEmail}},
		&v1alpha1.CustomerMembership{ObjectMeta: meta(name + "-viewer"), Spec: v1alpha1.CustomerMembershipSpec{
			Customer: v1alpha1.CustomerName(name), Email: "viewer@" + name + ".example.com", Role: v1alpha1.RoleViewer, Invitation: v1alpha1.InvitationEmail}},
	}
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns the
// first error.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
feed:
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return first
}

// readyConditions are the conditions the floor writes: what the operator's own status
// write for an object amounts to (Ready, observedGeneration).
func readyConditions(gen int64) []metav1.Condition {
	return []metav1.Condition{{
		Type: v1alpha1.ReadyCondition, Status: metav1.ConditionTrue, Reason: v1alpha1.ReconciledReason,
		Message: "floor", ObservedGeneration: gen, LastTransitionTime: metav1.Now(),
	}}
}

// floorStatus is the status the floor writes: Ready and observedGeneration.
func floorStatus(o client.Object) {
	gen := o.GetGeneration()
	switch x := o.(type) {
	case *v1alpha1.Customer:
		x.Status.ObservedGeneration, x.Status.Conditions = gen, readyConditions(gen)
	case *v1alpha1.CustomerQuota:
		x.Status.ObservedGeneration, x.Status.Conditions = gen, readyConditions(gen)
		x.Status.Max = 100000
	case *v1alpha1.CustomerMembership:
		x.Status.ObservedGeneration, x.Status.Conditions = gen, readyConditions(gen)
	}
}

// operatorStatus is the status the operator writes for a converged object of
// customerSet: its conditions with the operator's messages, its counters and a
// membership's invitation record (texts as in controllers/; statusBytes of the
// converged customer set is logged beside it, so a drift shows). The second floor
// writes it, to tell the API server's cost of the operator's larger status from the
// cost of its protocol.
func operatorStatus(o client.Object) {
	gen := o.GetGeneration()
	now := metav1.Now()
	cond := func(typ string, st metav1.ConditionStatus, reason, msg string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: now}
	}
	switch x := o.(type) {
	case *v1alpha1.Customer:
		x.Status = v1alpha1.CustomerStatus{ObservedGeneration: gen, MaxProjects: 100000, Members: 0, Conditions: []metav1.Condition{
			cond(v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason, "customer has 0 project(s) and 0 active member(s)"),
		}}
	case *v1alpha1.CustomerQuota:
		x.Status = v1alpha1.CustomerQuotaStatus{ObservedGeneration: gen, Max: 100000, Conditions: []metav1.Condition{
			cond(v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason, "0 of 100000 projects used"),
			cond(v1alpha1.WithinQuotaCondition, metav1.ConditionTrue, v1alpha1.WithinQuotaReason, "0 of 100000 projects used"),
		}}
	case *v1alpha1.CustomerMembership:
		expiry := metav1.NewTime(now.Add(7 * 24 * time.Hour))
		x.Status = v1alpha1.CustomerMembershipStatus{ObservedGeneration: gen, Username: x.Spec.Email,
			Invitation: &v1alpha1.InvitationStatus{Round: 1, SentTime: &now, ExpiryTime: &expiry, Attempts: 1, LastAttemptTime: &now},
			Conditions: []metav1.Condition{
				cond(v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason, "the invitation is sent; access is granted once it is accepted"),
				cond(v1alpha1.InvitedCondition, metav1.ConditionTrue, v1alpha1.InvitationSentReason, "the invitation e-mail (round 1) was sent"),
				cond(v1alpha1.AcceptedCondition, metav1.ConditionFalse, v1alpha1.AwaitingAcceptanceReason,
					"waiting for the invitation to be accepted; the link works until status.invitation.expiryTime"),
			}}
	}
}

// statusBytes is the size of the objects' statuses as JSON.
func statusBytes(objs []client.Object) (int, error) {
	n := 0
	for _, o := range objs {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return 0, err
		}
		b, err := json.Marshal(u["status"])
		if err != nil {
			return 0, err
		}
		n += len(b)
	}
	return n, nil
}

// runFloor makes, with no webhooks and no manager, the same number of creates
// and status writes the operator's run needs at least (four objects and one
// status write each per customer), with the same concurrency: the API server's
// own floor, for n customers. Its objects are named prefix-<i>; setStatus sets
// what each status write says.
func (b *bench) runFloor(ctx context.Context, prefix string, n int, setStatus func(client.Object)) (total, creates time.Duration, err error) {
	sets := make([][]client.Object, n)
	start := time.Now()
	// All creates first, as the operator's run makes them, then the status writes.
	err = parallel(ctx, n, b.s.Concurrency, func(ctx context.Context, i int) error {
		sets[i] = customerSet(prefix, i)
		for _, o := range sets[i] {
			if err := b.admin.Create(ctx, o); err != nil {
				return fmt.Errorf("%s: creating %T %s: %w", prefix, o, o.GetName(), err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	creates = time.Since(start)
	err = parallel(ctx, n, b.s.Concurrency, func(ctx context.Context, i int) error {
		for _, o := range sets[i] {
			patch := client.MergeFrom(o.DeepCopyObject().(client.Object))
			setStatus(o)
			if err := b.admin.Status().Patch(ctx, o, patch); err != nil {
				return fmt.Errorf("%s: status of %T %s: %w", prefix, o, o.GetName(), err)
			}
		}
		return nil
	})
	return time.Since(start), creates, err
}

// deleteFloor removes the objects of a floor of n customers before the manager
// starts, so that it never sees them. One DELETE per object, by the same workers:
// a deletecollection of tens of thousands of objects outlives the API server's
// request timeout.
func (b *bench) deleteFloor(ctx context.Context, prefix string, n int) error {
	err := parallel(ctx, n, b.s.Concurrency, func(ctx context.Context, i int) error {
		for _, o := range customerSet(prefix, i) {
			if err := b.admin.Delete(ctx, o); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("%s: deleting %T %s: %w", prefix, o, o.GetName(), err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	sel := client.MatchingLabels{benchLabel: prefix}
	for {
		var list v1alpha1.CustomerList
		if err := b.admin.List(ctx, &list, sel); err != nil {
			return err
		}
		var mlist v1alpha1.CustomerMembershipList
		if err := b.admin.List(ctx, &mlist, sel); err != nil {
			return err
		}
		if len(list.Items) == 0 && len(mlist.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type convergence struct {
	total, creates time.Duration
	mails          *invitations
}

// invitations counts the mails in the sink from index next on by recipient: in
// customerSet every membership has an address of its own, so a recipient is one
// membership's invitation, and a further mail to it a duplicate.
type invitations struct {
	next       int
	seen       map[string]bool
	duplicates int
	// first and last bound the distinct invitations' arrival, for the
	// end-to-end mail rate.
	first, last time.Time
}

func newInvitations(next int) *invitations {
	return &invitations{next: next, seen: map[string]bool{}}
}

// scan counts the messages that arrived since the last scan.
func (v *invitations) scan(msgs []mailtest.Message) {
	for _, m := range msgs[v.next:] {
		to := strings.ToLower(strings.Join(m.To, ","))
		if v.seen[to] {
			v.duplicates++
			continue
		}
		v.seen[to] = true
		if v.first.IsZero() || m.ReceivedAt.Before(v.first) {
			v.first = m.ReceivedAt
		}
		if m.ReceivedAt.After(v.last) {
			v.last = m.ReceivedAt
		}
	}
	v.next = len(msgs)
}

// distinct is the number of memberships with an invitation in the sink.
func (v *invitations) distinct() int { return len(v.seen) }

// runConvergence creates the customers with the same workers as the floor and
// waits until every object is Ready for its generation and every invitation is
// in the sink.
func (b *bench) runConvergence(ctx context.Context) (convergence, error) {
	n := b.s.Customers
	c := convergence{mails: newInvitations(len(b.sink.Messages()))}
	start := time.Now()
	err := parallel(ctx, n, b.s.Concurrency, func(ctx context.Context, i int) error {
		for _, o := range customerSet("cust", i) {
			if err := b.admin.Create(ctx, o); err != nil {
				return fmt.Errorf("creating %T %s: %w", o, o.GetName(), err)
			}
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	c.creates = time.Since(start)
	deadline := time.Now().Add(b.s.ConvergeTimeout)
	for {
		// The sink is in-process and free to ask; LIST (load on the API server,
		// which would slow down what it measures) only once every membership's
		// invitation is there.
		c.mails.scan(b.sink.Messages())
		notReady := -1
		if c.mails.distinct() >= 2*n {
			if notReady, err = b.countNotReady(ctx); err != nil {
				return c, err
			}
		}
		if notReady == 0 {
			// Everything was Ready by the time the LISTs answered, and not yet at
			// the previous poll: the end of the LISTs is the upper bound, the
			// conservative reading (they run at once, to keep the bound tight).
			c.total = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			return c, fmt.Errorf("not converged after %s: %d of %d invitations in the sink (%d duplicates), %d objects not Ready (-1: not listed yet)",
				b.s.ConvergeTimeout, c.mails.distinct(), 2*n, c.mails.duplicates, notReady)
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return c, nil
}

func ready(o client.Object, conds []metav1.Condition, observed int64) bool {
	cond := meta.FindStatusCondition(conds, v1alpha1.ReadyCondition)
	return cond != nil && cond.Status == metav1.ConditionTrue && observed == o.GetGeneration() && cond.ObservedGeneration == o.GetGeneration()
}

// countNotReady lists the benchmark's objects through the uncached admin client,
// the three kinds at once, so that the three LISTs see the cluster at nearly the
// same moment, right after the call.
func (b *bench) countNotReady(ctx context.Context) (int, error) {
	sel := client.MatchingLabels{benchLabel: "cust"}
	var cl v1alpha1.CustomerList
	var ql v1alpha1.CustomerQuotaList
	var ml v1alpha1.CustomerMembershipList
	lists := []client.ObjectList{&cl, &ql, &ml}
	errs := make([]error, len(lists))
	var wg sync.WaitGroup
	for i, l := range lists {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.admin.List(ctx, l, sel)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	notReady := 0
	for i := range cl.Items {
		if !ready(&cl.Items[i], cl.Items[i].Status.Conditions, cl.Items[i].Status.ObservedGeneration) {
			notReady++
		}
	}
	for i := range ql.Items {
		if !ready(&ql.Items[i], ql.Items[i].Status.Conditions, ql.Items[i].Status.ObservedGeneration) {
			notReady++
		}
	}
	for i := range ml.Items {
		if !ready(&ml.Items[i], ml.Items[i].Status.Conditions, ml.Items[i].Status.ObservedGeneration) {
			notReady++
		}
	}
	missing := 4*b.s.Customers - len(cl.Items) - len(ql.Items) - len(ml.Items)
	return notReady + missing, nil
}

// statusSizes compares the status JSON of one customer's four objects as the two
// floors write them and as the operator wrote them (customer 0, converged).
func (b *bench) statusSizes(ctx context.Context) (map[string]int, error) {
	sizes := map[string]int{}
	for name, set := range map[string]func(client.Object){"floor": floorStatus, "fullfloor": operatorStatus} {
		objs := customerSet(name, 0)
		for _, o := range objs {
			o.SetGeneration(1)
			set(o)
		}
		n, err := statusBytes(objs)
		if err != nil {
			return nil, err
		}
		sizes[name] = n
	}
	objs := customerSet("cust", 0)
	for _, o := range objs {
		if err := b.admin.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
			return nil, fmt.Errorf("reading %T %s: %w", o, o.GetName(), err)
		}
	}
	n, err := statusBytes(objs)
	if err != nil {
		return nil, err
	}
	sizes["ours"] = n
	return sizes, nil
}

// warmupCustomers is the size of the untimed warm-up before the floor: a tenth of
// the run, at least 50 and at most 500 customers.
func warmupCustomers(customers int) int {
	return min(max(customers/10, 50), 500)
}
