// Package quota keeps the number of projects of each customer under its quota,
// race-free, the way kube-apiserver's ResourceQuota admission does: a request is
// admitted only after a project slot was reserved with an optimistic-concurrency
// write to the Customer's status (an object every customer has, quota or not).
//
// Each reservation is keyed by its namespace and holds the slot until that
// namespace is a live project (it then counts as used) or until it expires (the
// admitted create failed later or never reached storage). Nobody releases a
// reservation because a cache has not yet seen its namespace (kubernetes#24494).
//
// This file holds the pure rules that the admission webhook and the controllers
// share, so that both always agree on what counts; ledger.go does the I/O. The
// design, with its proof sketch, is in docs/quota.md.
package quota

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/apimachinery/pkg/util/sets"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

const (
	// AdmissionTimeout is the namespace webhook's timeoutSeconds (config/webhook):
	// how long the API server waits for admission.
	AdmissionTimeout = 5 * time.Second

	// DefaultGrace is added to AdmissionTimeout to make a reservation's lifetime.
	// Together they are kube-apiserver's default --request-timeout (60s): past it,
	// an admitted create can no longer be stored, so its slot may be given back.
	DefaultGrace = 55 * time.Second

	// NamespaceCustomerIndex is the cache's field index of namespaces by the value
	// of their customer label, so that counting a customer's projects does not
	// scan every cached namespace.
	NamespaceCustomerIndex = "metadata.labels.customer"

	// MaxReservations is the MaxItems of status.reservations: past it, creates
	// wait until some of the pending ones have landed.
	MaxReservations = 1000
)

// IndexNamespaceByCustomer is the indexer of NamespaceCustomerIndex.
func IndexNamespaceByCustomer(ns *corev1.Namespace) []string {
	if customer := ns.Labels[v1alpha1.CustomerLabel]; customer != "" {
		return []string{customer}
	}
	return nil
}

// IsSystemNamespace reports whether a namespace can never be a project: kube-*,
// default and the operator's own. The webhook does not even see them and a
// ValidatingAdmissionPolicy forbids the label on them; this keeps the counts right
// when either was bypassed.
func IsSystemNamespace(name, operatorNamespace string) bool {
	return strings.HasPrefix(name, "kube-") || name == metav1.NamespaceDefault ||
		(operatorNamespace != "" && name == operatorNamespace)
}

// Projects are a customer's live projects as one cache shows them: each name with
// the resourceVersion the cache holds.
type Projects map[string]string

// LiveProjects returns the namespaces that count against a quota: not system
// namespaces, and not being deleted (a terminating project stops counting as soon
// as its deletion has started).
func LiveProjects(namespaces []corev1.Namespace, operatorNamespace string) Projects {
	live := make(Projects, len(namespaces))
	for i := range namespaces {
		ns := &namespaces[i]
		if ns.DeletionTimestamp.IsZero() && !IsSystemNamespace(ns.Name, operatorNamespace) {
			live[ns.Name] = ns.ResourceVersion
		}
	}
	return live
}

// Has reports whether name is a live project.
func (p Projects) Has(name string) bool {
	_, ok := p[name]
	return ok
}

// Len is the number of live projects.
func (p Projects) Len() int { return len(p) }

// Names returns the live projects' names, sorted.
func (p Projects) Names() []string { return sets.List(sets.KeySet(p)) }

// HasAfter reports whether name is a live project in a version newer than after
// (any version when after is empty). A version that cannot be compared is not
// newer: the caller then keeps counting a slot it may not need, never the other
// way round.
func (p Projects) HasAfter(name, after string) bool {
	rv, ok := p[name]
	if !ok || after == "" {
		return ok
	}
	cmp, err := resourceversion.CompareResourceVersion(rv, after)
	return err == nil && cmp > 0
}

// Covers reports whether the reservation's namespace counts as a live project, so
// that the reservation no longer holds a slot of its own: the namespace is live,
// and for a relabelled namespace, in a version newer than the one the relabel
// replaced. A cache that still shows the namespace from an earlier time in this
// customer (before its label was removed or moved, and put back) does not cover
// it.
func (p Projects) Covers(r v1alpha1.ProjectReservation) bool {
	return p.HasAfter(r.Namespace, r.AfterResourceVersion)
}

// Limit is the cap in force for a customer and where it comes from.
type Limit struct {
	// Max is the number of projects the customer may have.
	Max int32
	// Quota names the CustomerQuota that sets Max; empty when the default applies.
	Quota string
}

