package controllers

import (
	"context"
	"fmt"
	"slices"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/access"
	"github.com/partnerops/customer-operator/internal/invitation"
	"github.com/partnerops/customer-operator/internal/mail"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/status"
)

// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermemberships,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermemberships/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customers,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Defaults of the invitation retry backoff.
const (
	DefaultSendBackoff    = 5 * time.Second
	DefaultMaxSendBackoff = 5 * time.Minute
)

// CustomerMembershipReconciler reconciles a CustomerMembership: it sends the
// invitation e-mail of each round exactly once in practice, follows expiry and
// acceptance, and reports whether the membership's access has been granted (the
// AccessReconciler grants it, per customer).
//
// Exactly-once: before sending, the attempt (round, attempts+1, lastAttemptTime)
// is written to status with an optimistic lock; only if that write succeeds is the
// mail sent, and then sentTime is recorded. A stale cache, a second replica or a
// re-run of the same reconcile therefore cannot send what is recorded as sent, nor
// send twice for one recorded attempt. A crash between the send and the second
// write leaves an attempt without sentTime, which is sent again: at most one
// duplicate, with the same link and Message-ID (docs/memberships.md).
type CustomerMembershipReconciler struct {
	client.Client
	// APIReader reads around the cache, to record a sent mail on the freshest
	// object when the first write of it conflicts.
	APIReader client.Reader
	Recorder  recorder.EventRecorder
	Clock     clock.PassiveClock

	// Sender hands mails to the SMTP server.
	Sender mail.Sender
	// Links makes the invitation link of a membership's round.
	Links InvitationLinker
	// InvitationTTL is how long an invitation link works (--invitation-ttl).
	InvitationTTL time.Duration
	// UsernamePrefix is --username-prefix.
	UsernamePrefix string
	// SendBackoff and MaxSendBackoff bound the retry delay after a failed send:
	// SendBackoff doubled per attempt, at most MaxSendBackoff.
	SendBackoff, MaxSendBackoff time.Duration
	// MaxConcurrentReconciles bounds parallel reconciles (sends block on SMTP).
	MaxConcurrentReconciles int
	// Recent spaces out invitations to one address for one customer
	// (--invitation-min-interval); nil: no limit.
	Recent *RecentInvitations
}

// ResyncPeriod is how often the manager's cache hands every object to its
// controllers again (internal/operator sets it; controller-runtime adds up to 10 %
// jitter).
const ResyncPeriod = 10 * time.Hour

// ExpiryHorizon is how far ahead an invitation's expiry is followed with a timed
// requeue: beyond it, the next resync (at most ResyncPeriod + 10 % away) comes
// first and sets the timer then.
const ExpiryHorizon = ResyncPeriod + ResyncPeriod/5

// InvitationLinker makes the link of an invitation: <portal-url>/invitations/<token>,
// the token derived from the membership's name, UID and the round, so that a mail
// re-sent after a crash carries the same link.
type InvitationLinker interface {
	Link(claim invitation.Claim) (string, error)
}

// membershipScope is what the phases of one reconcile share. The membership and its
// patcher are replaced together when a write has to be redone on a fresh object.
type membershipScope struct {
	membership *v1alpha1.CustomerMembership
	patcher    *status.Patcher
	customer   *v1alpha1.Customer
	// lasting outlives the reconcile's context by StoppingGrace (finishing),
	// counted from its cancellation: for the writes that must land even when the
	// manager is stopping (a sent mail's record, a failed one's backoff).
	lasting context.Context
}

