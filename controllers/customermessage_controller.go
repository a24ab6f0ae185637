package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/mail"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/messages"
	"github.com/partnerops/customer-operator/internal/status"
)

// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermessages,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermessages/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=messageacknowledgements,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermemberships,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customers,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// CustomerMessageReconciler reconciles a CustomerMessage: it counts the message's
// recipients (the active members of its customer in the addressed roles) and who
// acknowledged, applies the read policy to set Resolved, and releases the
// acknowledgement reservations the admission webhook made once their
// acknowledgement exists or they expire. With spec.notify Email it mails each
// recipient the notice once (customermessage_notice.go).
//
// It holds no finalizer: the message owns its acknowledgements, and the garbage
// collector deletes them with it.
type CustomerMessageReconciler struct {
	client.Client
	Recorder recorder.EventRecorder
	Clock    clock.PassiveClock
	// UsernamePrefix makes a member's default username (see members.Username).
	UsernamePrefix string
	// Sender hands the e-mail notices (spec.notify Email) to the SMTP server, the
	// same path as invitations.
	Sender mail.Sender
}

// messageScope is what one reconcile of a message reads.
type messageScope struct {
	message *v1alpha1.CustomerMessage
	// customer is nil when the customer does not exist.
	customer *v1alpha1.Customer
	// recipients are the memberships that make their people recipients.
	recipients []*v1alpha1.CustomerMembership
	// republish: a SingleRead message whose publication's members have all left
	// goes to the members of now.
	republish bool
}