// LimitFor returns the limit a CustomerQuota sets, or the default when there is
// none (nil) or it is being deleted.
func LimitFor(q *v1alpha1.CustomerQuota, defaultMax int32) Limit {
	if q == nil || !q.DeletionTimestamp.IsZero() || q.Spec.MaxProjects == nil {
		return Limit{Max: defaultMax}
	}
	return Limit{Max: *q.Spec.MaxProjects, Quota: q.Name}
}

// Source says where the limit comes from, as denials show it.
func (l Limit) Source() string {
	if l.Quota == "" {
		return "default quota"
	}
	return fmt.Sprintf("CustomerQuota %q", l.Quota)
}

// ExpiresAt is when a reservation made at now lapses. metav1.Time keeps whole
// seconds, so it is rounded up: storing it never makes it shorter.
func ExpiresAt(now time.Time, ttl time.Duration) metav1.Time {
	t := now.Add(ttl)
	if r := t.Truncate(time.Second); !r.Equal(t) {
		t = r.Add(time.Second)
	}
	return metav1.NewTime(t)
}

// Expired reports whether a reservation no longer holds its slot at now.
func Expired(r v1alpha1.ProjectReservation, now time.Time) bool {
	return !now.Before(r.ExpiresAt.Time)
}

// Pending returns the reservations that still hold a slot: not expired, and not
// covered by a live project (Projects.Covers). Everything else may be released.
func Pending(reservations []v1alpha1.ProjectReservation, live Projects, now time.Time) []v1alpha1.ProjectReservation {
	var pending []v1alpha1.ProjectReservation
	for _, r := range reservations {
		if !Expired(r, now) && !live.Covers(r) {
			pending = append(pending, r)
		}
	}
	return pending
}

