package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/access"
	"github.com/partnerops/customer-operator/internal/quota"
)

// The operator writes RoleBindings in every project and ClusterRoles/Bindings per
// customer. It may bind admin/edit/view and the static access roles because
// config/rbac/bind_role.yaml grants it `bind` on exactly those names; the rules of
// the per-customer ClusterRoles are gets it holds itself (below), so it needs no
// escalate.
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customerquotas,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermessages,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermemberships,verbs=get;list;watch

// accessFieldManager owns the fields of the RBAC objects the operator applies.
const accessFieldManager = "customer-operator"

// AccessReconciler keeps the RBAC of each customer equal to what its active
// memberships grant (internal/access computes it). It is level-based and per
// customer: one reconcile reads the customer's memberships, projects and messages
// and converges every binding of that customer, so a role change, a deletion, a
// new project or a new message all come down to the same computation. Nothing is
// written when nothing differs.
type AccessReconciler struct {
	client.Client
	// UsernamePrefix is --username-prefix.
	UsernamePrefix string
	// APIReader reads uncached: the cache holds only the RBAC objects that carry
	// the operator's labels.
	APIReader client.Reader
	// OperatorNamespace is the operator's own namespace, which is never a project
	// (quota.IsSystemNamespace), labelled or not.
	OperatorNamespace string
}

