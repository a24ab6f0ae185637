package webhooks

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/messages"
	"github.com/partnerops/customer-operator/internal/validation"
)

// +kubebuilder:webhook:path=/validate-customers-partnerops-io-v1alpha1-messageacknowledgement,mutating=false,failurePolicy=fail,sideEffects=NoneOnDryRun,groups=customers.partnerops.io,resources=messageacknowledgements,verbs=create;update,versions=v1alpha1,name=vmessageacknowledgement.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermessages,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermessages/status,verbs=get;update;patch

// AcknowledgementReservationTTL is how long a reservation holds a user's
// acknowledgement after admission: the webhook timeout (5s, config/webhook) plus a
// grace period for the rest of the request (other admission, the etcd write), after
// which the controller releases a reservation whose acknowledgement never appeared.
const AcknowledgementReservationTTL = 30 * time.Second

// MessageAcknowledgementValidator admits an acknowledgement only from the user it
// names, for an open message they are a recipient of, once per user and message.
//
// "Once" and "the first resolves a SingleRead message" must hold under concurrent
// requests, which a cache cannot promise. So, like kube-apiserver's ResourceQuota
// admission, the webhook reserves before it admits: it records the user in the
// message's status.reservations with an optimistic-concurrency write, and re-checks
// on a conflict. Of two racing acknowledgements by one user, or by two users of a
// SingleRead message, exactly one wins the write; the other is refused with the
// reason. Dry-run requests reserve nothing (sideEffects: NoneOnDryRun).
type MessageAcknowledgementValidator struct {
	// Reader reads customers, memberships and acknowledgements from the manager's cache.
	Reader client.Reader
	// APIReader reads messages from the API server: a reservation must be made
	// against the latest resourceVersion.
	APIReader client.Reader
	// Writer patches the message's status.
	Writer client.StatusClient
	// UsernamePrefix is --username-prefix (see members.Username).
	UsernamePrefix string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

var _ admission.Validator[*v1alpha1.MessageAcknowledgement] = &MessageAcknowledgementValidator{}

// reserveBackoff retries a reservation that lost a race for the message's status.
// Humans acknowledge; a burst is a handful of users, so a few quick retries suffice,
// well within the webhook's timeout.
var reserveBackoff = wait.Backoff{Steps: 12, Duration: 10 * time.Millisecond, Factor: 1.5, Jitter: 1, Cap: 500 * time.Millisecond}

// ValidateCreate implements admission.Validator.
func (v *MessageAcknowledgementValidator) ValidateCreate(ctx context.Context, a *v1alpha1.MessageAcknowledgement) (admission.Warnings, error) {
	if err := invalid("MessageAcknowledgement", a.Name, validation.ValidateAcknowledgement(a)); err != nil {
		return nil, err
	}
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	if requester := req.UserInfo.Username; a.Spec.User != requester {
		return nil, forbidden("messageacknowledgements", a.Name,
			"spec.user %q must be your own username %q: users acknowledge only for themselves", a.Spec.User, requester)
	}
	dryRun := req.DryRun != nil && *req.DryRun

	err = retry.RetryOnConflict(reserveBackoff, func() error {
		msg := &v1alpha1.CustomerMessage{}
		if err := v.APIReader.Get(ctx, types.NamespacedName{Name: a.Spec.Message}, msg); err != nil {
			if apierrors.IsNotFound(err) {
				return noSuchMessage(a)
			}
			return apierrors.NewInternalError(fmt.Errorf("reading CustomerMessage %q: %w", a.Spec.Message, err))
		}
		if err := v.admit(ctx, a, msg); err != nil {
			return err
		}
		if dryRun {
			return nil
		}
		return v.reserve(ctx, a, msg)
	})
	if apierrors.IsConflict(err) {
		return nil, apierrors.NewTooManyRequests(fmt.Sprintf(
			"too many acknowledgements of CustomerMessage %q at once; retry", a.Spec.Message), 1)
	}
	return nil, err
}

// ValidateUpdate implements admission.Validator. Only metadata may change (the
// operator adds the owner reference): spec is immutable (CEL holds that too).
func (v *MessageAcknowledgementValidator) ValidateUpdate(_ context.Context, old, a *v1alpha1.MessageAcknowledgement) (admission.Warnings, error) {
	return nil, invalid("MessageAcknowledgement", a.Name, validation.ValidateAcknowledgementUpdate(old, a))
}

// ValidateDelete implements admission.Validator.
func (v *MessageAcknowledgementValidator) ValidateDelete(context.Context, *v1alpha1.MessageAcknowledgement) (admission.Warnings, error) {
	return nil, nil
}

// admit checks, against the message as just read, that it is open, that the user is
// a recipient, and that they have not acknowledged it yet.
func (v *MessageAcknowledgementValidator) admit(ctx context.Context, a *v1alpha1.MessageAcknowledgement, msg *v1alpha1.CustomerMessage) error {
	deny := func(format string, args ...any) error {
		return forbidden("messageacknowledgements", a.Name, format, args...)
	}
	user := a.Spec.User
	recipient, member, err := v.isRecipient(ctx, msg, user)
	if err != nil {
		return err
	}
	if member == nil {
		// Everyone may create acknowledgements, so what this answers must not tell
		// a stranger which messages exist or whose they are.
		return noSuchMessage(a)
	}
	if !msg.DeletionTimestamp.IsZero() {
		return deny("spec.message: CustomerMessage %q is being deleted", msg.Name)
	}
	if !recipient && messages.JoinedAfter(msg, member) && messages.Addresses(msg, member.Spec.Role) {
		return deny("%q is not a recipient of CustomerMessage %q: it is a SingleRead message for the active members%s of customer %q when it was published (%s), before %q joined",
			user, msg.Name, rolesOf(msg), msg.Spec.Customer, msg.Status.PublishedTime.UTC().Format(time.RFC3339), user)
	}
	if !recipient {
		return deny("%q is not a recipient of CustomerMessage %q: it is addressed to the active members%s of customer %q",
			user, msg.Name, rolesOf(msg), msg.Spec.Customer)
	}

	if messages.HasAcknowledged(msg, user) {
		return deny("%q already acknowledged CustomerMessage %q; one acknowledgement per user and message", user, msg.Name)
	}
	var acks v1alpha1.MessageAcknowledgementList
	if err := v.Reader.List(ctx, &acks, client.MatchingFields{controllers.AcknowledgementMessageIndex: msg.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return apierrors.NewInternalError(fmt.Errorf("listing acknowledgements: %w", err))
	}
	stored, byUser := messages.Acknowledged(msg, acks.Items)
	if byUser[user] != "" {
		return deny("%q already acknowledged CustomerMessage %q with MessageAcknowledgement %q; one acknowledgement per user and message",
			user, msg.Name, byUser[user])
	}
	now := v.now()
	live := messages.LiveReservations(msg, now)
	if r := messages.LiveReservationOf(msg, user, now); r != nil {
		return deny("an acknowledgement of CustomerMessage %q by %q is already being stored; if it does not appear, retry after %s",
			msg.Name, user, r.ExpiresAt.UTC().Format(time.RFC3339))
	}

	if messages.ReadPolicy(msg) == v1alpha1.SingleRead {
		// The first acknowledgement resolves it: one the status lists, one that is
		// stored but not listed yet (its reservation may have lapsed while no
		// controller ran, after a failover), or one being stored.
		resolver := ""
		switch {
		case len(msg.Status.AcknowledgedBy) > 0:
			resolver = msg.Status.AcknowledgedBy[0].User
		case len(stored) > 0:
			resolver = stored[0].User
		}
		switch {
		case resolver != "":
			return deny("CustomerMessage %q is already resolved for everyone by %q (SingleRead); there is nothing left to acknowledge",
				msg.Name, resolver)
		case len(live) > 0:
			return deny("CustomerMessage %q is already resolved for everyone by %q (SingleRead), whose acknowledgement is being stored; "+
				"if the message is still open after %s, retry", msg.Name, live[0].User, live[0].ExpiresAt.UTC().Format(time.RFC3339))
		}
	}
	if messages.IsResolved(msg) {
		return deny("CustomerMessage %q is already resolved (%s); there is nothing left to acknowledge",
			msg.Name, resolvedMessage(msg))
	}
	// status.acknowledgedBy can hold maxAcknowledgements: one more could never be
	// recorded, and the controller's every status write of the message would fail.
	// A reservation is released in the write that lists its acknowledgement, so
	// the live ones are not listed yet.
	recorded := max(len(stored), len(msg.Status.AcknowledgedBy))
	for _, r := range live {
		if byUser[r.User] == "" {
			recorded++
		}
	}
	if recorded >= maxAcknowledgements {
		return deny("CustomerMessage %q has %d acknowledgements, the most its status.acknowledgedBy can hold; "+
			"no more can be recorded (send a new message to the others)", msg.Name, maxAcknowledgements)
	}
	if len(live) >= maxReservations {
		return apierrors.NewTooManyRequests(fmt.Sprintf(
			"too many acknowledgements of CustomerMessage %q are being stored at once; retry", msg.Name), 1)
	}
	return nil
}

// maxReservations is the MaxItems of status.reservations.
const maxReservations = 1000

// maxAcknowledgements is the MaxItems of status.acknowledgedBy.
const maxAcknowledgements = 5000

// isRecipient reports whether user is a recipient of msg (an active member of its
// customer, which must exist, in a role the message addresses), and their active
// membership of that customer, if any (they may then read the message).
func (v *MessageAcknowledgementValidator) isRecipient(ctx context.Context, msg *v1alpha1.CustomerMessage, user string) (recipient bool, member *v1alpha1.CustomerMembership, err error) {
	customer := &v1alpha1.Customer{}
	if err := v.Reader.Get(ctx, types.NamespacedName{Name: string(msg.Spec.Customer)}, customer); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil, nil
		}
		return false, nil, apierrors.NewInternalError(fmt.Errorf("reading customer %q: %w", msg.Spec.Customer, err))
	}
	var memberships v1alpha1.CustomerMembershipList
	if err := v.Reader.List(ctx, &memberships,
		client.MatchingFields{controllers.MembershipCustomerIndex: string(msg.Spec.Customer)}, client.UnsafeDisableDeepCopy); err != nil {
		return false, nil, apierrors.NewInternalError(fmt.Errorf("listing memberships: %w", err))
	}
	for i := range memberships.Items {
		m := &memberships.Items[i]
		if members.IsActive(m) && members.Username(m, v.UsernamePrefix) == user {
			member = m
			break
		}
	}
	return messages.Recipients(msg, memberships.Items, v.UsernamePrefix).Has(user), member, nil
}