// Reconcile is the flow: the status first, then the e-mail notices, which need
// the status written (their record must not race a stale read).
func (r *CustomerMessageReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	msg := &v1alpha1.CustomerMessage{}
	if err := r.Get(ctx, req.NamespacedName, msg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !msg.DeletionTimestamp.IsZero() {
		// Nothing to clean up: the garbage collector deletes the acknowledgements.
		return ctrl.Result{}, nil
	}
	s := &messageScope{message: msg}
	result, err := r.reconcileStatus(ctx, s)
	if err != nil {
		// No notice from a status that could not be written: they need it on record.
		return result, ignoreConflict(ctx, err)
	}
	noticeResult, err := r.reconcileNotice(ctx, s)
	return earliest(result, noticeResult), err
}

// reconcileStatus recomputes the status and writes it (only when it changed, under
// the optimistic lock the admission webhook's reservations share).
func (r *CustomerMessageReconciler) reconcileStatus(ctx context.Context, s *messageScope) (_ ctrl.Result, reterr error) {
	msg := s.message
	before := msg.DeepCopy()
	patcher := status.NewPatcher(msg)
	defer func() {
		if apierrors.IsConflict(reterr) {
			// The status patch would conflict too: it starts from the same read.
			// Reconcile drops the conflict (ignoreConflict) after skipping the notices.
			return
		}
		if reterr != nil {
			status.MarkReconciling(msg, v1alpha1.ReconcileErrorReason, reterr.Error())
		}
		if err := patcher.PatchStatus(ctx, r.Client, msg); err != nil {
			if reterr == nil {
				reterr = err
			}
			return
		}
		r.recordEvents(before, msg)
	}()
	return r.reconcileNormal(ctx, s)
}

// reconcileNormal recomputes the status from the customer, its memberships and the
// acknowledgements. It sets Resolved, Notified (spec.notify Email), Ready (or
// Stalled with CustomerNotFound) and observedGeneration.
func (r *CustomerMessageReconciler) reconcileNormal(ctx context.Context, s *messageScope) (ctrl.Result, error) {
	msg := s.message
	if err := r.readRecipients(ctx, s); err != nil {
		return ctrl.Result{}, err
	}
	recipients := sets.New[string]()
	for _, m := range s.recipients {
		recipients.Insert(members.Username(m, r.UsernamePrefix))
	}

	var acks v1alpha1.MessageAcknowledgementList
	if err := r.List(ctx, &acks, client.MatchingFields{AcknowledgementMessageIndex: msg.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing acknowledgements: %w", err)
	}
	acknowledged, _ := messages.Acknowledged(msg, acks.Items)
	msg.Status.AcknowledgedBy = acknowledged

	// Released in the same status write that lists the acknowledgement, so that the
	// webhook always sees a user's acknowledgement either reserved or acknowledged.
	requeueAfter := r.releaseReservations(msg)

	outcome := messages.Evaluate(msg, recipients, acknowledged)
	msg.Status.Recipients, msg.Status.Pending = outcome.Recipients, outcome.Pending
	if (msg.Status.PublishedTime == nil || s.republish) && recipients.Len() > 0 {
		published := publicationTime(r.now(), s.recipients)
		msg.Status.PublishedTime = &published
	}

	msg.Status.ObservedGeneration = msg.Generation
	if s.customer == nil {
		// Without a customer there are no recipients, so the policy cannot be
		// judged: an AllMustRead message that someone acknowledged would look
		// acknowledged by everyone, and resolution is for good. It stays as it was
		// until the customer is back (a resolved message stays resolved).
		if !messages.IsResolved(msg) {
			status.Set(msg, v1alpha1.ResolvedCondition, metav1.ConditionFalse, v1alpha1.CustomerNotFoundReason,
				fmt.Sprintf("customer %q does not exist", msg.Spec.Customer))
		}
		status.MarkStalled(msg, v1alpha1.CustomerNotFoundReason,
			fmt.Sprintf("customer %q does not exist: the message has no recipients; it resumes when the customer is created", msg.Spec.Customer))
		return ctrl.Result{RequeueAfter: requeueAfter}, nil
	}

	status.Set(msg, v1alpha1.ResolvedCondition, conditionStatus(outcome.Resolved), outcome.Reason, outcome.Message)
	if !s.customer.DeletionTimestamp.IsZero() {
		// As its memberships and quota say: the customer is going, so is what is
		// addressed to it. No notice goes out for it any more.
		status.MarkStalled(msg, v1alpha1.CustomerDeletingReason, fmt.Sprintf(
			"customer %q is being deleted: no notice is sent for this message any more", msg.Spec.Customer))
		return ctrl.Result{RequeueAfter: requeueAfter}, nil
	}
	status.MarkReady(msg, fmt.Sprintf("%d recipient(s), %d acknowledged, %d pending", outcome.Recipients, len(acknowledged), outcome.Pending))
	r.setNotified(s)
	return ctrl.Result{RequeueAfter: requeueAfter}, nil
}

// readRecipients reads the message's customer (nil when it does not exist) and,
// if it exists, the memberships that make their people recipients.
func (r *CustomerMessageReconciler) readRecipients(ctx context.Context, s *messageScope) error {
	msg := s.message
	customer := &v1alpha1.Customer{}
	if err := r.Get(ctx, types.NamespacedName{Name: string(msg.Spec.Customer)}, customer); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading customer %q: %w", msg.Spec.Customer, err)
	}
	s.customer = customer
	var memberships v1alpha1.CustomerMembershipList
	if err := r.List(ctx, &memberships, client.MatchingFields{MembershipCustomerIndex: string(msg.Spec.Customer)}, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing memberships: %w", err)
	}
	s.recipients = messages.RecipientMemberships(msg, memberships.Items)
	if len(s.recipients) == 0 && msg.Status.PublishedTime != nil && !messages.IsResolved(msg) &&
		messages.ReadPolicy(msg) == v1alpha1.SingleRead {
		// Every member of its publication has left: published again to the members
		// of now (reconcileNormal sets the new time), or nobody could ever resolve
		// it. The status is not touched here: an error later in the reconcile must
		// not store a message without a publication.
		unpublished := *msg
		unpublished.Status.PublishedTime = nil
		s.recipients = messages.RecipientMemberships(&unpublished, memberships.Items)
		s.republish = len(s.recipients) > 0
	}
	return nil
}

// publicationTime is when a message is published to recipients: now, or the
// latest time one of them became active if that is later (the portal's and the API
// server's clocks are not the operator's), so that each of them counts as active
// by then on every later reconcile.
func publicationTime(now metav1.Time, recipients []*v1alpha1.CustomerMembership) metav1.Time {
	for _, m := range recipients {
		if since := members.ActiveSince(m); since != nil && since.After(now.Time) {
			now = *since
		}
	}
	return now
}

// releaseReservations drops the reservations whose acknowledgement is now listed
// in status.acknowledgedBy, or whose time is up (the create failed after admission).
// It returns when the next one expires, to requeue then.
func (r *CustomerMessageReconciler) releaseReservations(msg *v1alpha1.CustomerMessage) time.Duration {
	now := r.now().Time
	var next time.Duration
	var kept []v1alpha1.AcknowledgementReservation
	for _, res := range msg.Status.Reservations {
		if messages.HasAcknowledged(msg, res.User) || !now.Before(res.ExpiresAt.Time) {
			continue
		}
		kept = append(kept, res)
		if d := res.ExpiresAt.Sub(now); next == 0 || d < next {
			next = d
		}
	}
	msg.Status.Reservations = kept
	return next
}

// recordEvents records an event when the message is resolved, or when it stalls on
// a missing customer: the two changes a partner wants to hear of.
func (r *CustomerMessageReconciler) recordEvents(before, after *v1alpha1.CustomerMessage) {
	if !messages.IsResolved(before) && messages.IsResolved(after) {
		r.Recorder.Eventf(after, nil, corev1.EventTypeNormal, v1alpha1.ResolvedCondition, "Resolve", "%s",
			status.Get(after, v1alpha1.ResolvedCondition).Message)
	}
	wasStalled := status.IsTrue(before, v1alpha1.StalledCondition)
	if stalled := status.Get(after, v1alpha1.StalledCondition); stalled != nil && !wasStalled {
		r.Recorder.Eventf(after, nil, corev1.EventTypeWarning, stalled.Reason, "Reconcile", "%s", stalled.Message)
	}
}

func (r *CustomerMessageReconciler) now() metav1.Time {
	return metav1.NewTime(r.Clock.Now())
}

// SetupWithManager watches messages, their acknowledgements, and the memberships and
// customers that decide who the recipients are.
func (r *CustomerMessageReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.CustomerMessage{}).
		Watches(&v1alpha1.MessageAcknowledgement{}, handler.EnqueueRequestsFromMapFunc(messageOfAcknowledgement)).
		Watches(&v1alpha1.CustomerMembership{}, handler.EnqueueRequestsFromMapFunc(r.messagesOfMembership),
			builder.WithPredicates(membershipGrantChanged(r.UsernamePrefix))).
		Watches(&v1alpha1.Customer{}, handler.EnqueueRequestsFromMapFunc(r.messagesOfCustomer),
			builder.WithPredicates(deletionPredicate())).
		Named("customermessage").
		Complete(r)
}

