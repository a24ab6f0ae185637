//go:build faults

package faults

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// apiServerDown is how long the API server stays dead: longer than the clients'
// first retries, shorter than anything that would give up (the manager runs
// without leader election here, so no lease can expire).
const apiServerDown = 5 * time.Second

// TestAPIServerRestartDuringInvitationBurst kills kube-apiserver with SIGKILL in the
// middle of a burst of invitations, keeps etcd (and its data) running, and starts
// the API server again on the same address with the same certificates: the same
// manager process must reconnect by itself and deliver every invitation, none
// lost, with no more duplicates than the sends in flight at the kill.
func TestAPIServerRestartDuringInvitationBurst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	step := stepLogger(t)

	r := newRig(ctx, t)
	env, smtp, dir, bin := r.env, r.smtp, r.dir, r.bin
	admin := env.Admin
	step("control plane up and manager built")

	manager := startManager(t, bin, dir, env, smtp.Addr(), managerRun{name: "survivor"})
	r.createCustomer(ctx, t, "restart", "Restart AG")
	emails := addresses("restart.test", invitations)
	var created atomic.Int32
	// The writers retry each create for a minute, so the outage only delays them.
	waitCreated := createMemberships(ctx, admin, "restart", emails, &created)

	waitForMails(ctx, t, smtp, invitations/5, manager.log)
	if err := env.KillAPIServer(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	mailsAtKill := len(smtp.Messages())
	step("kube-apiserver killed (SIGKILL) after %d mails, %d memberships created; etcd keeps running", mailsAtKill, created.Load())

	time.Sleep(apiServerDown)
	// Sends that were past their recorded attempt finish; nothing new can start,
	// since an attempt is recorded in the API before its mail goes out.
	mailsWhileDown := len(smtp.Messages()) - mailsAtKill
	startingAt := time.Now()
	if err := env.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	step("kube-apiserver healthy again after %s down (%s of it starting; same address, certificates and etcd); %d mails went out meanwhile",
		restartedAt.Sub(killedAt).Round(100*time.Millisecond), restartedAt.Sub(startingAt).Round(100*time.Millisecond), mailsWhileDown)
	if manager.exited() {
		t.Fatalf("the manager exited while the API server was down; log:\n%s", tail(manager.log))
	}

	// The first mail after the restart: the manager's watches and workers are back.
	mailsAtRestart := len(smtp.Messages())
	for len(smtp.Messages()) == mailsAtRestart {
		if ctx.Err() != nil || manager.exited() {
			t.Fatalf("no mail after the API server came back; manager log:\n%s", tail(manager.log))
		}
		time.Sleep(50 * time.Millisecond)
	}
	resumed := time.Since(restartedAt).Round(100 * time.Millisecond)
	step("mails flow again %s after the restart", resumed)

	for _, err := range waitCreated() {
		t.Error(err)
	}

	var lost []string
	for {
		lost = undelivered(smtp, emails)
		// The API server may still refuse a moment after its restart: count 0 then.
		invited, _ := invitedMemberships(ctx, admin)
		if len(lost) == 0 && invited == invitations {
			break
		}
		if ctx.Err() != nil || manager.exited() {
			t.Fatalf("%d people got no mail, %d of %d memberships Invited; manager log:\n%s",
				len(lost), invited, invitations, tail(manager.log))
		}
		time.Sleep(250 * time.Millisecond)
	}
	allDelivered := time.Since(restartedAt).Round(time.Second)
	// A consistency window: a late duplicate would show up within a few reconciles.
	time.Sleep(3 * time.Second)
	if manager.exited() {
		t.Errorf("the manager exited after the API server came back; log:\n%s", tail(manager.log))
	}

	duplicates, sameMessageID := 0, 0
	for _, e := range emails {
		got := smtp.MessagesTo(e)
		duplicates += len(got) - 1
		for _, m := range got[1:] {
			if m.MessageID == got[0].MessageID {
				sameMessageID++
			}
		}
	}
	step("figures: %d invitations, kube-apiserver killed at %d mails and down %s, %d mails while down, mails again %s and all delivered %s after the restart, same manager process; %d mails in all, lost %d, duplicated %d (same Message-ID: %d), bound %d",
		invitations, mailsAtKill, restartedAt.Sub(killedAt).Round(100*time.Millisecond), mailsWhileDown, resumed, allDelivered,
		len(smtp.Messages()), len(lost), duplicates, sameMessageID, inFlight)
	if len(lost) != 0 {
		t.Errorf("lost invitations: %v", lost)
	}
	if duplicates > inFlight {
		t.Errorf("%d duplicate mails, more than the %d sends that can be in flight at the kill", duplicates, inFlight)
	}
	if sameMessageID != duplicates {
		t.Errorf("a re-sent invitation must carry the same Message-ID (same round, same link): %d of %d did", sameMessageID, duplicates)
	}
}
