//go:build faults

package faults

import (
	"context"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/testenv"
)

// leaseName is the manager's leader-election Lease (operator.go LeaderElectionID).
const leaseName = "customer-operator.partnerops.io"

// TestFailoverDuringInvitationBurst runs two replicas with leader election, kills
// the leader with SIGKILL in the middle of a burst of invitations, and checks that
// the other takes over: no invitation lost, duplicates within the in-flight window.
// The API server reaches the webhooks of one replica at a time (envtest has no
// Service): after the kill the test repoints the webhook configuration at the
// survivor, as a Service's endpoints would, and checks that it answers.
func TestFailoverDuringInvitationBurst(t *testing.T) {
	const burst = 300
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	started := time.Now()
	step := func(format string, args ...any) {
		t.Logf("%s: "+format, append([]any{time.Since(started).Round(time.Second)}, args...)...)
	}

	r := newRig(ctx, t)
	env, smtp, dir, bin := r.env, r.smtp, r.dir, r.bin
	admin := env.Admin

	leader := startManager(t, bin, dir, env, smtp.Addr(), managerRun{name: "a", leaderElect: true})
	holder := func() string {
		var lease coordinationv1.Lease
		if err := admin.Get(ctx, types.NamespacedName{Namespace: testenv.OperatorNamespace, Name: leaseName}, &lease); err != nil {
			return ""
		}
		return ptr.Deref(lease.Spec.HolderIdentity, "")
	}
	for holder() == "" {
		if ctx.Err() != nil {
			t.Fatalf("replica a never became leader; log:\n%s", tail(leader.log))
		}
		time.Sleep(200 * time.Millisecond)
	}
	leaderID := holder()
	standbyPort, err := strconv.Atoi(portOf(freeAddr(t)))
	if err != nil {
		t.Fatal(err)
	}
	standby := startManager(t, bin, dir, env, smtp.Addr(), managerRun{name: "b", leaderElect: true, webhookPort: standbyPort})
	step("replica a leads (%s), replica b stands by", leaderID)

	r.createCustomer(ctx, t, "failover", "Failover GmbH")
	emails := addresses("failover.test", burst)
	var created atomic.Int32
	waitCreated := createMemberships(ctx, admin, "failover", emails, &created)
	for len(smtp.Messages()) < burst/5 {
		if ctx.Err() != nil {
			t.Fatalf("only %d mails; log:\n%s", len(smtp.Messages()), tail(leader.log))
		}
		time.Sleep(20 * time.Millisecond)
	}
	leader.kill()
	killedAt := time.Now()
	mailsAtKill := len(smtp.Messages())
	step("kill -9 of the leader after %d mails, %d memberships created", mailsAtKill, created.Load())

	// The Service would now send admission to the survivor.
	pointWebhooksAt(ctx, t, env, standbyPort)
	for {
		if holder() != leaderID && holder() != "" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replica b never took over; log:\n%s", tail(standby.log))
		}
		time.Sleep(200 * time.Millisecond)
	}
	takeover := time.Since(killedAt).Round(time.Second)
	step("replica b leads after %s", takeover)
	for _, err := range waitCreated() {
		t.Error(err)
	}

	// The survivor's webhooks answer: a late membership is admitted (and a bad one refused).
	late := &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: "failover-late"},
		Spec: v1alpha1.CustomerMembershipSpec{Customer: "failover", Email: "late@failover.test", Role: v1alpha1.RoleViewer}}
	var lateErr error
	for range 100 {
		if lateErr = admin.Create(ctx, late); lateErr == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if lateErr != nil {
		t.Fatalf("the surviving replica's webhooks did not admit a membership: %v", lateErr)
	}
	duplicate := late.DeepCopy()
	duplicate.ResourceVersion, duplicate.Name = "", "failover-late-again"
	if err := admin.Create(ctx, duplicate); err == nil {
		t.Errorf("the surviving replica's webhook admitted a duplicate membership for late@failover.test")
	}
	emails = append(emails, "late@failover.test")

	var lost []string
	for {
		lost = lost[:0]
		for _, e := range emails {
			if len(smtp.MessagesTo(e)) == 0 {
				lost = append(lost, e)
			}
		}
		var list v1alpha1.CustomerMembershipList
		if err := admin.List(ctx, &list); err != nil {
			t.Fatal(err)
		}
		invited := 0
		for _, m := range list.Items {
			if apimeta.IsStatusConditionTrue(m.Status.Conditions, v1alpha1.InvitedCondition) {
				invited++
			}
		}
		if len(lost) == 0 && invited == len(emails) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d people got no mail, %d of %d Invited; log of b:\n%s", len(lost), invited, len(emails), tail(standby.log))
		}
		time.Sleep(250 * time.Millisecond)
	}
	// A consistency window: a late duplicate would show up within a few reconciles.
	time.Sleep(3 * time.Second)
	duplicates := 0
	for _, e := range emails {
		duplicates += len(smtp.MessagesTo(e)) - 1
	}
	step("figures: %d invitations, leader killed at %d mails, failover in %s, lost %d, duplicated %d (bound %d)",
		burst+1, mailsAtKill, takeover, len(lost), duplicates, inFlight)
	if duplicates > inFlight {
		t.Errorf("%d duplicates, more than the %d sends in flight at the kill", duplicates, inFlight)
	}
}

// pointWebhooksAt moves every webhook of env's configuration to port, on the same host.
func pointWebhooksAt(ctx context.Context, t *testing.T, env *testenv.Env, port int) {
	t.Helper()
	var list admissionregistrationv1.ValidatingWebhookConfigurationList
	if err := env.Admin.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		cfg := &list.Items[i]
		changed := false
		for j := range cfg.Webhooks {
			cc := &cfg.Webhooks[j].ClientConfig
			if cc.URL == nil {
				continue
			}
			u, err := url.Parse(*cc.URL)
			if err != nil {
				t.Fatal(err)
			}
			u.Host = u.Hostname() + ":" + strconv.Itoa(port)
			cc.URL = ptr.To(u.String())
			changed = true
		}
		if changed {
			if err := env.Admin.Update(ctx, cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mutating admissionregistrationv1.MutatingWebhookConfigurationList
	if err := env.Admin.List(ctx, &mutating); err != nil {
		t.Fatal(err)
	}
	for i := range mutating.Items {
		cfg := &mutating.Items[i]
		for j := range cfg.Webhooks {
			cc := &cfg.Webhooks[j].ClientConfig
			if cc.URL == nil {
				continue
			}
			u, err := url.Parse(*cc.URL)
			if err != nil {
				t.Fatal(err)
			}
			u.Host = u.Hostname() + ":" + strconv.Itoa(port)
			cc.URL = ptr.To(u.String())
		}
		if err := env.Admin.Update(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

func portOf(addr string) string {
	u, _ := url.Parse("tcp://" + addr)
	return u.Port()
}
