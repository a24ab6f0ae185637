//go:build faults

package faults

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/testenv"
)

// leaseName is the manager's leader-election Lease (operator.go LeaderElectionID).
const leaseName = "customer-operator.partnerops.io"

// TestFailoverDuringInvitationBurst runs two replicas with leader election behind a
// load balancer (loadbalancer_test.go, what the webhook Service is in a cluster),
// kills the leader with SIGKILL in the middle of a burst of invitations, and checks
// that the other takes over: no invitation lost, duplicates within the in-flight
// window. Both replicas serve webhooks (leader election gates only controllers), so
// admission must keep answering through the kill: four probers each send a dry-run
// membership create every 50 ms, and none may fail once the balancer has taken the
// dead replica out.
func TestFailoverDuringInvitationBurst(t *testing.T) {
	const burst = 300
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	step := stepLogger(t)

	r := newRig(ctx, t)
	env, smtp, dir, bin := r.env, r.smtp, r.dir, r.bin
	admin := env.Admin
	host, leaderPort, _ := env.WebhookOptions()
	standbyPort, err := strconv.Atoi(portOf(freeAddr(t)))
	if err != nil {
		t.Fatal(err)
	}
	leaderProbe, standbyProbe := freeAddr(t), freeAddr(t)

	leader := startManager(t, bin, dir, env, smtp.Addr(), managerRun{name: "a", leaderElect: true, healthProbeAddr: leaderProbe})
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
	standby := startManager(t, bin, dir, env, smtp.Addr(), managerRun{name: "b", leaderElect: true, webhookPort: standbyPort, healthProbeAddr: standbyProbe})
	step("replica a leads (%s), replica b stands by", leaderID)

	// The webhook configuration points at the balancer once, as it would at the
	// Service. Round-robin starts with a, so the API server's first connection goes to
	// the replica the test kills.
	lb := newLoadBalancer(t, host, step,
		&lbBackend{name: "a", addr: net.JoinHostPort(host, strconv.Itoa(leaderPort)), readyURL: "http://" + leaderProbe + "/readyz"},
		&lbBackend{name: "b", addr: net.JoinHostPort(host, strconv.Itoa(standbyPort)), readyURL: "http://" + standbyProbe + "/readyz"})
	readyCtx, readyCancel := context.WithTimeout(ctx, time.Minute)
	defer readyCancel()
	if err := lb.waitReady(readyCtx); err != nil {
		t.Fatal(err)
	}
	pointWebhooksAt(ctx, t, env, lb.Addr())
	step("webhooks point at the balancer on %s", lb.Addr())

	r.createCustomer(ctx, t, "failover", "Failover GmbH")
	prober := startAdmissionProber(ctx, admin, "failover")
	emails := addresses("failover.test", burst)
	var created atomic.Int32
	waitCreated := createMemberships(ctx, admin, "failover", emails, &created)
	waitForMails(ctx, t, smtp, burst/5, leader.log)
	connsAtKill := lb.connections()
	killedAt := time.Now()
	leader.kill()
	mailsAtKill := len(smtp.Messages())
	step("kill -9 of the leader after %d mails, %d memberships created; balancer connections so far %s", mailsAtKill, created.Load(), connsAtKill)

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
	if err := admin.Create(ctx, late); err != nil {
		t.Fatalf("the surviving replica's webhooks did not admit a membership: %v", err)
	}
	// The webhook refuses a duplicate its cache shows (DESIGN.md: one that races past
	// is marked Duplicate by the controller instead). Once the survivor has reconciled
	// the late membership its cache holds it, and the balancer sends every request to
	// the survivor, so from then on the duplicate must be refused at admission.
	for {
		var got v1alpha1.CustomerMembership
		if err := admin.Get(ctx, client.ObjectKeyFromObject(late), &got); err != nil {
			t.Fatal(err)
		}
		if got.Status.ObservedGeneration == got.Generation {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("replica b never reconciled %s; log of b:\n%s", late.Name, tail(standby.log))
		}
		time.Sleep(100 * time.Millisecond)
	}
	duplicate := late.DeepCopy()
	duplicate.ResourceVersion, duplicate.Name = "", "failover-late-again"
	switch err := admin.Create(ctx, duplicate); {
	case err == nil:
		t.Errorf("the surviving replica's webhook admitted a duplicate membership for late@failover.test after reconciling the first")
	case !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "already has a membership for this e-mail"):
		t.Errorf("the duplicate was refused, but not as a duplicate (422, already has a membership): %v", err)
	}
	emails = append(emails, "late@failover.test")

	// Admission across the kill: requests done before it, requests overlapping the
	// time between the kill and the balancer noticing, and requests sent after.
	probes := prober.stop()
	noticedAt := lb.takenOutSince("a")
	if noticedAt.IsZero() {
		t.Fatalf("the balancer never took the killed replica out")
	}
	noticed := noticedAt.Sub(killedAt)
	var before, window, after, failedBefore, failedWindow, failedAfter int
	for _, p := range probes {
		switch {
		case p.end.Before(killedAt):
			before++
			if p.err != nil {
				failedBefore++
			}
		case p.start.Before(noticedAt):
			window++
			if p.err != nil {
				failedWindow++
			}
		default:
			after++
			if p.err != nil {
				failedAfter++
			}
		}
		if p.err != nil {
			t.Logf("admission request sent %s after the kill failed: %v", p.start.Sub(killedAt).Round(time.Millisecond), p.err)
		}
	}
	step("admission through the balancer: %d dry-run creates before the kill (%d failed), %d between the kill and the balancer noticing %s later (%d failed), %d after (%d failed); balancer connections %s, %d dials to a dead backend retried elsewhere, %d refused",
		before, failedBefore, window, noticed.Round(time.Millisecond), failedWindow, after, failedAfter,
		lb.connections(), lb.dialFailures.Load(), lb.refused.Load())
	if failedBefore > 0 || failedAfter > 0 {
		t.Errorf("admission failed outside the kill window: %d before the kill, %d after the balancer noticed", failedBefore, failedAfter)
	}
	if noticed > 5*time.Second {
		t.Errorf("the balancer took %s to take the killed replica out (probe period %s)", noticed, readinessPeriod)
	}

	var lost []string
	for {
		lost = undelivered(smtp, emails)
		invited, err := invitedMemberships(ctx, admin)
		if err != nil {
			t.Fatal(err)
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
	step("figures: %d invitations, leader killed at %d mails, failover in %s, lost %d, duplicated %d (bound %d); admission: %d requests, %d failed (%d in the %s before the balancer noticed)",
		burst+1, mailsAtKill, takeover, len(lost), duplicates, inFlight,
		len(probes), failedBefore+failedWindow+failedAfter, failedWindow, noticed.Round(time.Millisecond))
	if duplicates > inFlight {
		t.Errorf("%d duplicates, more than the %d sends in flight at the kill", duplicates, inFlight)
	}
}

// admissionProbe is one dry-run create sent through the webhooks.
type admissionProbe struct {
	start, end time.Time
	err        error
}

// admissionProber keeps sending dry-run membership creates, which pass the
// mutating and validating webhooks (failurePolicy Fail: an unreachable webhook
// refuses them) without storing anything. Several at once, so that some are in
// flight on the connection the kill breaks.
type admissionProber struct {
	// stopping ends the probers between requests; one in flight is let finish.
	stopping chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	probes   []admissionProbe
}

// admissionProbers is how many probers run at once, each pausing 50 ms between requests.
const admissionProbers = 4

func startAdmissionProber(ctx context.Context, c client.Client, customer string) *admissionProber {
	p := &admissionProber{stopping: make(chan struct{})}
	for g := range admissionProbers {
		p.wg.Go(func() { p.run(ctx, c, customer, g) })
	}
	return p
}

func (p *admissionProber) run(ctx context.Context, c client.Client, customer string, g int) {
	for i := 0; ; i++ {
		m := &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-probe-%d-%05d", customer, g, i)},
			Spec: v1alpha1.CustomerMembershipSpec{Customer: v1alpha1.CustomerName(customer),
				Email: fmt.Sprintf("probe%d-%05d@%s.test", g, i, customer), Role: v1alpha1.RoleViewer}}
		start := time.Now()
		reqCtx, reqCancel := context.WithTimeout(ctx, 30*time.Second)
		err := c.Create(reqCtx, m, client.DryRunAll)
		reqCancel()
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.probes = append(p.probes, admissionProbe{start: start, end: time.Now(), err: err})
		p.mu.Unlock()
		select {
		case <-p.stopping:
			return
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the prober and returns what it sent.
func (p *admissionProber) stop() []admissionProbe {
	close(p.stopping)
	p.wg.Wait()
	return p.probes
}

// pointWebhooksAt moves every webhook of env's configuration to hostPort.
func pointWebhooksAt(ctx context.Context, t *testing.T, env *testenv.Env, hostPort string) {
	t.Helper()
	var list admissionregistrationv1.ValidatingWebhookConfigurationList
	if err := env.Admin.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		cfg := &list.Items[i]
		changed := false
		for j := range cfg.Webhooks {
			changed = rehost(t, &cfg.Webhooks[j].ClientConfig, hostPort) || changed
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
			rehost(t, &cfg.Webhooks[j].ClientConfig, hostPort)
		}
		if err := env.Admin.Update(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// rehost points a webhook's URL at hostPort; it reports whether there was a URL.
func rehost(t *testing.T, cc *admissionregistrationv1.WebhookClientConfig, hostPort string) bool {
	t.Helper()
	if cc.URL == nil {
		return false
	}
	u, err := url.Parse(*cc.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostPort
	cc.URL = ptr.To(u.String())
	return true
}

func portOf(addr string) string {
	u, _ := url.Parse("tcp://" + addr)
	return u.Port()
}