// Reconcile is the flow; the phases below do the work.
func (r *CustomerMembershipReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	m := &v1alpha1.CustomerMembership{}
	if err := r.Get(ctx, req.NamespacedName, m); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	// No finalizer: access is recomputed per customer from the memberships that
	// exist, so a deleted membership loses its access without clean-up here.
	if !m.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	lasting, done := finishing(ctx, StoppingGrace)
	defer done()
	s := &membershipScope{membership: m, patcher: status.NewPatcher(m), lasting: lasting}
	defer func() {
		if apierrors.IsConflict(reterr) {
			// Someone wrote the membership since our cache saw it; the watch event of
			// that write reconciles it again, so neither retry nor report this one.
			log.FromContext(ctx).V(1).Info("Membership changed while reconciling; waiting for the newer version")
			reterr = nil
			return
		}
		if reterr != nil {
			status.MarkReconciling(s.membership, v1alpha1.ReconcileErrorReason, reterr.Error())
		}
		// Written also when the manager is stopping: a failed send's attempt count
		// and error set the next leader's backoff (and a permanent refusal's stall).
		if err := s.patcher.PatchStatus(s.lasting, r.Client, s.membership); err != nil && reterr == nil {
			reterr = client.IgnoreNotFound(err)
			if apierrors.IsConflict(err) {
				reterr = nil
			}
		}
	}()
	return r.reconcileNormal(ctx, s)
}

// reconcileNormal runs the phases in order; each returns done=true when the
// membership cannot go further in this reconcile. It sets observedGeneration.
func (r *CustomerMembershipReconciler) reconcileNormal(ctx context.Context, s *membershipScope) (ctrl.Result, error) {
	s.membership.Status.Username = members.Username(s.membership, r.UsernamePrefix)

	phases := []func(context.Context, *membershipScope) (ctrl.Result, bool, error){
		r.reconcileCustomer,
		r.reconcileDuplicate,
		r.reconcileInvitation,
		r.reconcileAccess,
	}
	var result ctrl.Result
	for _, phase := range phases {
		res, done, err := phase(ctx, s)
		if err != nil {
			return res, err
		}
		if done {
			result = res
			break
		}
	}
	s.membership.Status.ObservedGeneration = s.membership.Generation
	return result, nil
}

// reconcileCustomer stops at a customer that does not exist or is being deleted:
// Ready=False and Stalled=True (CustomerNotFound / CustomerDeleting). Nothing is
// sent and nothing is granted; what was recorded as sent stays recorded, so the
// membership resumes without a new mail when the customer comes back.
func (r *CustomerMembershipReconciler) reconcileCustomer(ctx context.Context, s *membershipScope) (ctrl.Result, bool, error) {
	m := s.membership
	customer := &v1alpha1.Customer{}
	err := r.Get(ctx, types.NamespacedName{Name: string(m.Spec.Customer)}, customer)
	switch {
	case apierrors.IsNotFound(err):
		status.MarkStalled(m, v1alpha1.CustomerNotFoundReason, fmt.Sprintf(
			"customer %q does not exist: this membership grants nothing and sends no invitation until it does", m.Spec.Customer))
		markInvitationWaiting(m)
		return ctrl.Result{}, true, nil
	case err != nil:
		return ctrl.Result{}, true, fmt.Errorf("reading customer %q: %w", m.Spec.Customer, err)
	case !customer.DeletionTimestamp.IsZero():
		status.MarkStalled(m, v1alpha1.CustomerDeletingReason, fmt.Sprintf(
			"customer %q is being deleted: this membership grants nothing", m.Spec.Customer))
		markInvitationWaiting(m)
		return ctrl.Result{}, true, nil
	}
	s.customer = customer
	return ctrl.Result{}, false, nil
}