// Reconcile converges the RBAC of the customer named by req. What is no longer
// desired is pruned even when something could not be applied: one binding that
// fails must not keep a removed member's access elsewhere.
func (r *AccessReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	in, err := r.input(ctx, req.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, r.converge(ctx, req.Name, access.Desired(in))
}

// input reads what the customer's access depends on. A customer that does not
// exist or is being deleted grants nothing, so its input is empty.
func (r *AccessReconciler) input(ctx context.Context, customerName string) (access.Input, error) {
	in := access.Input{Customer: customerName}
	customer := &v1alpha1.Customer{}
	if err := r.Get(ctx, types.NamespacedName{Name: customerName}, customer); err != nil {
		return in, client.IgnoreNotFound(err)
	}
	if !customer.DeletionTimestamp.IsZero() {
		return in, nil
	}

	var memberships v1alpha1.CustomerMembershipList
	if err := r.List(ctx, &memberships, client.MatchingFields{MembershipCustomerIndex: customerName}, client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("listing memberships: %w", err)
	}
	in.Members = access.ActiveMembers(memberships.Items, r.UsernamePrefix)
	for _, m := range memberships.Items {
		in.Memberships = append(in.Memberships, m.Name)
	}

	var projects corev1.NamespaceList
	// Through the index, not a label selector: the cache matches a selector against
	// every cached namespace, which is every project of every customer.
	if err := r.List(ctx, &projects, client.MatchingFields{quota.NamespaceCustomerIndex: customerName}, client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("listing projects: %w", err)
	}
	// System namespaces are left out as the quota leaves them out: admission keeps
	// the label off them, but one labelled before the operator was installed (or an
	// operator namespace the policy does not name) must not make every member of the
	// customer an admin there.
	in.Projects = quota.LiveProjects(projects.Items, r.OperatorNamespace).Names()

	var messages v1alpha1.CustomerMessageList
	if err := r.List(ctx, &messages, client.MatchingFields{MessageCustomerIndex: customerName}, client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("listing messages: %w", err)
	}
	for _, m := range messages.Items {
		in.Messages = append(in.Messages, m.Name)
	}
	return in, nil
}

// converge writes the desired objects that are missing or differ and deletes the
// customer's objects that are no longer desired, in this order: project
// RoleBindings, ClusterRoles, the pruning, then ClusterRoleBindings with the member
// binding last (a membership reads "access granted", and its role's record, from
// it). One object that fails does not stop the others, and pruning always runs; if
// anything before a ClusterRoleBinding failed, it only loses subjects (removals go
// through, additions wait for the retry) and the member binding keeps its previous
// roles record, so "access granted" is never read while part of it is
// missing or while a former role's grant is still there.
func (r *AccessReconciler) converge(ctx context.Context, customer string, desired access.Objects) error {
	var errs []error
	for _, rb := range desired.RoleBindings {
		errs = append(errs, r.applyBinding(ctx, rb, &rbacv1.RoleBinding{}, false))
	}
	for _, cr := range desired.ClusterRoles {
		current := &rbacv1.ClusterRole{}
		errs = append(errs, r.applyIfChanged(ctx, cr, current, func() bool {
			return current.AggregationRule == nil && equality.Semantic.DeepEqual(current.Rules, cr.Rules)
		}))
	}
	errs = append(errs, r.prune(ctx, customer, desired))
	for _, crb := range desired.ClusterRoleBindings {
		// Also after a ClusterRoleBinding of this pass failed: the member binding
		// comes last and must not record what an earlier one could not grant.
		onlyRemove := errors.Join(errs...) != nil
		errs = append(errs, r.applyBinding(ctx, crb, &rbacv1.ClusterRoleBinding{}, onlyRemove))
	}
	return errors.Join(errs...)
}

// applyBinding converges one RoleBinding or ClusterRoleBinding. Each name encodes
// its role, so a role change is a different binding, never an update. But roleRef
// is immutable, and a customer's Admin may write RoleBindings in a project: a
// binding of one of our names made with another role cannot be applied over, so it
// is deleted (if it is still the one read) and made anew. The cache holds only the
// bindings that carry our labels, so one made by someone else shows up as the
// apply's refusal and is read uncached. With onlyRemove, subjects that the binding
// does not have yet are left out, and a roles record (access.RolesAnnotation) stays
// what it was, less whoever left.
func (r *AccessReconciler) applyBinding(ctx context.Context, desired, current client.Object, onlyRemove bool) error {
	err := r.Get(ctx, client.ObjectKeyFromObject(desired), current)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading %s: %w", describe(desired), err)
	}
	exists := err == nil
	if exists {
		replaced, err := r.replaceIfBoundElsewhere(ctx, desired, current)
		if err != nil {
			return err
		}
		exists = !replaced
	}
	if onlyRemove {
		if !exists {
			return nil
		}
		desired = removalsOnly(desired, current)
	}
	if exists && hasLabels(current, desired.GetLabels()) &&
		current.GetAnnotations()[access.RolesAnnotation] == desired.GetAnnotations()[access.RolesAnnotation] {
		_, subjects := bindingOf(current)
		if _, wantSubjects := bindingOf(desired); equality.Semantic.DeepEqual(subjects, wantSubjects) {
			return nil
		}
	}
	err = r.serverSideApply(ctx, desired)
	if !apierrors.IsInvalid(err) || r.APIReader == nil {
		return err
	}
	live := desired.DeepCopyObject().(client.Object)
	if getErr := r.APIReader.Get(ctx, client.ObjectKeyFromObject(desired), live); getErr != nil {
		return errors.Join(err, getErr)
	}
	if replaced, replaceErr := r.replaceIfBoundElsewhere(ctx, desired, live); replaceErr != nil || !replaced {
		return errors.Join(err, replaceErr)
	}
	if onlyRemove {
		return nil
	}
	return r.serverSideApply(ctx, desired)
}

// replaceIfBoundElsewhere deletes current, the binding of desired's name as read,
// when its roleRef differs from desired's, and reports whether it did.
func (r *AccessReconciler) replaceIfBoundElsewhere(ctx context.Context, desired, current client.Object) (bool, error) {
	ref, _ := bindingOf(current)
	wantRef, _ := bindingOf(desired)
	if equality.Semantic.DeepEqual(ref, wantRef) {
		return false, nil
	}
	// The precondition makes sure we delete what we looked at, not a binding made
	// since.
	if err := r.Delete(ctx, current, client.Preconditions{UID: ptr.To(current.GetUID())}); err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("deleting %s, bound to %s %s instead of %s %s: %w",
			describe(desired), ref.Kind, ref.Name, wantRef.Kind, wantRef.Name, err)
	}
	log.FromContext(ctx).Info("Deleted a binding of the operator's name bound to another role, to make it anew",
		"object", describe(desired), "roleRef", ref.Kind+" "+ref.Name, "want", wantRef.Kind+" "+wantRef.Name)
	return true, nil
}

