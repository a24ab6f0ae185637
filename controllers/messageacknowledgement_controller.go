package controllers

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/messages"
	"github.com/partnerops/customer-operator/internal/status"
)

// +kubebuilder:rbac:groups=customers.partnerops.io,resources=messageacknowledgements,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=messageacknowledgements/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermessages,verbs=get;list;watch

// MessageAcknowledgementReconciler reconciles a MessageAcknowledgement: it makes the
// acknowledged message the acknowledgement's owner, so that the garbage collector
// deletes it with the message, and reports whether it counts.
//
// The owner reference is the only change the operator makes to a user's
// acknowledgement outside its status. Acknowledgements are users' records, not
// GitOps objects, so no sync tool fights over it.
type MessageAcknowledgementReconciler struct {
	client.Client
}

// Reconcile is the flow; the phases below do the work.
func (r *MessageAcknowledgementReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	ack := &v1alpha1.MessageAcknowledgement{}
	if err := r.Get(ctx, req.NamespacedName, ack); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ack.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	msg := &v1alpha1.CustomerMessage{}
	if err := r.Get(ctx, types.NamespacedName{Name: ack.Spec.Message}, msg); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, fmt.Errorf("reading CustomerMessage %q: %w", ack.Spec.Message, err)
		}
		msg = nil
	}
	belongs := msg != nil && messages.Counts(msg, ack)

	// The owner reference goes on before the status snapshot is taken: the status
	// patch's optimistic lock must see the resourceVersion the metadata patch made.
	if belongs {
		if err := r.reconcileOwner(ctx, ack, msg); err != nil {
			return ctrl.Result{}, err
		}
	}

	patcher := status.NewPatcher(ack)
	defer func() {
		if apierrors.IsConflict(reterr) {
			// The status patch would conflict too: it starts from the same read.
			reterr = ignoreConflict(ctx, reterr)
			return
		}
		if reterr != nil {
			status.MarkReconciling(ack, v1alpha1.ReconcileErrorReason, reterr.Error())
		}
		if err := patcher.PatchStatus(ctx, r.Client, ack); err != nil && reterr == nil {
			reterr = ignoreConflict(ctx, err)
		}
	}()

	switch {
	case msg == nil:
		status.MarkStalled(ack, v1alpha1.MessageNotFoundReason,
			fmt.Sprintf("CustomerMessage %q does not exist; this acknowledgement counts for nothing", ack.Spec.Message))
	case !belongs:
		// An acknowledgement of an earlier message of the same name: the garbage
		// collector deletes it once its owner is gone; it must not get a new owner.
		status.MarkStalled(ack, v1alpha1.MessageNotFoundReason,
			fmt.Sprintf("acknowledges an earlier CustomerMessage %q, which was deleted; it does not count for the current one", ack.Spec.Message))
	default:
		if err := r.reconcileDuplicate(ctx, ack, msg); err != nil {
			return ctrl.Result{}, err
		}
	}
	ack.Status.ObservedGeneration = ack.Generation
	return ctrl.Result{}, nil
}

// reconcileOwner makes the message the owner of the acknowledgement, with a
// metadata patch under optimistic lock (other owner references are kept). It is
// not a controller reference and does not block the message's deletion.
func (r *MessageAcknowledgementReconciler) reconcileOwner(ctx context.Context, ack *v1alpha1.MessageAcknowledgement, msg *v1alpha1.CustomerMessage) error {
	for _, ref := range ack.OwnerReferences {
		if ref.UID == msg.UID {
			return nil
		}
	}
	base := ack.DeepCopy()
	ack.OwnerReferences = append(ack.OwnerReferences, metav1.OwnerReference{
		APIVersion:         v1alpha1.GroupVersion.String(),
		Kind:               "CustomerMessage",
		Name:               msg.Name,
		UID:                msg.UID,
		BlockOwnerDeletion: ptr.To(false),
	})
	if err := r.Patch(ctx, ack, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("setting the owner reference to CustomerMessage %q: %w", msg.Name, err)
	}
	return nil
}

