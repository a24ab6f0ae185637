package controllers

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/quota"
	"github.com/partnerops/customer-operator/internal/status"
)

// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customers,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customers/finalizers,verbs=update
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermemberships,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings,verbs=get;list;watch;create;update;patch;delete;deletecollection
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Labels on the objects the operator makes for a customer, so that it can find
// them again and remove them when the customer goes.
const (
	// ManagedByLabel marks objects the operator created.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of ManagedByLabel.
	ManagedByValue = "customer-operator"
)

// CustomerReconciler reconciles a Customer: it counts the customer's projects and
// active members into status, releases project reservations once their namespace
// exists or they expire, and, on deletion, holds the Customer until its projects are
// gone and then removes what the operator made for it.
type CustomerReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
	Clock    clock.PassiveClock
	// OperatorNamespace is the operator's own namespace: like kube-* and default,
	// never a project, even if labelled.
	OperatorNamespace string
	// DefaultMaxProjects is the limit of customers without a CustomerQuota, shown
	// in status.maxProjects.
	DefaultMaxProjects int32
	// APIReader reads uncached, to confirm a drop of status.projects (nil: the
	// Client, for tests).
	APIReader client.Reader
}

// Reconcile is the flow; the phases below do the work.
func (r *CustomerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	customer := &v1alpha1.Customer{}
	if err := r.Get(ctx, req.NamespacedName, customer); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	// The finalizer goes on before anything else, so that nothing the operator makes
	// for the customer can outlive it.
	if customer.DeletionTimestamp.IsZero() && !controllerutil.ContainsFinalizer(customer, v1alpha1.CustomerFinalizer) {
		err := r.patchFinalizers(ctx, customer, func() { controllerutil.AddFinalizer(customer, v1alpha1.CustomerFinalizer) })
		if apierrors.IsConflict(err) {
			return ctrl.Result{}, nil
		}
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}

	patcher := status.NewPatcher(customer)
	defer func() {
		if apierrors.IsConflict(reterr) {
			// The status patch would conflict too: it starts from the same read.
			reterr = ignoreConflict(ctx, reterr)
			return
		}
		if reterr != nil {
			status.MarkReconciling(customer, v1alpha1.ReconcileErrorReason, reterr.Error())
		}
		if err := patcher.PatchStatus(ctx, r.Client, customer); err != nil && reterr == nil {
			reterr = ignoreConflict(ctx, err)
		}
	}()

	if !customer.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, customer)
	}
	return r.reconcileNormal(ctx, customer)
}

