//go:build faults

// Package faults holds the fault-injection tests (issue 8): a real manager process
// (main.go built with `go build`) against a real control plane, killed and
// restarted while it works. They run with `make test-faults` (build tag faults),
// which .ci/run calls; they are kept out of `make test` because they take minutes.
package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/localcluster"
	"github.com/partnerops/customer-operator/internal/operator"
	"github.com/partnerops/customer-operator/internal/testenv"
)

// invitations is the size of the burst (issue 8: 500).
const invitations = 500

// inFlight bounds the sends that can be in flight when the manager dies: the
// membership controller's concurrent reconciles (--concurrent-reconciles, which the
// tests leave at its default), each sending one mail at a time.
const inFlight = operator.DefaultConcurrentReconciles

// managerProcess is the operator built from main.go, running as its own process.
type managerProcess struct {
	cmd *exec.Cmd
	log string
	// done is closed when the process has exited (by itself or killed).
	done chan struct{}
}

// buildManager builds main.go into dir once.
func buildManager(t *testing.T, root, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "manager")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// managerRun says how one manager process runs.
type managerRun struct {
	// name tells the processes (and their logs) apart.
	name string
	// webhookPort is where its webhook server listens; 0: where env's webhook
	// configuration points.
	webhookPort int
	// healthProbeAddr serves /healthz and /readyz; empty: not served.
	healthProbeAddr string
	leaderElect     bool
}

// startManager runs bin as the operator's ServiceAccount against env, with mail to
// smtpAddr, and waits until its webhook server accepts connections.
func startManager(t *testing.T, bin, dir string, env *testenv.Env, smtpAddr string, run managerRun) *managerProcess {
	t.Helper()
	kubeconfig := filepath.Join(dir, "operator.kubeconfig")
	if err := localcluster.WriteKubeconfig(kubeconfig, env.OperatorConfig, "operator"); err != nil {
		t.Fatal(err)
	}
	host, port, certDir := env.WebhookOptions()
	if run.webhookPort != 0 {
		port = run.webhookPort
	}
	logPath := filepath.Join(dir, "manager-"+run.name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	healthProbe := run.healthProbeAddr
	if healthProbe == "" {
		healthProbe = "0"
	}
	cmd := exec.Command(bin,
		"--metrics-bind-address=0", "--health-probe-bind-address="+healthProbe, fmt.Sprintf("--leader-elect=%t", run.leaderElect),
		"--namespace="+testenv.OperatorNamespace,
		"--webhook-host="+host, fmt.Sprintf("--webhook-port=%d", port), "--webhook-cert-dir="+certDir,
		"--webhook-cert-rotation=false",
		"--smtp-address="+smtpAddr, "--smtp-tls=none",
		"--portal-bind-address="+freeAddr(t), "--portal-url=http://portal.faults.test",
	)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &managerProcess{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	// Ready when its webhook server answers TLS.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, fmt.Sprint(port)), time.Second)
		if err == nil {
			_ = conn.Close()
			return p
		}
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("manager %s did not start serving webhooks; log %s:\n%s", run.name, logPath, tail(logPath))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kill sends SIGKILL (kill -9) and waits for the process to be gone.
func (p *managerProcess) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// exited reports whether the process has ended.
func (p *managerProcess) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	// Below the ephemeral range: restarted processes bind it again.
	addr, err := testenv.StableAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}

// createMemberships creates a membership of customer for each e-mail, named
// <customer>-<index>, with 16 concurrent writers, counting them in created. The
// webhook may be briefly unreachable (its server is in the process the tests
// kill), so each create is retried for a minute. The returned func waits for the
// writers and returns the creates that failed.
func createMemberships(ctx context.Context, c client.Client, customer string, emails []string, created *atomic.Int32) func() []error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				m := &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%03d", customer, i)},
					Spec: v1alpha1.CustomerMembershipSpec{Customer: v1alpha1.CustomerName(customer), Email: emails[i], Role: v1alpha1.RoleViewer}}
				var err error
				for range 120 {
					if err = c.Create(ctx, m); err == nil || apierrors.IsAlreadyExists(err) {
						err = nil
						break
					}
					time.Sleep(500 * time.Millisecond)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("creating membership %s: %w", m.Name, err))
					mu.Unlock()
					continue
				}
				created.Add(1)
			}
		})
	}
	go func() {
		defer close(next)
		for i := range emails {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() []error {
		wg.Wait()
		return errs
	}
}

// TestKillDuringInvitationBurst kills the manager with SIGKILL in the middle of a
// burst of invitations and starts it again: every membership must end with its
// invitation delivered (none lost), and the duplicates (mails sent before the kill
// whose sending was not yet recorded) must not exceed the sends in flight.
func TestKillDuringInvitationBurst(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	started := time.Now()

	r := newRig(ctx, t)
	env, smtp, dir, bin := r.env, r.smtp, r.dir, r.bin
	t.Logf("control plane up and manager built in %s", time.Since(started).Round(time.Second))

	manager := startManager(t, bin, dir, env, smtp.Addr(), managerRun{name: "first"})
	admin := env.Admin
	r.createCustomer(ctx, t, "faults", "Faults Inc.")

	emails := addresses("faults.test", invitations)

	// The burst: memberships created by 16 writers while the manager sends.
	var created atomic.Int32
	waitCreated := createMemberships(ctx, admin, "faults", emails, &created)

	// Kill -9 once a fifth of the invitations went out, mid-burst.
	waitForMails(ctx, t, smtp, invitations/5, manager.log)
	manager.kill()
	mailsAtKill := len(smtp.Messages())
	createdAtKill := created.Load()
	t.Logf("kill -9 after %d mails, %d memberships created", mailsAtKill, createdAtKill)

	manager = startManager(t, bin, dir, env, smtp.Addr(), managerRun{name: "restarted"})
	for _, err := range waitCreated() {
		t.Error(err)
	}

	// Wait until every membership says its invitation was sent and every person got mail.
	var lost []string
	for {
		lost = undelivered(smtp, emails)
		invited, err := invitedMemberships(ctx, admin)
		if err != nil {
			t.Fatal(err)
		}
		if len(lost) == 0 && invited == invitations {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d people got no mail, %d of %d memberships Invited; manager log:\n%s",
				len(lost), invited, invitations, tail(manager.log))
		}
		time.Sleep(250 * time.Millisecond)
	}
	// A consistency window: a late duplicate would show up within a few reconciles.
	time.Sleep(3 * time.Second)

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
	total := len(smtp.Messages())
	t.Logf("figures: %d invitations, kill -9 at %d mails, %d mails in all, lost %d, duplicated %d (same Message-ID: %d), bound %d; %s in all",
		invitations, mailsAtKill, total, len(lost), duplicates, sameMessageID, inFlight, time.Since(started).Round(time.Second))
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
