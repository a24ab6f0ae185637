package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/mail"
	"github.com/partnerops/customer-operator/internal/messages"
	"github.com/partnerops/customer-operator/internal/status"
)

// The e-mail notice of a message (spec.notify Email) goes to each recipient once,
// while the message is open, through the same sender as invitations. Like an
// invitation, an attempt is recorded before any mail goes out, under an optimistic
// lock, so that a reconcile that read a stale status (one that does not list a
// recipient as sent yet) conflicts instead of sending twice; the addresses sent to
// are recorded right after. A crash between the two re-sends those mails, with the
// same Message-ID (mail.NoticeMessageID), so receivers can tell. An attempt
// sends at most noticeBatch mails, which bounds that window, and stops between
// mails when the manager is stopping, recording what went out.
const (
	// noticeBatch is the most mails one attempt sends before recording them; the
	// rest go in the next attempt, at once.
	noticeBatch = 50
	// noticeSendTimeout bounds one mail, so a hanging SMTP server cannot hold a worker.
	noticeSendTimeout = time.Minute
	// maxNoticeSent is the MaxItems of status.notice.sent.
	maxNoticeSent = 1000
	// maxNoticeError is the MaxLength of status.notice.lastError.
	maxNoticeError = 1024
)

// noticesDue returns the recipient memberships still to be sent the notice, sorted
// by address, one per address: none unless spec.notify is Email and the message is
// open. Beyond what status.notice.sent can hold, it returns how many are left out.
func noticesDue(s *messageScope) (due []*v1alpha1.CustomerMembership, leftOut int) {
	msg := s.message
	if msg.Spec.Notify != v1alpha1.NotifyEmail || messages.IsResolved(msg) {
		return nil, 0
	}
	sent := map[string]bool{}
	if msg.Status.Notice != nil {
		for _, e := range msg.Status.Notice.Sent {
			sent[e] = true
		}
	}
	refused := map[string]bool{}
	if msg.Status.Notice != nil {
		for _, e := range msg.Status.Notice.Refused {
			refused[e] = true
		}
	}
	for _, m := range s.recipients {
		email := strings.ToLower(m.Spec.Email)
		if !sent[email] && !refused[email] {
			sent[email] = true
			due = append(due, m)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].Spec.Email < due[j].Spec.Email })
	if room := maxNoticeSent - len(sent) + len(due); len(due) > room {
		room = max(room, 0)
		due, leftOut = due[:room], len(due)-room
	}
	return due, leftOut
}

// setNotified sets the Notified condition (only with spec.notify Email): True once
// every recipient was sent the notice, else False with why. A failing SMTP server
// also makes Ready False, as for invitations: sending is the operator's part.
func (r *CustomerMessageReconciler) setNotified(s *messageScope) {
	msg := s.message
	if msg.Spec.Notify != v1alpha1.NotifyEmail {
		status.Remove(msg, v1alpha1.NotifiedCondition)
		return
	}
	sent, refused := 0, 0
	if msg.Status.Notice != nil {
		sent = len(msg.Status.Notice.Sent)
		// Only recipients of now: a refused address whose member has left is no
		// reason to say that someone goes without the notice.
		refusedAddresses := sets.New(msg.Status.Notice.Refused...)
		for _, m := range s.recipients {
			if refusedAddresses.Has(strings.ToLower(m.Spec.Email)) {
				refused++
			}
		}
	}
	due, leftOut := noticesDue(s)
	switch notice := msg.Status.Notice; {
	case len(due) == 0 && leftOut > 0:
		status.Set(msg, v1alpha1.NotifiedCondition, metav1.ConditionFalse, v1alpha1.NoticeLimitReachedReason,
			fmt.Sprintf("the e-mail notice was sent to %d recipient(s), the most status.notice.sent can hold; %d other recipient(s) get no e-mail: send them a new message",
				sent, leftOut))
	case len(due) == 0 && refused > 0 && !messages.IsResolved(msg):
		status.Set(msg, v1alpha1.NotifiedCondition, metav1.ConditionFalse, v1alpha1.NoticeRefusedReason,
			fmt.Sprintf("the e-mail notice was sent to %d recipient(s); the mail server refused it for good for %d (status.notice.refused), who are not tried again",
				sent, refused))
	case len(due) == 0 && sent == 0 && !messages.IsResolved(msg):
		status.Set(msg, v1alpha1.NotifiedCondition, metav1.ConditionFalse, v1alpha1.NoRecipientsReason,
			"no recipients to send the e-mail notice to yet")
	case len(due) == 0:
		status.Set(msg, v1alpha1.NotifiedCondition, metav1.ConditionTrue, v1alpha1.NoticeSentReason,
			fmt.Sprintf("the e-mail notice was sent to %d recipient(s)", sent))
	case notice != nil && notice.LastError != "":
		text := fmt.Sprintf("sending the e-mail notice to %d recipient(s) failed (attempt %d), retrying: %s",
			len(due), notice.Attempts, notice.LastError)
		status.Set(msg, v1alpha1.NotifiedCondition, metav1.ConditionFalse, v1alpha1.SendFailedReason, text)
		status.MarkReconciling(msg, v1alpha1.SendFailedReason, text)
	default:
		status.Set(msg, v1alpha1.NotifiedCondition, metav1.ConditionFalse, v1alpha1.NoticePendingReason,
			fmt.Sprintf("sending the e-mail notice to %d recipient(s)", len(due)))
	}
}