// reconcileNormal counts projects and members and releases reservations. It sets
// Ready=True and observedGeneration.
func (r *CustomerReconciler) reconcileNormal(ctx context.Context, customer *v1alpha1.Customer) (ctrl.Result, error) {
	projects, err := r.projects(ctx, customer.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	live := liveProjects(projects)
	counted, err := r.confirmedCount(ctx, customer, int32(len(live)))
	if err != nil {
		return ctrl.Result{}, err
	}
	customer.Status.Projects = counted

	limit, err := r.projectLimit(ctx, customer.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	customer.Status.MaxProjects = limit.Max

	active, err := r.activeMembers(ctx, customer.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	customer.Status.Members = int32(active)

	// Released in the same status write that counts the namespace, so an admission
	// webhook that reads this Customer sees the slot either as a reservation or in
	// status.projects, never in neither.
	requeueAfter := r.releaseReservations(customer, projects)

	customer.Status.ObservedGeneration = customer.Generation
	status.MarkReady(customer, fmt.Sprintf("customer has %d project(s) and %d active member(s)", len(live), active))
	return ctrl.Result{RequeueAfter: requeueAfter}, nil
}

// reconcileDelete waits until the customer has no projects left, then removes the
// cluster-scoped RBAC the operator made for it and the finalizer. Memberships,
// messages and quotas that name the customer are the user's: they are left alone.
// Sets Ready=False (HasProjects) while it waits.
func (r *CustomerReconciler) reconcileDelete(ctx context.Context, customer *v1alpha1.Customer) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(customer, v1alpha1.CustomerFinalizer) {
		return ctrl.Result{}, nil
	}
	projects, err := r.projects(ctx, customer.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	customer.Status.Projects = int32(len(liveProjects(projects)))
	if len(projects) > 0 {
		names := make([]string, 0, len(projects))
		for _, ns := range projects {
			names = append(names, ns.Name)
		}
		sort.Strings(names)
		msg := fmt.Sprintf("waiting for %d project(s) to be deleted: %v", len(names), names)
		if ready := status.Get(customer, v1alpha1.ReadyCondition); ready == nil || ready.Reason != v1alpha1.HasProjectsReason {
			r.Recorder.Eventf(customer, nil, corev1.EventTypeWarning, v1alpha1.HasProjectsReason, "Delete", msg)
		}
		status.MarkReconciling(customer, v1alpha1.HasProjectsReason, msg)
		// Namespace events requeue the customer; no polling needed.
		return ctrl.Result{}, nil
	}

	// A create admitted before the deletion started may still land: hold the
	// Customer until its reservation has been counted or has lapsed, so that no
	// project outlives its customer.
	live := quota.LiveProjects(projects, r.OperatorNamespace)
	if pending := quota.Pending(customer.Status.Reservations, live, r.Clock.Now()); len(pending) > 0 {
		status.MarkReconciling(customer, v1alpha1.HasProjectsReason,
			fmt.Sprintf("waiting for %d admitted project create(s) to land or lapse", len(pending)))
		return ctrl.Result{RequeueAfter: quota.NextExpiry(pending, r.Clock.Now())}, nil
	}

	if err := r.deleteOwnedRBAC(ctx, customer.Name); err != nil {
		return ctrl.Result{}, err
	}

	err = r.patchFinalizers(ctx, customer, func() { controllerutil.RemoveFinalizer(customer, v1alpha1.CustomerFinalizer) })
	if apierrors.IsConflict(err) {
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	log.FromContext(ctx).Info("Customer deleted; removed the operator's RBAC for it")
	return ctrl.Result{}, nil
}

// patchFinalizers writes the change mutate makes to customer's finalizers. A merge
// patch replaces the whole list, so it goes under the optimistic lock: a finalizer
// someone added since the cache's copy (foregroundDeletion, another tool's) must
// not be dropped. On a conflict the caller stops: the newer version's watch event
// brings the customer back.
func (r *CustomerReconciler) patchFinalizers(ctx context.Context, customer *v1alpha1.Customer, mutate func()) error {
	base := customer.DeepCopy()
	mutate()
	return r.Patch(ctx, customer, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
}

// projects lists the customer's project namespaces, terminating ones included.
// System namespaces are never projects, labelled or not.
func (r *CustomerReconciler) projects(ctx context.Context, customer string) ([]corev1.Namespace, error) {
	var list corev1.NamespaceList
	if err := r.List(ctx, &list, client.MatchingFields{quota.NamespaceCustomerIndex: customer}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing projects: %w", err)
	}
	projects := list.Items[:0]
	for _, ns := range list.Items {
		if !quota.IsSystemNamespace(ns.Name, r.OperatorNamespace) {
			projects = append(projects, ns)
		}
	}
	return projects, nil
}

// confirmedCount is the number of live projects to record. A count above or at
// status.projects is recorded as the cache has it; a lower one only once an
// uncached read of the API server agrees. The admission webhooks count
// max(their cache, status.projects): a leader whose Namespace informer lags its
// Customer informer (just after a handover) must not lower status.projects below
// a project the previous leader counted there, and whose reservation it released,
// before this cache has seen the project. Drops are rare (a project deleted or
// relabelled), so the extra read is too.
func (r *CustomerReconciler) confirmedCount(ctx context.Context, customer *v1alpha1.Customer, cached int32) (int32, error) {
	if cached >= customer.Status.Projects {
		return cached, nil
	}
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	var list corev1.NamespaceList
	if err := reader.List(ctx, &list, client.MatchingLabels{v1alpha1.CustomerLabel: customer.Name}); err != nil {
		return 0, fmt.Errorf("confirming the projects of customer %q: %w", customer.Name, err)
	}
	live := int32(0)
	for _, ns := range list.Items {
		if ns.DeletionTimestamp.IsZero() && !quota.IsSystemNamespace(ns.Name, r.OperatorNamespace) {
			live++
		}
	}
	return max(live, cached), nil
}

// projectLimit is the customer's limit: its CustomerQuota (read from the cache, as
// admission does), or the default.
func (r *CustomerReconciler) projectLimit(ctx context.Context, customer string) (quota.Limit, error) {
	q := &v1alpha1.CustomerQuota{}
	if err := r.Get(ctx, types.NamespacedName{Name: customer}, q); err != nil {
		if apierrors.IsNotFound(err) {
			return quota.LimitFor(nil, r.DefaultMaxProjects), nil
		}
		return quota.Limit{}, fmt.Errorf("reading CustomerQuota %q: %w", customer, err)
	}
	return quota.LimitFor(q, r.DefaultMaxProjects), nil
}

// liveProjects drops projects that are being deleted: they no longer count.
func liveProjects(projects []corev1.Namespace) []corev1.Namespace {
	live := make([]corev1.Namespace, 0, len(projects))
	for _, ns := range projects {
		if ns.DeletionTimestamp.IsZero() {
			live = append(live, ns)
		}
	}
	return live
}

func (r *CustomerReconciler) activeMembers(ctx context.Context, customer string) (int, error) {
	var list v1alpha1.CustomerMembershipList
	if err := r.List(ctx, &list, client.MatchingFields{MembershipCustomerIndex: customer}, client.UnsafeDisableDeepCopy); err != nil {
		return 0, fmt.Errorf("listing memberships: %w", err)
	}
	active := map[string]bool{}
	for i := range list.Items {
		if members.IsActive(&list.Items[i]) {
			active[string(list.Items[i].Spec.Email)] = true
		}
	}
	return len(active), nil
}

// releaseReservations drops reservations whose namespace is now a live project (it
// counts in status.projects from now on) or whose time is up (the create failed or
// was never made), by the same rule (quota.Pending) by which admission counts them.
// A namespace of that name that is terminating does not release it: a create
// admitted for the name may still land once the old namespace is gone. It returns
// when the next reservation expires, to requeue then.
func (r *CustomerReconciler) releaseReservations(customer *v1alpha1.Customer, projects []corev1.Namespace) time.Duration {
	if len(customer.Status.Reservations) == 0 {
		return 0
	}
	now := r.Clock.Now()
	customer.Status.Reservations = quota.Pending(customer.Status.Reservations, quota.LiveProjects(projects, r.OperatorNamespace), now)
	return quota.NextExpiry(customer.Status.Reservations, now)
}

// deleteOwnedRBAC removes the cluster-scoped RBAC objects the operator made for the
// customer. Namespaced ones went with the project namespaces.
func (r *CustomerReconciler) deleteOwnedRBAC(ctx context.Context, customer string) error {
	selector := client.MatchingLabels{v1alpha1.CustomerLabel: customer, ManagedByLabel: ManagedByValue}
	if err := r.DeleteAllOf(ctx, &rbacv1.ClusterRoleBinding{}, selector); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting ClusterRoleBindings: %w", err)
	}
	if err := r.DeleteAllOf(ctx, &rbacv1.ClusterRole{}, selector); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting ClusterRoles: %w", err)
	}
	return nil
}

// SetupWithManager watches Customers, their project namespaces and memberships.
func (r *CustomerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	return ctrl.NewControllerManagedBy(mgr).
		// A new Customer is reconciled after CreateCoalesceDelay (below); everything
		// else about it (updates, the start of its deletion, a restart's initial
		// list) at once.
		For(&v1alpha1.Customer{}, builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(e event.CreateEvent) bool { return e.IsInInitialList },
		})).
		Watches(&v1alpha1.Customer{}, coalescedCreates(sameName),
			builder.WithPredicates(predicate.Funcs{
				CreateFunc:  func(e event.CreateEvent) bool { return !e.IsInInitialList },
				UpdateFunc:  func(event.UpdateEvent) bool { return false },
				DeleteFunc:  func(event.DeleteEvent) bool { return false },
				GenericFunc: func(event.GenericEvent) bool { return false },
			})).
		Watches(&corev1.Namespace{}, enqueueProjectCustomers(),
			builder.WithPredicates(predicate.Or(predicate.LabelChangedPredicate{}, deletionPredicate()))).
		Watches(&v1alpha1.CustomerMembership{}, coalescedCreates(customerOfMembership),
			builder.WithPredicates(memberCountPredicate())).
		Watches(&v1alpha1.CustomerQuota{}, coalescedCreates(sameName),
			builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Named("customer").
		Complete(r)
}

// CreateCoalesceDelay is how long the create of a Customer, of its CustomerQuota,
// of one of its memberships or of one of its projects waits before the Customer
// is reconciled. What is
// applied together (kubectl apply -f of a directory, a GitOps sync) is then
// counted in one status write, instead of one write per object, each reconcile
// racing the watch event of the write before it (and conflicting with it when the
// API server is busy). Changes and deletions reconcile at once. Until the
// finalizer is added, the webhook on DELETE refuses to delete a Customer with
// projects all the same.
const CreateCoalesceDelay = time.Second

// coalescedCreates enqueues the Customers that mapFn names: after
// CreateCoalesceDelay for a create (the delaying queue keeps the earliest time
// when the key waits already, so a burst becomes one reconcile), at once for a
// restart's initial list and for every other event.
func coalescedCreates(mapFn handler.MapFunc) handler.EventHandler {
	add := func(ctx context.Context, o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request], delay time.Duration) {
		for _, req := range mapFn(ctx, o) {
			if delay > 0 {
				q.AddAfter(req, delay)
			} else {
				q.Add(req)
			}
		}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			delay := CreateCoalesceDelay
			if e.IsInInitialList {
				delay = 0
			}
			add(ctx, e.Object, q, delay)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.ObjectOld, q, 0)
			add(ctx, e.ObjectNew, q, 0)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q, 0)
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			add(ctx, e.Object, q, 0)
		},
	}
}

