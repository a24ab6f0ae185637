package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/invitation"
	"github.com/partnerops/customer-operator/internal/mail"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/status"
)

// sendTimeout bounds one delivery attempt, so a hanging SMTP server cannot hold a
// worker forever; the mail package's own per-command timeout is shorter.
const sendTimeout = time.Minute

// recordTimeout bounds the write of a mail's outcome, which does not stop with
// the reconcile's context (see send).
const recordTimeout = 15 * time.Second

// maxLastError is the API's bound on status.invitation.lastError.
const maxLastError = 1024

// reconcileInvitation moves the invitation forward. Invitation None: Invited=False
// (InvitationNotRequired), Accepted=True (AddedDirectly), and on to access.
// Accepted: Accepted=True, and on to access. Otherwise it starts a round if none
// or a new one was asked for, sends its mail once (Invited), and follows expiry
// (Accepted=False, AwaitingAcceptance or InvitationExpired). A pending invitation
// is the person's move, not a failure: Ready=True once the mail is out. A failing
// send sets Ready=False with Reconciling=True, or Stalled=True when the server
// refused the message for good.
func (r *CustomerMembershipReconciler) reconcileInvitation(ctx context.Context, s *membershipScope) (ctrl.Result, bool, error) {
	m := s.membership
	if members.InvitationMode(m) == v1alpha1.InvitationNone {
		status.Set(m, v1alpha1.InvitedCondition, metav1.ConditionFalse, v1alpha1.InvitationNotRequiredReason,
			"invitation None: no e-mail is sent")
		status.Set(m, v1alpha1.AcceptedCondition, metav1.ConditionTrue, v1alpha1.AddedDirectlyReason,
			"invitation None: active without an invitation")
		return ctrl.Result{}, false, nil
	}
	if m.Status.AcceptedTime != nil {
		// A resend request after acceptance changes nothing: there is nothing to accept.
		status.Set(m, v1alpha1.AcceptedCondition, metav1.ConditionTrue, v1alpha1.AcceptedReason,
			"the invitation was accepted")
		return ctrl.Result{}, false, nil
	}

	if inv := m.Status.Invitation; inv != nil && inv.Round >= 1 && newRoundRequested(m) {
		// Held back before the round starts, so that the current round's link keeps
		// working until the new one can go.
		now := r.Clock.Now()
		if hold := r.Recent.Wait(string(m.Spec.Customer), m.Spec.Email, m.UID, inv.Round+1, now); hold.Wait > 0 {
			current := fmt.Sprintf("the link of round %d works until then", inv.Round)
			if inv.SentTime == nil {
				current = fmt.Sprintf("round %d was not sent either", inv.Round)
			}
			text := fmt.Sprintf("a new invitation (round %d) was requested; %s; %s",
				inv.Round+1, current, r.heldBack(m, now, hold))
			status.MarkReconciling(m, v1alpha1.InvitationPendingReason, text)
			return ctrl.Result{RequeueAfter: hold.Wait}, true, nil
		}
	}
	r.ensureRound(ctx, m)
	inv := m.Status.Invitation
	if inv.SentTime != nil {
		return r.followExpiry(m), true, nil
	}
	return r.send(ctx, s)
}

// heldBack says why an invitation waits: --invitation-min-interval, or
// --max-invitations-per-customer-per-hour.
func (r *CustomerMembershipReconciler) heldBack(m *v1alpha1.CustomerMembership, now time.Time, hold Hold) string {
	until := now.Add(hold.Wait).UTC().Format(time.RFC3339)
	if hold.Unslotted {
		// No time: every invitation beyond the next hour's slots reads the same,
		// and is written once.
		return fmt.Sprintf("held back: invitations for customer %q go out at most %d at once and %d an hour after that (--max-invitations-per-customer-per-hour), and every slot of the next hour is taken; this one gets a slot when one comes free",
			m.Spec.Customer, r.Recent.PerCustomerPerHour, r.Recent.PerCustomerPerHour)
	}
	if hold.Customer {
		return fmt.Sprintf("held back until %s: invitations for customer %q go out at most %d at once and %d an hour after that (--max-invitations-per-customer-per-hour)",
			until, m.Spec.Customer, r.Recent.PerCustomerPerHour, r.Recent.PerCustomerPerHour)
	}
	return fmt.Sprintf("held back until %s: an invitation to %s for customer %q went out at %s, and one address gets at most one per %s (--invitation-min-interval)",
		until, m.Spec.Email, m.Spec.Customer, hold.Last.UTC().Format(time.RFC3339), r.Recent.Interval)
}