// reconcileNotice sends the notice to the recipients who have not had it: records
// the attempt, sends, records who was sent to. After a failure it waits out the
// backoff; an unchanged status, or one written by someone else since it was read,
// sends nothing.
func (r *CustomerMessageReconciler) reconcileNotice(ctx context.Context, s *messageScope) (ctrl.Result, error) {
	msg := s.message
	due, _ := noticesDue(s)
	if len(due) == 0 || s.customer == nil || !s.customer.DeletionTimestamp.IsZero() || r.Sender == nil {
		// A customer being deleted gets no notices any more (the message says
		// Stalled, CustomerDeleting).
		return ctrl.Result{}, nil
	}
	now := r.Clock.Now()
	// Each attempt after a failed one starts further on, so that addresses that
	// keep failing (a full mailbox, greylisting, a refusal of what is sent to them)
	// do not hold the rest back.
	if n := msg.Status.Notice; n != nil && n.Attempts > 0 {
		offset := int(n.Attempts) * noticeBatch % len(due)
		due = append(due[offset:], due[:offset]...)
	}
	more := len(due) > noticeBatch
	if more {
		due = due[:noticeBatch]
	}
	if n := msg.Status.Notice; n != nil && n.LastError != "" && n.LastAttemptTime != nil {
		if wait := n.LastAttemptTime.Add(noticeBackoff(n.Attempts)).Sub(now); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}

	// Rendered before the attempt is recorded: a problem here is not a delivery.
	mails := make([]mail.Message, 0, len(due))
	for _, m := range due {
		out, err := mail.NoticeMail(mail.NoticeData{
			To:                  strings.ToLower(m.Spec.Email),
			MessageID:           mail.NoticeMessageID(string(msg.UID), string(m.UID)),
			CustomerDisplayName: s.customer.Spec.DisplayName,
			MessageName:         msg.Name,
			Title:               msg.Spec.Title,
			Body:                msg.Spec.Body,
		})
		if err != nil {
			return ctrl.Result{}, fmt.Errorf("rendering the notice to %s: %w", m.Spec.Email, err)
		}
		mails = append(mails, out)
	}

	base := msg.DeepCopy()
	if msg.Status.Notice == nil {
		msg.Status.Notice = &v1alpha1.NoticeStatus{}
	}
	msg.Status.Notice.Attempts++
	msg.Status.Notice.LastAttemptTime = &metav1.Time{Time: now}
	if err := r.Status().Patch(ctx, msg, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		if apierrors.IsConflict(err) {
			// The read was stale: the write that made it so is an event of its own,
			// and the reconcile it triggers reads what was recorded since.
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("recording the notice attempt: %w", err)
	}

	// The attempt is on record. When the manager stops, controller-runtime cancels
	// ctx and then waits for this reconcile: no new mail starts, but the one out
	// finishes (within SendingGrace) and what went out is recorded (within
	// StoppingGrace), or the next leader would send it again.
	stopping := ctx
	ctx, stopFinishing := finishing(stopping, StoppingGrace)
	defer stopFinishing()
	sending, stopSending := finishing(stopping, SendingGrace)
	defer stopSending()
	var sent, refused []string
	var failures []error
	for _, m := range mails {
		if stopping.Err() != nil {
			more = true
			break
		}
		sendCtx, cancel := context.WithTimeout(sending, noticeSendTimeout)
		err := r.Sender.Send(sendCtx, m)
		cancel()
		if err != nil && stopping.Err() != nil && sending.Err() != nil {
			// Cut off by the stop, not refused: the next leader sends it.
			more = true
			break
		}
		if err != nil && mail.IsPermanent(err) && mail.IsRecipientRefusal(err) {
			// This address is refused for good at RCPT TO: trying again every backoff
			// would only fail again (and keep the failed-mail alert firing). A
			// permanent refusal of the message itself (at the end of DATA: the
			// sender, its content, its size) is no verdict on the address; it is a
			// failure like the others, retried after the cause is fixed.
			refused = append(refused, m.To)
			log.FromContext(ctx).Info("The mail server refused the e-mail notice for good", "error", err.Error())
			continue
		}
		if err != nil {
			failures = append(failures, fmt.Errorf("%s: %w", m.To, err))
			if !mail.IsRecipientRefusal(err) {
				// The server, the connection or our configuration is at fault, not this
				// address: the rest would each wait out the same failure (up to
				// noticeSendTimeout), holding a worker and a pooled connection. They go
				// after the backoff. A refusal at RCPT TO (no such mailbox, greylisting, a
				// policy, which may be about this address alone) comes at once and does
				// not stop the others.
				break
			}
			continue
		}
		sent = append(sent, m.To)
	}
	recordCtx, cancel := context.WithTimeout(ctx, recordTimeout)
	defer cancel()
	res, err := r.recordNotice(recordCtx, msg, sent, refused, errors.Join(failures...))
	if err == nil && res.IsZero() && more {
		// The rest of the recipients; the status write above triggers this too.
		res.RequeueAfter = time.Second
	}
	return res, err
}

// recordNotice writes who was sent the notice and the failure, if any. Only this
// reconciler writes status.notice, one reconcile per message at a time, so a merge
// patch of that field cannot lose another writer's update.
func (r *CustomerMessageReconciler) recordNotice(ctx context.Context, msg *v1alpha1.CustomerMessage, sent, refused []string, failure error) (ctrl.Result, error) {
	previousError := msg.Status.Notice.LastError
	base := msg.DeepCopy()
	notice := msg.Status.Notice
	notice.Sent = append(notice.Sent, sent...)
	// Beyond its bound a refusal stays unrecorded: it counts as a failure, so that
	// the address is tried again after the backoff rather than at once.
	room := min(len(refused), max(maxNoticeSent-len(notice.Refused), 0))
	notice.Refused = append(notice.Refused, refused[:room]...)
	if unrecorded := refused[room:]; len(unrecorded) > 0 {
		failure = errors.Join(failure, fmt.Errorf("refused for good, beyond the %d addresses status.notice.refused holds: %s",
			maxNoticeSent, strings.Join(unrecorded, ", ")))
	}
	refused = refused[:room]
	if failure == nil {
		notice.Attempts, notice.LastError = 0, ""
	} else {
		notice.LastError = failure.Error()
		if len(notice.LastError) > maxNoticeError {
			notice.LastError = notice.LastError[:maxNoticeError-3] + "..."
		}
	}
	if err := r.Status().Patch(ctx, msg, client.MergeFrom(base)); err != nil {
		// The mails are out but not recorded: the next attempt sends them again, with
		// the same Message-ID. This is the duplicate window of docs/messages.md.
		return ctrl.Result{}, fmt.Errorf("recording the sent notices: %w", err)
	}
	if len(sent) > 0 {
		log.FromContext(ctx).Info("Sent the e-mail notice", "recipients", len(sent))
		r.Recorder.Eventf(msg, nil, corev1.EventTypeNormal, v1alpha1.NoticeSentReason, "Notify",
			"sent the e-mail notice to %d recipient(s)", len(sent))
	}
	if len(refused) > 0 {
		r.Recorder.Eventf(msg, nil, corev1.EventTypeWarning, v1alpha1.NoticeRefusedReason, "Notify",
			"the mail server refused the e-mail notice for good for %d recipient(s), who are not tried again: %s",
			len(refused), strings.Join(refused, ", "))
	}
	if failure == nil {
		return ctrl.Result{}, nil
	}
	if notice.LastError != previousError {
		r.Recorder.Eventf(msg, nil, corev1.EventTypeWarning, v1alpha1.SendFailedReason, "Notify",
			"sending the e-mail notice failed: %s", notice.LastError)
	}
	return ctrl.Result{RequeueAfter: noticeBackoff(notice.Attempts)}, nil
}

// noticeBackoff is the wait after the n-th failed attempt: 10s, doubling, at most 10m.
func noticeBackoff(attempts int32) time.Duration {
	d := 10 * time.Second
	for i := int32(1); i < attempts && d < 10*time.Minute; i++ {
		d *= 2
	}
	return min(d, 10*time.Minute)
}