// enqueueProjectCustomers maps a project namespace to its customer (and to the
// CustomerQuota of the same name), a new project after CreateCoalesceDelay: the
// creates of a burst are counted (and their reservations released) in one status
// write per customer instead of one each. Admission does not wait for it: a
// namespace holds its slot by its reservation until then, and counts once either
// way (quota.Tally). When the label moves from one customer to another, both are
// enqueued: the old one has a project less.
func enqueueProjectCustomers() handler.EventHandler {
	return coalescedCreates(customerOfProject)
}

// customerOfProject maps a namespace to the customer its label names, if any.
func customerOfProject(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[v1alpha1.CustomerLabel]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
}

// customerOfMembership maps a membership to its customer.
func customerOfMembership(_ context.Context, o client.Object) []reconcile.Request {
	m := o.(*v1alpha1.CustomerMembership)
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: string(m.Spec.Customer)}}}
}

// memberCountPredicate passes the membership events that can change its
// customer's member count: creates, deletes, and updates that change whether it is
// active (accepted, deleted, a duplicate) or what it names (a new generation).
// Status writes on the way (invitation attempts, sends) do not.
func memberCountPredicate() predicate.Funcs {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			older, newer := e.ObjectOld.(*v1alpha1.CustomerMembership), e.ObjectNew.(*v1alpha1.CustomerMembership)
			return older.Generation != newer.Generation || members.IsActive(older) != members.IsActive(newer)
		},
	}
}

// deletionPredicate passes creates, deletes and the start of a deletion.
func deletionPredicate() predicate.Funcs {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
	}
}