// newRoundRequested says whether the resend-invitation annotation asks for a round
// after the current one.
func newRoundRequested(m *v1alpha1.CustomerMembership) bool {
	request := resendRequest(m.Annotations[v1alpha1.ResendInvitationAnnotation])
	return request != "" && m.Status.Invitation != nil && request != m.Status.Invitation.ResendRequest
}

// ensureRound starts round 1, or the next round when the resend-invitation
// annotation has a new value. A new round forgets the old one's delivery record, so
// its mail (with a new link; the portal accepts only the current round) is sent.
func (r *CustomerMembershipReconciler) ensureRound(ctx context.Context, m *v1alpha1.CustomerMembership) {
	request := resendRequest(m.Annotations[v1alpha1.ResendInvitationAnnotation])
	switch inv := m.Status.Invitation; {
	case inv == nil || inv.Round < 1:
		m.Status.Invitation = &v1alpha1.InvitationStatus{Round: 1, ResendRequest: request}
	case request != "" && request != inv.ResendRequest:
		m.Status.Invitation = &v1alpha1.InvitationStatus{Round: inv.Round + 1, ResendRequest: request}
		log.FromContext(ctx).Info("New invitation round requested", "round", inv.Round+1)
		r.Recorder.Eventf(m, nil, corev1.EventTypeNormal, "ResendRequested", "Invite",
			"a new invitation (round %d) was requested; the link of round %d no longer works", inv.Round+1, inv.Round)
	}
}