// noSuchMessage is the denial for a message that does not exist and for one of a
// customer the user is no active member of: the same words, so that nobody learns
// other customers' message names or which customer a message belongs to.
func noSuchMessage(a *v1alpha1.MessageAcknowledgement) error {
	return forbidden("messageacknowledgements", a.Name,
		"spec.message: CustomerMessage %q does not exist, or its customer has no active member %q", a.Spec.Message, a.Spec.User)
}

// reserve records the user's acknowledgement in the message's status, under the
// optimistic lock of the resourceVersion just read; a conflict makes the caller
// read again and re-check. Expired reservations are dropped on the way.
func (v *MessageAcknowledgementValidator) reserve(ctx context.Context, a *v1alpha1.MessageAcknowledgement, msg *v1alpha1.CustomerMessage) error {
	now := v.now()
	base := msg.DeepCopy()
	msg.Status.Reservations = append(messages.LiveReservations(msg, now), v1alpha1.AcknowledgementReservation{
		User:      a.Spec.User,
		ExpiresAt: metav1.NewTime(now.Add(AcknowledgementReservationTTL)),
	})
	err := v.Writer.Status().Patch(ctx, msg, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
	switch {
	case err == nil:
		return nil
	case apierrors.IsConflict(err):
		return err
	case apierrors.IsNotFound(err):
		return forbidden("messageacknowledgements", a.Name, "spec.message: CustomerMessage %q does not exist", a.Spec.Message)
	default:
		return apierrors.NewInternalError(fmt.Errorf("reserving the acknowledgement in CustomerMessage %q: %w",
			msg.Name, err))
	}
}

func (v *MessageAcknowledgementValidator) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// rolesOf says which roles a message addresses, for denials.
func rolesOf(msg *v1alpha1.CustomerMessage) string {
	if len(msg.Spec.Roles) == 0 {
		return ""
	}
	return fmt.Sprintf(" in role(s) %v", msg.Spec.Roles)
}

// resolvedMessage is what the Resolved condition says, for denials.
func resolvedMessage(msg *v1alpha1.CustomerMessage) string {
	for _, c := range msg.Status.Conditions {
		if c.Type == v1alpha1.ResolvedCondition {
			return c.Message
		}
	}
	return "resolved"
}
