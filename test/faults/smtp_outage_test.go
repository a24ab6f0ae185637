//go:build faults

package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// outage is how long the SMTP server is down (issue 8: 60 s).
const outage = 60 * time.Second

// TestSMTPOutageDuringBurst stops the SMTP server (connections refused) for 60 s in
// the middle of a burst of invitations: the memberships must say so (Invited=False,
// reason SendFailed, a Warning event), retries must back off instead of hammering
// the server, and once it is back every invitation must be delivered.
func TestSMTPOutageDuringBurst(t *testing.T) {
	const burst = 200
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	r := newRig(ctx, t)
	env, smtp, dir, bin := r.env, r.smtp, r.dir, r.bin
	manager := startManager(t, bin, dir, env, smtp.Addr(), managerRun{name: "outage"})
	admin := env.Admin
	r.createCustomer(ctx, t, "outage", "Outage Ltd.")
	emails := addresses("outage.test", burst)
	create := func(from, to int) {
		for i := from; i < to; i++ {
			m := &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("outage-%03d", i)},
				Spec: v1alpha1.CustomerMembershipSpec{Customer: "outage", Email: emails[i], Role: v1alpha1.RoleViewer}}
			if err := admin.Create(ctx, m); err != nil {
				t.Errorf("creating %s: %v", m.Name, err)
			}
		}
	}

	step := stepLogger(t)
	step("first half of the burst")
	create(0, burst/2)
	waitForMails(ctx, t, smtp, burst/5, manager.log)
	if err := smtp.Stop(); err != nil {
		t.Fatal(err)
	}
	outageStarted := time.Now()
	mailsAtOutage := len(smtp.Messages())
	step("SMTP server down after %d mails; second half of the burst during the outage", mailsAtOutage)
	create(burst/2, burst)

	// During the outage: conditions and events say so.
	var failing int
	var maxAttempts int32
	for time.Since(outageStarted) < outage {
		var list v1alpha1.CustomerMembershipList
		if err := admin.List(ctx, &list); err != nil {
			t.Fatal(err)
		}
		failing, maxAttempts = 0, 0
		for _, m := range list.Items {
			c := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.InvitedCondition)
			if c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.SendFailedReason {
				failing++
			}
			if m.Status.Invitation != nil {
				maxAttempts = max(maxAttempts, m.Status.Invitation.Attempts)
			}
		}
		time.Sleep(time.Second)
	}
	var events eventsv1.EventList
	if err := admin.List(ctx, &events); err != nil {
		t.Fatal(err)
	}
	warnings := 0
	for _, e := range events.Items {
		if e.Type == "Warning" && e.Reason == v1alpha1.SendFailedReason && e.Regarding.Kind == "CustomerMembership" {
			warnings++
		}
	}
	step("at the end of the outage: %d memberships Invited=False/SendFailed, %d SendFailed warning events, at most %d attempts each",
		failing, warnings, maxAttempts)
	if failing == 0 {
		t.Errorf("no membership said Invited=False, reason %s, during the outage", v1alpha1.SendFailedReason)
	}
	if warnings == 0 {
		t.Errorf("no Warning event %s during the outage", v1alpha1.SendFailedReason)
	}
	// Backoff 5 s, doubling: at most 5 attempts fit into 60 s (0, 5, 15, 35, 75 s
	// after the first); without backoff there would be hundreds.
	if maxAttempts > 5 {
		t.Errorf("a membership tried %d times in %s: retries must back off", maxAttempts, outage)
	}

	if err := smtp.Start(); err != nil {
		t.Fatal(err)
	}
	step("SMTP server back after %s", time.Since(outageStarted).Round(time.Second))
	var lost []string
	for {
		lost = undelivered(smtp, emails)
		if len(lost) == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d invitations never delivered after the outage; manager log:\n%s", len(lost), tail(manager.log))
		}
		time.Sleep(250 * time.Millisecond)
	}
	deliveredAfter := time.Since(outageStarted) - outage
	// Every membership Invited=True again.
	for {
		invited, err := invitedMemberships(ctx, admin)
		if err != nil {
			t.Fatal(err)
		}
		if invited == burst {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d memberships Invited=True after the outage", invited, burst)
		}
		time.Sleep(250 * time.Millisecond)
	}
	duplicates := 0
	for _, e := range emails {
		duplicates += len(smtp.MessagesTo(e)) - 1
	}
	step("figures: %d invitations, outage %s after %d mails, all delivered %s after it ended, lost 0, duplicated %d",
		burst, outage, mailsAtOutage, deliveredAfter.Round(time.Second), duplicates)
	if duplicates > inFlight {
		t.Errorf("%d duplicates, more than the %d sends in flight when the server went down", duplicates, inFlight)
	}
}