// bindingOf returns the roleRef and subjects of a RoleBinding or ClusterRoleBinding.
func bindingOf(o client.Object) (rbacv1.RoleRef, []rbacv1.Subject) {
	switch b := o.(type) {
	case *rbacv1.RoleBinding:
		return b.RoleRef, b.Subjects
	case *rbacv1.ClusterRoleBinding:
		return b.RoleRef, b.Subjects
	}
	panic(fmt.Sprintf("bindingOf: %T is not a binding", o))
}

// removalsOnly returns a copy of the binding desired that adds no subject current
// lacks: its subjects are those of desired that current has. If desired has a
// roles record, the copy's is what current's and desired's records share (a role
// this pass no longer wants may have lost its grants to the pruning; one it still
// wants only gained), restricted to the kept subjects; nothing when current's is
// missing or unreadable.
func removalsOnly(desired, current client.Object) client.Object {
	_, have := bindingOf(current)
	_, want := bindingOf(desired)
	kept := make([]rbacv1.Subject, 0, len(want))
	users := map[string]bool{}
	for _, s := range want {
		if slices.Contains(have, s) {
			kept = append(kept, s)
			users[s.Name] = true
		}
	}
	out := desired.DeepCopyObject().(client.Object)
	switch o := out.(type) {
	case *rbacv1.RoleBinding:
		o.Subjects = kept
	case *rbacv1.ClusterRoleBinding:
		o.Subjects = kept
	}
	if wanted, ok := out.GetAnnotations()[access.RolesAnnotation]; ok {
		wantedRoles, _ := access.ParseRolesRecord(wanted)
		recorded, _ := access.ParseRolesRecord(current.GetAnnotations()[access.RolesAnnotation])
		recorded = slices.DeleteFunc(recorded, func(m access.Member) bool {
			return !users[m.Username] || !slices.Contains(wantedRoles, m)
		})
		annotations := maps.Clone(out.GetAnnotations())
		annotations[access.RolesAnnotation] = access.RolesRecord(recorded)
		out.SetAnnotations(annotations)
	}
	return out
}

// applyIfChanged server-side applies desired unless the cached object already has
// its labels and equal() holds.
func (r *AccessReconciler) applyIfChanged(ctx context.Context, desired, current client.Object, equal func() bool) error {
	err := r.Get(ctx, client.ObjectKeyFromObject(desired), current)
	switch {
	case err == nil && hasLabels(current, desired.GetLabels()) && equal():
		return nil
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("reading %s: %w", describe(desired), err)
	}
	return r.serverSideApply(ctx, desired)
}

// serverSideApply applies desired as the operator's field manager, taking over
// fields others changed.
func (r *AccessReconciler) serverSideApply(ctx context.Context, desired client.Object) error {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(desired)
	if err != nil {
		return err
	}
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u}),
		client.FieldOwner(accessFieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %s: %w", describe(desired), err)
	}
	log.FromContext(ctx).V(1).Info("Applied access", "object", describe(desired))
	return nil
}