// resendRequest is the annotation value as status records it: status bounds it to
// 256 characters, so a longer value is recorded (and compared) as its digest.
func resendRequest(value string) string {
	if len(value) <= 256 {
		return value
	}
	sum := sha256.Sum256([]byte(value))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// followExpiry reports a sent invitation: waiting for the person until the link
// expires, then expired with how to send a new one. The operator has done its part
// either way, so Ready=True. It returns when to look again.
func (r *CustomerMembershipReconciler) followExpiry(m *v1alpha1.CustomerMembership) ctrl.Result {
	inv := m.Status.Invitation
	status.Set(m, v1alpha1.InvitedCondition, metav1.ConditionTrue, v1alpha1.InvitationSentReason,
		fmt.Sprintf("the invitation e-mail (round %d) was sent", inv.Round))
	now := r.Clock.Now()
	if inv.ExpiryTime != nil && !now.Before(inv.ExpiryTime.Time) {
		status.Set(m, v1alpha1.AcceptedCondition, metav1.ConditionFalse, v1alpha1.InvitationExpiredReason,
			fmt.Sprintf("the invitation link expired at %s without being accepted; to send a new one, give the annotation %s a new value: kubectl annotate customermembership %s %s=\"$(date +%%s)\" --overwrite",
				inv.ExpiryTime.UTC().Format(time.RFC3339), v1alpha1.ResendInvitationAnnotation, m.Name, v1alpha1.ResendInvitationAnnotation))
		status.MarkReady(m, "the invitation expired; nothing is granted")
		return ctrl.Result{}
	}
	// The texts are the same in every pending membership (the cache keeps one copy
	// of them, internal/operator); what is per membership is in the status fields.
	status.Set(m, v1alpha1.AcceptedCondition, metav1.ConditionFalse, v1alpha1.AwaitingAcceptanceReason,
		"waiting for the invitation to be accepted; the link works until status.invitation.expiryTime")
	status.MarkReady(m, "the invitation is sent; access is granted once it is accepted")
	if inv.ExpiryTime == nil {
		return ctrl.Result{}
	}
	remaining := inv.ExpiryTime.Sub(now)
	if remaining > ExpiryHorizon {
		// The periodic resync (ResyncPeriod) comes back before the horizon is
		// reached; holding every pending invitation in the workqueue for days
		// would cost memory per membership for nothing.
		return ctrl.Result{}
	}
	// Look again when the link expires (plus a second: the workqueue is not exact).
	return ctrl.Result{RequeueAfter: remaining + time.Second}
}

// send delivers the mail of the current round: the attempt is recorded first (with
// an optimistic lock), then the mail is sent, then the outcome recorded. After a
// failure it waits out the backoff before the next attempt.
func (r *CustomerMembershipReconciler) send(ctx context.Context, s *membershipScope) (ctrl.Result, bool, error) {
	m := s.membership
	inv := m.Status.Invitation
	now := r.Clock.Now()
	if inv.Attempts > 0 && inv.LastError != "" && refusedForGood(m) {
		// Retrying the same message cannot help; a new round (a new value of the
		// resend annotation) resets the attempts and tries again. Marked again so
		// that the conditions speak of the current generation after a spec change
		// (health tools ignore a Stalled of an older one).
		stalled := status.Get(m, v1alpha1.StalledCondition)
		status.MarkStalled(m, v1alpha1.SendFailedReason, stalled.Message)
		if invited := status.Get(m, v1alpha1.InvitedCondition); invited != nil {
			status.Set(m, v1alpha1.InvitedCondition, invited.Status, invited.Reason, invited.Message)
		}
		return ctrl.Result{}, true, nil
	}
	if inv.Attempts > 0 && inv.LastError != "" && inv.LastAttemptTime != nil {
		if wait := inv.LastAttemptTime.Add(r.backoff(inv.Attempts)).Sub(now); wait > 0 {
			if invited := status.Get(m, v1alpha1.InvitedCondition); invited != nil {
				status.MarkReconciling(m, v1alpha1.SendFailedReason, invited.Message)
			}
			return ctrl.Result{RequeueAfter: wait}, true, nil
		}
	}

	// Built before the attempt is recorded, and before the limits count it: a
	// problem here is configuration, not delivery, and must not count as an
	// attempt.
	msg, err := r.invitationMessage(m, s.customer, now)
	if errors.Is(err, ErrNoPortalURL) {
		// Only a restart changes it (the flag, or $PORTAL_URL from the Secret), and
		// a restart reconciles every membership: retrying in this process would only
		// log the same error for each of them.
		status.Set(m, v1alpha1.InvitedCondition, metav1.ConditionFalse, v1alpha1.PortalURLNotSetReason,
			"no invitation has been sent: "+ErrNoPortalURL.Error())
		status.MarkStalled(m, v1alpha1.PortalURLNotSetReason, ErrNoPortalURL.Error())
		return ctrl.Result{}, true, nil
	}
	if err != nil {
		return ctrl.Result{}, true, err
	}

	if hold := r.Recent.Reserve(string(m.Spec.Customer), m.Spec.Email, m.UID, inv.Round, inv.Attempts == 0, now); hold.Wait > 0 {
		// Not an attempt: nothing was tried. The membership waits, visibly.
		text := r.heldBack(m, now, hold)
		status.Set(m, v1alpha1.InvitedCondition, metav1.ConditionFalse, v1alpha1.InvitationPendingReason, text)
		status.MarkReconciling(m, v1alpha1.InvitationPendingReason, text)
		return ctrl.Result{RequeueAfter: hold.Wait}, true, nil
	}

	previous := status.Get(m, v1alpha1.InvitedCondition).DeepCopy()
	inv.Attempts++
	inv.LastAttemptTime = &metav1.Time{Time: now}
	// The link's expiry is bounded from the moment it may be out, even if a crash
	// keeps sentTime from being written; a successful send moves it to sentTime+TTL.
	inv.ExpiryTime = &metav1.Time{Time: now.Add(r.InvitationTTL)}
	if previous == nil || previous.Reason != v1alpha1.SendFailedReason {
		status.Set(m, v1alpha1.InvitedCondition, metav1.ConditionFalse, v1alpha1.InvitationPendingReason,
			fmt.Sprintf("sending the invitation e-mail (round %d)", inv.Round))
		status.MarkReconciling(m, v1alpha1.InvitationPendingReason, "sending the invitation e-mail")
	} else {
		// Still failing until this attempt proves otherwise.
		status.MarkReconciling(m, v1alpha1.SendFailedReason, previous.Message)
	}
	status.Set(m, v1alpha1.AcceptedCondition, metav1.ConditionFalse, v1alpha1.InvitationPendingReason,
		"the invitation has not been sent yet")
	// The write that makes sending safe: if someone else recorded anything since our
	// read (a send, another attempt, a new round), it conflicts and nothing is sent.
	if err := s.patcher.PatchStatus(ctx, r.Client, m); err != nil {
		return ctrl.Result{}, true, err
	}
	r.Recent.Attempted(m.UID, inv.Round)

	// From here on the attempt is on record, and the send and its record are
	// finished even when the manager is stopping (the send within SendingGrace, the
	// record within StoppingGrace): controller-runtime cancels ctx when it stops and
	// then waits for the running reconciles, so with ctx a rollout aborted mails in
	// flight and failed to record the ones the server had just accepted, which the
	// next leader then sent again.
	sending, stopSending := finishing(ctx, SendingGrace)
	defer stopSending()
	sendCtx, cancel := context.WithTimeout(sending, sendTimeout)
	defer cancel()
	logger := log.FromContext(ctx).WithValues("round", inv.Round, "attempt", inv.Attempts)
	if sendErr := r.Sender.Send(sendCtx, msg); sendErr != nil {
		if ctx.Err() != nil && sending.Err() != nil {
			// Cut off by the stop, not refused: the next leader sends it at once,
			// without a backoff or a Warning for a failure that was ours.
			logger.Info("Sending the invitation e-mail was cut off by the manager stopping", "error", sendErr.Error())
			return ctrl.Result{}, true, nil
		}
		logger.Info("Sending the invitation e-mail failed", "error", sendErr.Error())
		return r.recordFailure(m, previous, sendErr), true, nil
	}
	round, attempts, sentAt := inv.Round, inv.Attempts, r.Clock.Now()
	recordCtx, cancelRecord := context.WithTimeout(s.lasting, recordTimeout)
	defer cancelRecord()
	if err := r.recordSent(recordCtx, s, round, sentAt); err != nil {
		// The mail is out but not recorded: the next reconcile sends it again (the
		// same link and Message-ID). This is the duplicate window of the docs.
		return ctrl.Result{}, true, fmt.Errorf("recording the sent invitation: %w", err)
	}
	logger.Info("Sent the invitation e-mail")
	if attempts > 1 {
		// The Normal event that closes the SendFailed Warnings. A mail sent at the
		// first attempt is recorded in Invited (with its time) only: an event per
		// membership costs an API write each and sits in the event recorder's
		// cache for minutes, for thousands of memberships applied at once.
		r.Recorder.Eventf(s.membership, nil, corev1.EventTypeNormal, v1alpha1.InvitationSentReason, "Invite",
			"sent the invitation e-mail (round %d) to %s at attempt %d", round, s.membership.Spec.Email, attempts)
	}
	return r.followExpiry(s.membership), true, nil
}

// recordFailure notes a failed send: Invited=False (SendFailed) with the error, a
// Warning event when the failure is new or different (not at every retry), and the
// retry after the backoff. A permanent refusal (5xx) is not retried: Stalled=True
// until a new round is requested.
func (r *CustomerMembershipReconciler) recordFailure(m *v1alpha1.CustomerMembership, previous *metav1.Condition, sendErr error) ctrl.Result {
	inv := m.Status.Invitation
	text := sendErr.Error()
	if len(text) > maxLastError {
		text = text[:maxLastError-3] + "..."
	}
	changed := previous == nil || previous.Reason != v1alpha1.SendFailedReason || inv.LastError != text
	inv.LastError = text
	if changed {
		r.Recorder.Eventf(m, nil, corev1.EventTypeWarning, v1alpha1.SendFailedReason, "Invite",
			"sending the invitation e-mail to %s failed: %s", m.Spec.Email, text)
	}
	if mail.IsPermanent(sendErr) {
		msg := fmt.Sprintf("the mail server refused the invitation e-mail (attempt %d): %s; after fixing the cause, give the annotation %s a new value to try again",
			inv.Attempts, text, v1alpha1.ResendInvitationAnnotation)
		status.Set(m, v1alpha1.InvitedCondition, metav1.ConditionFalse, v1alpha1.SendFailedReason, msg)
		status.MarkStalled(m, v1alpha1.SendFailedReason, msg)
		return ctrl.Result{}
	}
	wait := r.backoff(inv.Attempts)
	msg := fmt.Sprintf("sending the invitation e-mail failed (attempt %d), retrying in %s: %s", inv.Attempts, wait, text)
	status.Set(m, v1alpha1.InvitedCondition, metav1.ConditionFalse, v1alpha1.SendFailedReason, msg)
	status.MarkReconciling(m, v1alpha1.SendFailedReason, msg)
	return ctrl.Result{RequeueAfter: wait}
}

// recordSent writes sentTime and expiryTime. If the write conflicts (someone
// touched the membership while the mail was out), it is redone on the freshest
// object rather than left to the next reconcile, which would send again.
func (r *CustomerMembershipReconciler) recordSent(ctx context.Context, s *membershipScope, round int32, sentAt time.Time) error {
	// The whole outcome of the reconcile goes into this one write (conditions as
	// followExpiry reports them, observedGeneration), so that the reconcile's
	// closing status patch finds nothing left to write.
	apply := func(m *v1alpha1.CustomerMembership) {
		inv := m.Status.Invitation
		inv.SentTime = &metav1.Time{Time: sentAt}
		inv.ExpiryTime = &metav1.Time{Time: sentAt.Add(r.InvitationTTL)}
		inv.LastError = ""
		r.followExpiry(m)
		m.Status.ObservedGeneration = m.Generation
	}
	apply(s.membership)
	err := s.patcher.PatchStatus(ctx, r.Client, s.membership)
	if !apierrors.IsConflict(err) {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		fresh := &v1alpha1.CustomerMembership{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(s.membership), fresh); err != nil {
			return err
		}
		inv := fresh.Status.Invitation
		if fresh.UID != s.membership.UID || inv == nil || inv.Round != round || inv.SentTime != nil {
			// Deleted and re-created, a newer round, or already recorded: nothing
			// left to record for this mail.
			return nil
		}
		patcher := status.NewPatcher(fresh)
		apply(fresh)
		if err := patcher.PatchStatus(ctx, r.Client, fresh); err != nil {
			return err
		}
		s.membership, s.patcher = fresh, patcher
		return nil
	})
}