// earliest merges two results: the sooner requeue wins.
func earliest(a, b ctrl.Result) ctrl.Result {
	switch {
	case a.RequeueAfter == 0:
		return b
	case b.RequeueAfter == 0 || a.RequeueAfter < b.RequeueAfter:
		return a
	}
	return b
}

// conditionStatus turns a bool into a condition status.
func conditionStatus(b bool) metav1.ConditionStatus {
	if b {
		return metav1.ConditionTrue
	}
	return metav1.ConditionFalse
}

// messageOfAcknowledgement maps an acknowledgement to its message.
func messageOfAcknowledgement(_ context.Context, o client.Object) []reconcile.Request {
	a := o.(*v1alpha1.MessageAcknowledgement)
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: a.Spec.Message}}}
}

// messagesOfMembership maps a membership to the messages of its customer.
func (r *CustomerMessageReconciler) messagesOfMembership(ctx context.Context, o client.Object) []reconcile.Request {
	return r.messagesOf(ctx, string(o.(*v1alpha1.CustomerMembership).Spec.Customer))
}

// messagesOfCustomer maps a customer to its messages.
func (r *CustomerMessageReconciler) messagesOfCustomer(ctx context.Context, o client.Object) []reconcile.Request {
	return r.messagesOf(ctx, o.GetName())
}

func (r *CustomerMessageReconciler) messagesOf(ctx context.Context, customer string) []reconcile.Request {
	var list v1alpha1.CustomerMessageList
	if err := r.List(ctx, &list, client.MatchingFields{MessageCustomerIndex: customer}, client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the messages of a customer", "customer", customer)
		return nil
	}
	requests := make([]reconcile.Request, 0, len(list.Items))
	for _, m := range list.Items {
		requests = append(requests, reconcile.Request{NamespacedName: types.NamespacedName{Name: m.Name}})
	}
	return requests
}

// membershipGrantChanged passes membership events that can change who a
// customer's active members are (the recipients of its messages, the subjects of
// its access): creates, deletes, and updates of the username, role, activity
// (acceptance, Duplicate) or deletion. Status-only churn (invitation attempts,
// the membership's own Ready) is filtered out.
func membershipGrantChanged(usernamePrefix string) predicate.Funcs {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			oldM, okOld := e.ObjectOld.(*v1alpha1.CustomerMembership)
			newM, okNew := e.ObjectNew.(*v1alpha1.CustomerMembership)
			if !okOld || !okNew {
				return true
			}
			return members.IsActive(oldM) != members.IsActive(newM) ||
				oldM.Spec.Role != newM.Spec.Role ||
				members.Username(oldM, usernamePrefix) != members.Username(newM, usernamePrefix) ||
				oldM.DeletionTimestamp.IsZero() != newM.DeletionTimestamp.IsZero()
		},
	}
}