// NextExpiry returns how long until the first of the reservations expires, or 0
// when there are none: the controller looks again then.
func NextExpiry(reservations []v1alpha1.ProjectReservation, now time.Time) time.Duration {
	var next time.Duration
	for _, r := range reservations {
		if d := r.ExpiresAt.Sub(now); d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	return next
}

// Outcome is what admission decided for one namespace.
type Outcome string

const (
	// Reserved: a new slot was reserved for the namespace.
	Reserved Outcome = "Reserved"
	// AlreadyReserved: the namespace already holds a reservation (a retried or
	// concurrent create of the same name); it was extended, not doubled.
	AlreadyReserved Outcome = "AlreadyReserved"
	// AlreadyCounted: the namespace is a live project of the customer already (a
	// re-applied create, which the API server answers with AlreadyExists).
	AlreadyCounted Outcome = "AlreadyCounted"
	// OverQuota: the customer has no free slot.
	OverQuota Outcome = "OverQuota"
	// TooManyPending: status.reservations is full; retry in a few seconds.
	TooManyPending Outcome = "TooManyPending"
	// CustomerNotFound: the customer does not exist.
	CustomerNotFound Outcome = "CustomerNotFound"
	// CustomerDeleting: the customer is being deleted and takes no new projects.
	CustomerDeleting Outcome = "CustomerDeleting"
)

// Decision is admission's answer for one namespace of one customer.
type Decision struct {
	Outcome  Outcome
	Customer string
	// Used is the number of slots taken before this namespace was considered.
	Used  int32
	Limit Limit
}

// Allowed reports whether the namespace may be admitted.
func (d Decision) Allowed() bool {
	switch d.Outcome {
	case Reserved, AlreadyReserved, AlreadyCounted:
		return true
	}
	return false
}

// Message explains a denial to the requester (empty when allowed).
func (d Decision) Message() string {
	switch d.Outcome {
	case OverQuota:
		return OverQuotaMessage(d.Customer, d.Used, d.Limit)
	case TooManyPending:
		return fmt.Sprintf("customer %q has %d project creates in flight; retry in a few seconds", d.Customer, MaxReservations)
	case CustomerNotFound:
		return fmt.Sprintf("customer %q does not exist (label %s): create the Customer first", d.Customer, v1alpha1.CustomerLabel)
	case CustomerDeleting:
		return fmt.Sprintf("customer %q is being deleted and takes no new projects", d.Customer)
	}
	return ""
}

// OverQuotaMessage is the denial of a project over quota, as DESIGN.md words it.
func OverQuotaMessage(customer string, used int32, limit Limit) string {
	return fmt.Sprintf("customer %q has %d of %d projects (%s); ask your partner to raise spec.maxProjects",
		customer, used, limit.Max, limit.Source())
}

// Tally is one customer's slots as admission computes them from the Customer (read
// from the cache first, its write then guarded by the read's resourceVersion, and
// read from the API server again after a conflict) and the live projects in this
// replica's cache:
//
//	used = max(live projects in the cache, status.projects) + pending reservations
//
// The controller releases a reservation in the same status write that counts its
// namespace in status.projects, so a slot is always in one of the two terms even
// when this cache lags the controller's; taking the larger of the two project
// counts covers a cache that is ahead of the controller's instead.
type Tally struct {
	customer     string
	live         Projects
	projects     int32
	reservations []v1alpha1.ProjectReservation
	now          time.Time
	changed      bool
}

// NewTally starts a tally. Expired reservations are dropped (they count for no
// one) from what a write would store, but do not cause a write by themselves;
// reservations of live projects are kept for the controller to release together
// with status.projects, but do not count twice.
func NewTally(customer *v1alpha1.Customer, live Projects, now time.Time) *Tally {
	t := &Tally{customer: customer.Name, live: live, projects: customer.Status.Projects, now: now}
	for _, r := range customer.Status.Reservations {
		if !Expired(r, now) {
			t.reservations = append(t.reservations, r)
		}
	}
	return t
}

// Used is the number of slots taken.
func (t *Tally) Used() int32 {
	used := max(int32(t.live.Len()), t.projects)
	for _, r := range t.reservations {
		if !t.live.Covers(r) {
			used++
		}
	}
	return used
}

// Admit decides one slot against limit and, when it needs a new slot and one is
// free, reserves it until expiresAt.
//
// For a CREATE, a namespace the cache shows live is a re-applied create (the API
// server answers AlreadyExists), once the ledger has confirmed that it still
// exists (Ledger.outdateGoneProjects). For an UPDATE that labels an existing namespace
// into the customer, the request's old object says that the namespace is not a
// project of this customer now, so a cached copy counts only if it is newer than
// that old object: an older one shows a time before the label was removed or
// moved away, which the cache has not caught up with.
func (t *Tally) Admit(slot Slot, limit Limit, expiresAt metav1.Time) Decision {
	d := Decision{Customer: t.customer, Used: t.Used(), Limit: limit}
	if t.live.HasAfter(slot.Namespace, slot.After) {
		d.Outcome = AlreadyCounted
		return d
	}
	for i := range t.reservations {
		r := &t.reservations[i]
		if r.Namespace != slot.Namespace {
			continue
		}
		// A create of the same name again: one slot, held until the later deadline,
		// so that the newer request cannot land after its reservation lapsed; and
		// until the cache shows the namespace after the newer request's old object.
		if r.ExpiresAt.Before(&expiresAt) {
			r.ExpiresAt = expiresAt
			t.changed = true
		}
		if newerVersion(slot.After, r.AfterResourceVersion) {
			r.AfterResourceVersion = slot.After
			t.changed = true
		}
		d.Outcome = AlreadyReserved
		return d
	}
	switch {
	case d.Used+1 > limit.Max:
		d.Outcome = OverQuota
	case len(t.reservations) >= MaxReservations:
		d.Outcome = TooManyPending
	default:
		t.reservations = append(t.reservations, v1alpha1.ProjectReservation{
			Namespace: slot.Namespace, ExpiresAt: expiresAt, AfterResourceVersion: slot.After})
		t.changed = true
		d.Outcome = Reserved
	}
	return d
}

// Slot is one request for a project slot.
type Slot struct {
	// Namespace is the namespace that is to become a project.
	Namespace string
	// After is, for an UPDATE that labels an existing namespace into the
	// customer, the resourceVersion of the request's old object; for a CREATE,
	// empty, or (set by the ledger) the version of a deleted namespace of that
	// name that the cache still shows.
	After string
}

// newerVersion reports whether resourceVersion a is to replace b as a
// reservation's afterResourceVersion: b is empty, or a is newer. Versions that
// cannot be compared keep the later request's, which waits for it to be passed.
func newerVersion(a, b string) bool {
	if a == "" || a == b {
		return false
	}
	if b == "" {
		return true
	}
	cmp, err := resourceversion.CompareResourceVersion(a, b)
	return err != nil || cmp > 0
}

// Changed reports whether the reservations differ from the Customer's.
func (t *Tally) Changed() bool { return t.changed }

// Reservations is the new status.reservations.
func (t *Tally) Reservations() []v1alpha1.ProjectReservation { return t.reservations }