// refusedForGood reports that the last attempt of this round was refused
// permanently (recordFailure marked it Stalled).
func refusedForGood(m *v1alpha1.CustomerMembership) bool {
	stalled := status.Get(m, v1alpha1.StalledCondition)
	invited := status.Get(m, v1alpha1.InvitedCondition)
	return stalled != nil && stalled.Status == metav1.ConditionTrue && stalled.Reason == v1alpha1.SendFailedReason &&
		invited != nil && invited.Reason == v1alpha1.SendFailedReason
}

// backoff is the wait after the given number of failed attempts: SendBackoff,
// doubled per attempt, at most MaxSendBackoff.
func (r *CustomerMembershipReconciler) backoff(attempts int32) time.Duration {
	wait := r.SendBackoff
	for i := int32(1); i < attempts && wait < r.MaxSendBackoff; i++ {
		wait *= 2
	}
	return min(wait, r.MaxSendBackoff)
}

// invitationMessage renders the mail of the membership's current round.
func (r *CustomerMembershipReconciler) invitationMessage(m *v1alpha1.CustomerMembership, customer *v1alpha1.Customer, now time.Time) (mail.Message, error) {
	round := m.Status.Invitation.Round
	link, err := r.Links.Link(invitation.Claim{Name: m.Name, UID: m.UID, Round: round})
	if err != nil {
		return mail.Message{}, fmt.Errorf("making the invitation link: %w", err)
	}
	msg, err := mail.InvitationMail(mail.InvitationData{
		To:                  m.Spec.Email,
		MessageID:           mail.InvitationMessageID(string(m.UID), round),
		CustomerDisplayName: customer.Spec.DisplayName,
		Role:                string(m.Spec.Role),
		Link:                link,
		// The link expires TTL after the send that succeeds: this is when it would
		// if this attempt does.
		ExpiryTime: now.Add(r.InvitationTTL),
	})
	if err != nil {
		return mail.Message{}, fmt.Errorf("rendering the invitation e-mail: %w", err)
	}
	msg.Kind = mail.KindInvitation
	return msg, nil
}

// TokenLinks makes invitation links from the operator's HMAC key
// (internal/invitation): deterministic per membership and round, never stored.
type TokenLinks struct {
	// Key is the invitation key (invitation.EnsureKey).
	Key []byte
	// PortalURL is --portal-url.
	PortalURL string
}

// ErrNoPortalURL holds invitations back while --portal-url is not set.
var ErrNoPortalURL = errors.New("no --portal-url (or $PORTAL_URL) is set, so an invitation link would lead nowhere; " +
	"set it to where users reach the portal (config/default: the key portal-url of the Secret smtp) and restart the manager")

// Link implements InvitationLinker.
func (l TokenLinks) Link(claim invitation.Claim) (string, error) {
	if l.PortalURL == "" {
		return "", ErrNoPortalURL
	}
	return invitation.Link(l.PortalURL, invitation.Token(l.Key, claim))
}
