package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/quota"
	"github.com/partnerops/customer-operator/internal/status"
)

// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customerquotas,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customerquotas/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customers,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// CustomerQuotaReconciler reports a CustomerQuota's usage: status.used (the
// customer's live projects), status.max, and WithinQuota. It enforces nothing: the
// namespace admission webhook refuses projects over quota, and lowering a quota
// below usage deletes nothing. It holds no finalizer: a deleted quota leaves the
// customer on --default-max-projects, with nothing to clean up.
type CustomerQuotaReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
	// OperatorNamespace is the operator's own namespace: never a project.
	OperatorNamespace string
}

// Reconcile is the flow; the phases below do the work.
func (r *CustomerQuotaReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	q := &v1alpha1.CustomerQuota{}
	if err := r.Get(ctx, req.NamespacedName, q); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !q.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	before := q.DeepCopy()
	patcher := status.NewPatcher(q)
	defer func() {
		if apierrors.IsConflict(reterr) {
			// The status patch would conflict too: it starts from the same read.
			reterr = ignoreConflict(ctx, reterr)
			return
		}
		if reterr != nil {
			status.MarkReconciling(q, v1alpha1.ReconcileErrorReason, reterr.Error())
		}
		if err := patcher.PatchStatus(ctx, r.Client, q); err != nil {
			if reterr == nil {
				reterr = ignoreConflict(ctx, err)
			}
			return
		}
		r.notify(before, q)
	}()

	return ctrl.Result{}, r.reconcileNormal(ctx, q)
}

// reconcileNormal counts the customer's live projects against spec.maxProjects. It
// sets used, max and WithinQuota, then Ready=True (over quota included: that is
// the customer's state, not a failure of the operator), or Stalled with reason
// CustomerNotFound while the customer does not exist, CustomerDeleting while it
// is being deleted. observedGeneration either
// way: the current spec has been acted on.
func (r *CustomerQuotaReconciler) reconcileNormal(ctx context.Context, q *v1alpha1.CustomerQuota) error {
	customerName := string(q.Spec.Customer)
	var projects corev1.NamespaceList
	if err := r.List(ctx, &projects, client.MatchingFields{quota.NamespaceCustomerIndex: customerName}, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing projects: %w", err)
	}
	used := int32(quota.LiveProjects(projects.Items, r.OperatorNamespace).Len())
	limit := quota.LimitFor(q, 0)
	q.Status.Used, q.Status.Max = used, limit.Max
	setWithinQuota(q, used, limit.Max)

	var customer v1alpha1.Customer
	err := r.Get(ctx, types.NamespacedName{Name: customerName}, &customer)
	switch {
	case apierrors.IsNotFound(err):
		q.Status.ObservedGeneration = q.Generation
		status.MarkStalled(q, v1alpha1.CustomerNotFoundReason,
			fmt.Sprintf("customer %q (spec.customer) does not exist; the quota applies once it does", customerName))
		return nil
	case err != nil:
		return fmt.Errorf("reading customer %q: %w", customerName, err)
	}
	q.Status.ObservedGeneration = q.Generation
	if !customer.DeletionTimestamp.IsZero() {
		// Admission refuses its new projects; the count goes on until it is gone.
		status.MarkStalled(q, v1alpha1.CustomerDeletingReason,
			fmt.Sprintf("customer %q (spec.customer) is being deleted and takes no new projects", customerName))
		return nil
	}
	status.MarkReady(q, fmt.Sprintf("%d of %d projects used", used, limit.Max))
	return nil
}

// setWithinQuota sets WithinQuota: False (OverQuota) only when the customer has
// more projects than allowed, which happens only when the quota was lowered.
func setWithinQuota(q *v1alpha1.CustomerQuota, used, limit int32) {
	if used > limit {
		status.Set(q, v1alpha1.WithinQuotaCondition, metav1.ConditionFalse, v1alpha1.OverQuotaReason,
			fmt.Sprintf("%d of %d projects used: new projects are refused until the customer has fewer than %d or spec.maxProjects is raised; nothing is deleted",
				used, limit, limit))
		return
	}
	status.Set(q, v1alpha1.WithinQuotaCondition, metav1.ConditionTrue, v1alpha1.WithinQuotaReason,
		fmt.Sprintf("%d of %d projects used", used, limit))
}

// notify records an event when the quota goes over or comes back within, once the
// status that says so has been written: a change worth telling, not every count.
func (r *CustomerQuotaReconciler) notify(before, after *v1alpha1.CustomerQuota) {
	was, is := status.Get(before, v1alpha1.WithinQuotaCondition), status.Get(after, v1alpha1.WithinQuotaCondition)
	if is == nil || (was != nil && was.Status == is.Status) {
		return
	}
	switch {
	case is.Status == metav1.ConditionFalse:
		r.Recorder.Eventf(after, nil, corev1.EventTypeWarning, v1alpha1.OverQuotaReason, "Count", is.Message)
	case was != nil:
		r.Recorder.Eventf(after, nil, corev1.EventTypeNormal, v1alpha1.WithinQuotaReason, "Count", is.Message)
	}
}

// SetupWithManager watches CustomerQuotas, the projects they count (a namespace
// maps to the quota named like its customer) and Customers (a quota resumes when
// its customer appears).
func (r *CustomerQuotaReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.CustomerQuota{}).
		Watches(&corev1.Namespace{}, enqueueProjectCustomers(),
			builder.WithPredicates(predicate.Or(predicate.LabelChangedPredicate{}, deletionPredicate()))).
		Watches(&v1alpha1.Customer{}, handler.EnqueueRequestsFromMapFunc(sameName),
			builder.WithPredicates(customerPresencePredicate())).
		Named("customerquota").
		Complete(r)
}

// sameName maps a Customer to its CustomerQuota and back: they share the name.
func sameName(_ context.Context, o client.Object) []reconcile.Request {
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetName()}}}
}

// customerPresencePredicate passes a Customer's creation, the start of its
// deletion and its deletion only: a quota depends on whether its customer exists
// and is not being deleted, not on its status writes.
func customerPresencePredicate() predicate.Funcs {
	return predicate.Funcs{
		UpdateFunc:  deletionPredicate().UpdateFunc,
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