// reconcileDuplicate sets Ready: True when this is the acknowledgement that counts
// for its user, Stalled with reason Duplicate when an older one of the same user
// already does (a duplicate that raced past admission counts once).
func (r *MessageAcknowledgementReconciler) reconcileDuplicate(ctx context.Context, ack *v1alpha1.MessageAcknowledgement, msg *v1alpha1.CustomerMessage) error {
	var acks v1alpha1.MessageAcknowledgementList
	if err := r.List(ctx, &acks, client.MatchingFields{AcknowledgementMessageIndex: msg.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing acknowledgements: %w", err)
	}
	_, winners := messages.Acknowledged(msg, acks.Items)
	if winner, ok := winners[ack.Spec.User]; ok && winner != ack.Name {
		status.MarkStalled(ack, v1alpha1.DuplicateReason,
			fmt.Sprintf("%q already acknowledged CustomerMessage %q with MessageAcknowledgement %q; this one counts nothing more",
				ack.Spec.User, msg.Name, winner))
		return nil
	}
	status.MarkReady(ack, fmt.Sprintf("acknowledges CustomerMessage %q, which owns it", msg.Name))
	return nil
}

// SetupWithManager watches acknowledgements, and messages as they come and go.
func (r *MessageAcknowledgementReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.MessageAcknowledgement{}).
		// A message created after its acknowledgement (webhook bypassed) or deleted.
		Watches(&v1alpha1.CustomerMessage{}, handler.EnqueueRequestsFromMapFunc(r.acknowledgementsOfMessage),
			builder.WithPredicates(predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }})).
		// The deletion of an acknowledgement makes a newer duplicate of the same user
		// count; the creation of one that wins the tie-break (the same second, an
		// earlier name) makes the other a duplicate, which was reconciled alone and
		// said Ready.
		Watches(&v1alpha1.MessageAcknowledgement{}, handler.EnqueueRequestsFromMapFunc(r.duplicatesOf),
			builder.WithPredicates(predicate.Funcs{
				UpdateFunc: func(e event.UpdateEvent) bool {
					return e.ObjectOld.GetDeletionTimestamp().IsZero() && !e.ObjectNew.GetDeletionTimestamp().IsZero()
				},
				GenericFunc: func(event.GenericEvent) bool { return false },
			})).
		Named("messageacknowledgement").
		Complete(r)
}

// acknowledgementsOfMessage maps a message to its acknowledgements.
func (r *MessageAcknowledgementReconciler) acknowledgementsOfMessage(ctx context.Context, o client.Object) []reconcile.Request {
	return r.acknowledgementsWhere(ctx, o.GetName(), func(*v1alpha1.MessageAcknowledgement) bool { return true })
}

// duplicatesOf maps an acknowledgement to the other acknowledgements of the same
// user and message.
func (r *MessageAcknowledgementReconciler) duplicatesOf(ctx context.Context, o client.Object) []reconcile.Request {
	gone := o.(*v1alpha1.MessageAcknowledgement)
	return r.acknowledgementsWhere(ctx, gone.Spec.Message, func(a *v1alpha1.MessageAcknowledgement) bool {
		return a.Spec.User == gone.Spec.User && a.Name != gone.Name
	})
}

func (r *MessageAcknowledgementReconciler) acknowledgementsWhere(ctx context.Context, message string, keep func(*v1alpha1.MessageAcknowledgement) bool) []reconcile.Request {
	var list v1alpha1.MessageAcknowledgementList
	if err := r.List(ctx, &list, client.MatchingFields{AcknowledgementMessageIndex: message}, client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the acknowledgements of a message", "message", message)
		return nil
	}
	var requests []reconcile.Request
	for i := range list.Items {
		if keep(&list.Items[i]) {
			requests = append(requests, reconcile.Request{NamespacedName: types.NamespacedName{Name: list.Items[i].Name}})
		}
	}
	return requests
}