// reconcileDuplicate stops at a membership that an older one with the same
// customer and e-mail already covers (it raced past admission): Ready=False and
// Stalled=True, reason Duplicate. It sends and grants nothing. If the older one is
// deleted, this one takes over (the controller watches its siblings).
func (r *CustomerMembershipReconciler) reconcileDuplicate(ctx context.Context, s *membershipScope) (ctrl.Result, bool, error) {
	m := s.membership
	var list v1alpha1.CustomerMembershipList
	if err := r.List(ctx, &list, client.MatchingFields{MembershipCustomerIndex: string(m.Spec.Customer)}, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, true, fmt.Errorf("listing memberships: %w", err)
	}
	winner := access.Winners(list.Items)[access.EmailKey(m)]
	if winner == "" || winner == m.Name {
		return ctrl.Result{}, false, nil
	}
	status.MarkStalled(m, v1alpha1.DuplicateReason, fmt.Sprintf(
		"CustomerMembership %q already gives %s access to customer %q: this duplicate grants nothing and sends nothing; delete it",
		winner, m.Spec.Email, m.Spec.Customer))
	markInvitationWaiting(m)
	return ctrl.Result{}, true, nil
}

// reconcileAccess reports whether an active membership's access exists, for its
// current role: the AccessReconciler writes the customer's member ClusterRoleBinding
// last, with a record of the role each subject was granted (access.RolesAnnotation)
// that it moves on only once the project bindings, roles and pruning of its pass
// succeeded. So once the binding lists the user and records the membership's role,
// the rest was applied and a former role's grant is gone. A binding without a record
// (written by an operator before the record existed) is read by its subjects alone,
// as it was then, with the customer-admin binding for an Admin. Sets Ready=True, or
// Ready=False/Reconciling=True (GrantingAccess) until then; a change of those
// bindings reconciles the membership again.
func (r *CustomerMembershipReconciler) reconcileAccess(ctx context.Context, s *membershipScope) (ctrl.Result, bool, error) {
	m := s.membership
	user := members.Username(m, r.UsernamePrefix)
	granted, err := r.accessGranted(ctx, m, user)
	if err != nil {
		return ctrl.Result{}, true, err
	}
	if !granted {
		status.MarkReconciling(m, v1alpha1.GrantingAccessReason, fmt.Sprintf(
			"granting %s %s access to customer %q", user, m.Spec.Role, m.Spec.Customer))
		return ctrl.Result{}, true, nil
	}
	status.MarkReady(m, fmt.Sprintf("%s access to customer %q is granted", m.Spec.Role, m.Spec.Customer))
	return ctrl.Result{}, true, nil
}

// accessGranted reads the customer's bindings for user's grant of m's role (see
// reconcileAccess).
func (r *CustomerMembershipReconciler) accessGranted(ctx context.Context, m *v1alpha1.CustomerMembership, user string) (bool, error) {
	member, err := r.binding(ctx, access.MemberBindingName(string(m.Spec.Customer)))
	if member == nil || err != nil || !lists(member, user) {
		return false, err
	}
	if value, ok := member.Annotations[access.RolesAnnotation]; ok {
		recorded, err := access.ParseRolesRecord(value)
		// An unreadable record is the access controller's to rewrite: not granted yet.
		return err == nil && slices.Contains(recorded, access.Member{Username: user, Role: m.Spec.Role}), nil
	}
	if m.Spec.Role != v1alpha1.RoleAdmin {
		return true, nil
	}
	admins, err := r.binding(ctx, access.CustomerAdminBindingName(string(m.Spec.Customer)))
	return admins != nil && lists(admins, user), err
}

// binding reads the ClusterRoleBinding name from the cache; nil if there is none.
func (r *CustomerMembershipReconciler) binding(ctx context.Context, name string) (*rbacv1.ClusterRoleBinding, error) {
	var crb rbacv1.ClusterRoleBinding
	if err := r.Get(ctx, types.NamespacedName{Name: name}, &crb); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading ClusterRoleBinding %s: %w", name, err)
	}
	return &crb, nil
}

// lists reports whether crb has user as a subject.
func lists(crb *rbacv1.ClusterRoleBinding, user string) bool {
	return slices.ContainsFunc(crb.Subjects, func(s rbacv1.Subject) bool {
		return s.Kind == rbacv1.UserKind && s.Name == user
	})
}