// prune deletes the customer's RBAC objects that are no longer desired.
func (r *AccessReconciler) prune(ctx context.Context, customer string, desired access.Objects) error {
	keep := map[string]bool{}
	for _, o := range desired.RoleBindings {
		keep[describe(o)] = true
	}
	for _, o := range desired.ClusterRoles {
		keep[describe(o)] = true
	}
	for _, o := range desired.ClusterRoleBindings {
		keep[describe(o)] = true
	}
	// The index narrows the candidates to the customer's; the labels are checked
	// on each of them as before.
	selector := []client.ListOption{client.MatchingFields{AccessCustomerIndex: customer}, client.MatchingLabels(access.Labels(customer))}

	var stale []client.Object
	var rbs rbacv1.RoleBindingList
	if err := r.List(ctx, &rbs, selector...); err != nil {
		return fmt.Errorf("listing RoleBindings: %w", err)
	}
	for i := range rbs.Items {
		stale = append(stale, &rbs.Items[i])
	}
	// Bindings before roles, so nobody is left bound to a role that is gone.
	var crbs rbacv1.ClusterRoleBindingList
	if err := r.List(ctx, &crbs, selector...); err != nil {
		return fmt.Errorf("listing ClusterRoleBindings: %w", err)
	}
	for i := range crbs.Items {
		stale = append(stale, &crbs.Items[i])
	}
	var crs rbacv1.ClusterRoleList
	if err := r.List(ctx, &crs, selector...); err != nil {
		return fmt.Errorf("listing ClusterRoles: %w", err)
	}
	for i := range crs.Items {
		stale = append(stale, &crs.Items[i])
	}

	var errs []error
	for _, o := range stale {
		if keep[describe(o)] {
			continue
		}
		// The precondition makes sure we delete what we looked at, not an object
		// of the same name created since.
		if err := r.Delete(ctx, o, client.Preconditions{UID: ptr.To(o.GetUID())}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", describe(o), err))
			continue
		}
		log.FromContext(ctx).V(1).Info("Removed access", "object", describe(o))
	}
	return errors.Join(errs...)
}

// SetupWithManager watches everything a customer's access depends on, mapped to
// the customer: the Customer itself (created, or its deletion started),
// memberships, project namespaces (including the customer a namespace moved away
// from), messages (their names go into the member role), and the RBAC objects it
// made (so a binding edited or deleted by hand is put back).
func (r *AccessReconciler) SetupWithManager(mgr ctrl.Manager) error {
	byLabel := handler.EnqueueRequestsFromMapFunc(customerOfLabel)
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Customer{}, builder.WithPredicates(deletionPredicate())).
		Watches(&v1alpha1.CustomerMembership{}, handler.EnqueueRequestsFromMapFunc(customerOfMembership),
			builder.WithPredicates(membershipGrantChanged(r.UsernamePrefix))).
		Watches(&corev1.Namespace{}, byLabel,
			builder.WithPredicates(predicate.Or(predicate.LabelChangedPredicate{}, deletionPredicate()))).
		Watches(&v1alpha1.CustomerMessage{}, handler.EnqueueRequestsFromMapFunc(customerOfMessage),
			builder.WithPredicates(createOrDeletePredicate())).
		Watches(&rbacv1.RoleBinding{}, byLabel).
		Watches(&rbacv1.ClusterRole{}, byLabel).
		Watches(&rbacv1.ClusterRoleBinding{}, byLabel).
		Named("access").
		Complete(r)
}

// customerOfLabel maps an object labelled with a customer to that customer. For an
// update, controller-runtime calls it with the old and the new object, so a label
// that moved enqueues both customers.
func customerOfLabel(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[v1alpha1.CustomerLabel]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
}

func customerOfMessage(_ context.Context, o client.Object) []reconcile.Request {
	m := o.(*v1alpha1.CustomerMessage)
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: string(m.Spec.Customer)}}}
}

// createOrDeletePredicate passes creates and deletes only: a message's name is
// all the member role needs.
func createOrDeletePredicate() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }}
}

func hasLabels(o client.Object, want map[string]string) bool {
	got := o.GetLabels()
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func describe(o client.Object) string {
	kind := fmt.Sprintf("%T", o)
	switch o.(type) {
	case *rbacv1.RoleBinding:
		kind = "RoleBinding"
	case *rbacv1.ClusterRole:
		kind = "ClusterRole"
	case *rbacv1.ClusterRoleBinding:
		kind = "ClusterRoleBinding"
	}
	if o.GetNamespace() != "" {
		return kind + " " + o.GetNamespace() + "/" + o.GetName()
	}
	return kind + " " + o.GetName()
}
