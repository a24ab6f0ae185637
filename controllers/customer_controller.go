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
		patch := client.MergeFrom(customer.DeepCopy())
		controllerutil.AddFinalizer(customer, v1alpha1.CustomerFinalizer)
		if err := r.Patch(ctx, customer, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("adding finalizer: %w", err)
		}
	}

	patcher := status.NewPatcher(customer)
	defer func() {
		if reterr != nil {
			status.MarkReconciling(customer, v1alpha1.ReconcileErrorReason, reterr.Error())
		}
		if err := patcher.PatchStatus(ctx, r.Client, customer); err != nil && reterr == nil {
			reterr = err
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
	customer.Status.Projects = int32(len(live))

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

	if err := r.deleteOwnedRBAC(ctx, customer.Name); err != nil {
		return ctrl.Result{}, err
	}

	patch := client.MergeFrom(customer.DeepCopy())
	controllerutil.RemoveFinalizer(customer, v1alpha1.CustomerFinalizer)
	if err := r.Patch(ctx, customer, patch); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	log.FromContext(ctx).Info("Customer deleted; removed the operator's RBAC for it")
	return ctrl.Result{}, nil
}

// projects lists the customer's project namespaces, terminating ones included.
func (r *CustomerReconciler) projects(ctx context.Context, customer string) ([]corev1.Namespace, error) {
	var list corev1.NamespaceList
	if err := r.List(ctx, &list, client.MatchingLabels{v1alpha1.CustomerLabel: customer}); err != nil {
		return nil, fmt.Errorf("listing projects: %w", err)
	}
	return list.Items, nil
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
	if err := r.List(ctx, &list, client.MatchingFields{MembershipCustomerIndex: customer}); err != nil {
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

// releaseReservations drops reservations whose namespace now exists (it counts in
// status.projects from now on) or whose time is up (the create failed or was never
// made). It returns when the next reservation expires, to requeue then.
func (r *CustomerReconciler) releaseReservations(customer *v1alpha1.Customer, projects []corev1.Namespace) time.Duration {
	if len(customer.Status.Reservations) == 0 {
		return 0
	}
	exists := make(map[string]bool, len(projects))
	for _, ns := range projects {
		exists[ns.Name] = true
	}
	now := r.Clock.Now()
	var next time.Duration
	kept := customer.Status.Reservations[:0:0]
	for _, res := range customer.Status.Reservations {
		if exists[res.Namespace] || !now.Before(res.ExpiresAt.Time) {
			continue
		}
		kept = append(kept, res)
		if d := res.ExpiresAt.Sub(now); next == 0 || d < next {
			next = d
		}
	}
	if len(kept) == 0 {
		kept = nil
	}
	customer.Status.Reservations = kept
	return next
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
		For(&v1alpha1.Customer{}).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(customerOfNamespace),
			builder.WithPredicates(predicate.Or(predicate.LabelChangedPredicate{}, deletionPredicate()))).
		Watches(&v1alpha1.CustomerMembership{}, handler.EnqueueRequestsFromMapFunc(customerOfMembership)).
		Named("customer").
		Complete(r)
}

// customerOfNamespace maps a project namespace to its customer.
func customerOfNamespace(_ context.Context, o client.Object) []reconcile.Request {
	name, ok := o.GetLabels()[v1alpha1.CustomerLabel]
	if !ok || name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
}

// customerOfMembership maps a membership to its customer.
func customerOfMembership(_ context.Context, o client.Object) []reconcile.Request {
	m := o.(*v1alpha1.CustomerMembership)
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: string(m.Spec.Customer)}}}
}

// deletionPredicate passes creates, deletes and the start of a deletion.
func deletionPredicate() predicate.Funcs {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
	}
}