// SetupWithManager watches memberships, their customers, their siblings with the
// same e-mail (a duplicate takes over when the original goes), and the customer's
// member bindings (access granted).
func (r *CustomerMembershipReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.SendBackoff <= 0 {
		r.SendBackoff = DefaultSendBackoff
	}
	if r.MaxSendBackoff <= 0 {
		r.MaxSendBackoff = DefaultMaxSendBackoff
	}
	if r.MaxConcurrentReconciles <= 0 {
		r.MaxConcurrentReconciles = 4
	}
	membershipsOfCustomer := handler.EnqueueRequestsFromMapFunc(r.membershipsOfCustomer)
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.CustomerMembership{}).
		Watches(&v1alpha1.Customer{}, membershipsOfCustomer, builder.WithPredicates(deletionPredicate())).
		// Which of a customer's memberships for one address wins (access.Winners)
		// changes only when one is created, starts being deleted or is gone: not on
		// status writes, which each listed the customer's memberships.
		Watches(&v1alpha1.CustomerMembership{}, handler.EnqueueRequestsFromMapFunc(r.siblings),
			builder.WithPredicates(deletionPredicate())).
		// Only the two bindings accessGranted reads: every membership of the customer
		// reconciles on each of their changes, and the customer's other bindings
		// (acknowledge, memberships) change with them anyway.
		Watches(&rbacv1.ClusterRoleBinding{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			name := o.GetLabels()[v1alpha1.CustomerLabel]
			if name == "" {
				return nil
			}
			return r.membershipsOf(ctx, name, func(*v1alpha1.CustomerMembership) bool { return true })
		}), builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			customer := o.GetLabels()[v1alpha1.CustomerLabel]
			return o.GetName() == access.MemberBindingName(customer) || o.GetName() == access.CustomerAdminBindingName(customer)
		}))).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Named("customermembership").
		Complete(r)
}

func (r *CustomerMembershipReconciler) membershipsOfCustomer(ctx context.Context, o client.Object) []reconcile.Request {
	return r.membershipsOf(ctx, o.GetName(), func(*v1alpha1.CustomerMembership) bool { return true })
}

// siblings maps a membership to the others with the same customer and e-mail.
func (r *CustomerMembershipReconciler) siblings(ctx context.Context, o client.Object) []reconcile.Request {
	m := o.(*v1alpha1.CustomerMembership)
	key := access.EmailKey(m)
	return r.membershipsOf(ctx, string(m.Spec.Customer), func(other *v1alpha1.CustomerMembership) bool {
		return other.Name != m.Name && access.EmailKey(other) == key
	})
}

func (r *CustomerMembershipReconciler) membershipsOf(ctx context.Context, customer string, keep func(*v1alpha1.CustomerMembership) bool) []reconcile.Request {
	var list v1alpha1.CustomerMembershipList
	// Read only for their names: no copies of the customer's memberships.
	if err := r.List(ctx, &list, client.MatchingFields{MembershipCustomerIndex: customer}, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "Listing memberships to enqueue", "customer", customer)
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if keep(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}})
		}
	}
	return reqs
}

// markInvitationWaiting gives a membership that stopped before its invitation an
// Invited condition that says why, unless one already tells what happened.
func markInvitationWaiting(m *v1alpha1.CustomerMembership) {
	if c := status.Get(m, v1alpha1.InvitedCondition); c != nil && c.Reason != v1alpha1.InvitationPendingReason {
		return
	}
	if members.InvitationMode(m) == v1alpha1.InvitationNone {
		status.Set(m, v1alpha1.InvitedCondition, metav1.ConditionFalse, v1alpha1.InvitationNotRequiredReason,
			"invitation None: no e-mail is sent")
		return
	}
	status.Set(m, v1alpha1.InvitedCondition, metav1.ConditionFalse, v1alpha1.InvitationPendingReason,
		"no invitation has been sent: "+status.Get(m, v1alpha1.ReadyCondition).Message)
}
