package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/access"
)

// versions maps "kind/name" to resourceVersion for everything the operator
// reads or writes: a changed resourceVersion after a restart is a write.
type versions map[string]string

func (b *bench) snapshot(ctx context.Context) (versions, error) {
	v := versions{}
	managed := client.MatchingLabels{access.ManagedByLabel: access.ManagedByValue}
	lists := []struct {
		list client.ObjectList
		opts []client.ListOption
	}{
		{&v1alpha1.CustomerList{}, nil},
		{&v1alpha1.CustomerQuotaList{}, nil},
		{&v1alpha1.CustomerMembershipList{}, nil},
		{&v1alpha1.CustomerMessageList{}, nil},
		{&v1alpha1.MessageAcknowledgementList{}, nil},
		{&corev1.NamespaceList{}, []client.ListOption{client.HasLabels{v1alpha1.CustomerLabel}}},
		{&rbacv1.RoleBindingList{}, []client.ListOption{managed}},
		{&rbacv1.ClusterRoleList{}, []client.ListOption{managed}},
		{&rbacv1.ClusterRoleBindingList{}, []client.ListOption{managed}},
		{&corev1.SecretList{}, []client.ListOption{client.InNamespace("customer-operator-system")}},
	}
	for _, l := range lists {
		if err := b.admin.List(ctx, l.list, l.opts...); err != nil {
			return nil, err
		}
		kind := fmt.Sprintf("%T", l.list)[1:]
		if err := meta.EachListItem(l.list, func(o runtime.Object) error {
			obj := o.(client.Object)
			v[kind+"/"+obj.GetNamespace()+"/"+obj.GetName()] = obj.GetResourceVersion()
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// diff counts objects whose resourceVersion changed, appeared or went, by kind.
func diff(before, after versions) (map[string]int, int) {
	changed := map[string]int{}
	total := 0
	kindOf := func(key string) string {
		for i := range key {
			if key[i] == '/' {
				return key[:i]
			}
		}
		return key
	}
	for k, rv := range after {
		if before[k] != rv {
			changed[kindOf(k)]++
			total++
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			changed[kindOf(k)]++
			total++
		}
	}
	return changed, total
}

type restartResult struct {
	// ready is until /readyz; reconciled until every object had its reconcile
	// and the queues drained.
	ready, reconciled time.Duration
	writes            float64
	writesByMethod    map[string]float64
	reconciles        float64
	changed           map[string]int
	changedTotal      int
	mails             int
	rss, heap         float64
}

// runRestart stops the manager, starts it again on the converged cluster and
// measures how long the new one takes to reconcile everything, and what it
// writes and sends while doing so (targets: nothing and nothing).
func (b *bench) runRestart(ctx context.Context, expected map[string]int) (restartResult, error) {
	var r restartResult
	if err := b.waitIdle(ctx, 2*time.Second, 2*time.Minute); err != nil {
		return r, err
	}
	before, err := b.snapshot(ctx)
	if err != nil {
		return r, err
	}
	mailsBefore := len(b.sink.Messages())
	b.stopManager()

	start := time.Now()
	if err := b.startManager(ctx); err != nil {
		return r, err
	}
	r.ready = time.Since(start)
	deadline := time.Now().Add(b.s.ConvergeTimeout)
	for {
		m, err := b.metrics(ctx)
		if err != nil {
			return r, err
		}
		done := !m.busy()
		for controller, n := range expected {
			if m.reconciles(controller) < float64(n) {
				done = false
			}
		}
		if done {
			r.reconciled = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("restarted manager did not reconcile everything in %s", b.s.ConvergeTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Whatever the reconciles caused (events, watches firing again) settles too.
	if err := b.waitIdle(ctx, 3*time.Second, 2*time.Minute); err != nil {
		return r, err
	}
	m, err := b.metrics(ctx)
	if err != nil {
		return r, err
	}
	r.writes, r.writesByMethod, r.reconciles = m.apiWrites(), m.writesByMethod(), m.reconciles("")
	r.heap = m.sum("go_memstats_heap_inuse_bytes", nil)
	rss, _, err := processMemory(b.manager.Pid())
	if err != nil {
		return r, err
	}
	r.rss = float64(rss)
	after, err := b.snapshot(ctx)
	if err != nil {
		return r, err
	}
	r.changed, r.changedTotal = diff(before, after)
	r.mails = len(b.sink.Messages()) - mailsBefore
	return r, nil
}

// resyncResult is a resync of every Customer without any change to what the
// operator owns: each Customer gets a new annotation (metadata only), which
// requeues its controllers; they must find nothing to write.
type resyncResult struct {
	reconciles, writes float64
	// customerReconciles are the customer controller's, touched the Customers
	// patched: fewer of the former means the touch did not reach them all.
	customerReconciles float64
	touched            int
	writesByMethod     map[string]float64
	idleWrites         float64
	idleWindow         time.Duration
}

func (b *bench) runResync(ctx context.Context) (resyncResult, error) {
	var r resyncResult
	if err := b.waitIdle(ctx, 2*time.Second, 2*time.Minute); err != nil {
		return r, err
	}
	// Idle: nothing happens, nothing may be written.
	m0, err := b.metrics(ctx)
	if err != nil {
		return r, err
	}
	r.idleWindow = b.s.IdleWindow
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(r.idleWindow): // a measurement window, not a wait for state
	}
	m1, err := b.metrics(ctx)
	if err != nil {
		return r, err
	}
	r.idleWrites = m1.apiWrites() - m0.apiWrites()

	var customers v1alpha1.CustomerList
	if err := b.admin.List(ctx, &customers, client.MatchingLabels{benchLabel: "cust"}); err != nil {
		return r, err
	}
	stamp := time.Now().UTC().Format(time.RFC3339Nano)
	err = parallel(ctx, len(customers.Items), b.s.Concurrency, func(ctx context.Context, i int) error {
		c := &customers.Items[i]
		patch := client.MergeFrom(c.DeepCopy())
		anns := c.GetAnnotations()
		if anns == nil {
			anns = map[string]string{}
		}
		anns["bench.partnerops.io/resync"] = stamp
		c.SetAnnotations(anns)
		return b.admin.Patch(ctx, c, patch)
	})
	if err != nil {
		return r, err
	}
	r.touched = len(customers.Items)
	if err := b.waitIdle(ctx, 2*time.Second, 2*time.Minute); err != nil {
		return r, err
	}
	m2, err := b.metrics(ctx)
	if err != nil {
		return r, err
	}
	r.reconciles = m2.reconciles("") - m1.reconciles("")
	r.customerReconciles = m2.reconciles("customer") - m1.reconciles("customer")
	r.writes = m2.apiWrites() - m1.apiWrites()
	r.writesByMethod = map[string]float64{}
	after, beforeM := m2.writesByMethod(), m1.writesByMethod()
	for k, v := range after {
		if d := v - beforeM[k]; d != 0 {
			r.writesByMethod[k] = d
		}
	}
	return r, nil
}

// expectedReconciles is how many reconciles each controller must at least make
// after a restart (one per object of its kind), and how long one uncached LIST
// of what the manager caches takes: the floor of any restart.
func (b *bench) expectedReconciles(ctx context.Context) (map[string]int, time.Duration, map[string]int, error) {
	start := time.Now()
	v, err := b.snapshot(ctx)
	if err != nil {
		return nil, 0, nil, err
	}
	objects := map[string]int{}
	for k := range v {
		objects[k[:strings.IndexByte(k, '/')]]++
	}
	listTime := time.Since(start)
	count := func(kind string) int {
		n := 0
		for k := range v {
			if len(k) > len(kind) && k[:len(kind)+1] == kind+"/" {
				n++
			}
		}
		return n
	}
	return map[string]int{
		"customer":           count("v1alpha1.CustomerList"),
		"customerquota":      count("v1alpha1.CustomerQuotaList"),
		"customermembership": count("v1alpha1.CustomerMembershipList"),
	}, listTime, objects, nil
}
