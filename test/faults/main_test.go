//go:build faults

package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/mail/mailtest"
	"github.com/partnerops/customer-operator/internal/testenv"
)

// The managers under test log to their own files (manager-<name>.log in the
// test's temp dir, whose tail a failure prints); envtest's own chatter is dropped.
func init() { logf.SetLogger(logr.Discard()) }

// rig is what every fault test starts from: a control plane, a real SMTP server and
// the manager binary built into the test's temp dir.
type rig struct {
	env  *testenv.Env
	smtp *mailtest.Server
	dir  string
	bin  string
}

// newRig starts the control plane and the SMTP server and builds the manager; all
// of it is stopped when the test ends. A control plane that cannot start fails the
// test: these tests never skip.
func newRig(ctx context.Context, t *testing.T) *rig {
	t.Helper()
	env, err := testenv.Start(ctx, testenv.Options{})
	if err != nil {
		t.Fatalf("the control plane must start (these tests never skip): %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	// On a stable port: the outage spec stops and restarts it, and a port from the
	// kernel's range for outgoing connections could be taken meanwhile.
	addr, err := testenv.StableAddr()
	if err != nil {
		t.Fatal(err)
	}
	smtp, err := mailtest.NewServer(mailtest.WithAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = smtp.Close() })
	dir := t.TempDir()
	return &rig{env: env, smtp: smtp, dir: dir, bin: buildManager(t, env.Root, dir)}
}

// createCustomer creates the Customer the burst's memberships belong to.
func (r *rig) createCustomer(ctx context.Context, t *testing.T, name, displayName string) {
	t.Helper()
	if err := r.env.Admin.Create(ctx, &v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.CustomerSpec{Identifier: name, DisplayName: displayName}}); err != nil {
		t.Fatal(err)
	}
}

// addresses returns n distinct e-mail addresses in domain.
func addresses(domain string, n int) []string {
	emails := make([]string, n)
	for i := range emails {
		emails[i] = fmt.Sprintf("user%03d@%s", i, domain)
	}
	return emails
}

// stepLogger logs with the time since the test started, for the timeline a fault
// test prints.
func stepLogger(t *testing.T) func(format string, args ...any) {
	started := time.Now()
	return func(format string, args ...any) {
		t.Helper()
		t.Logf("%s: "+format, append([]any{time.Since(started).Round(time.Second)}, args...)...)
	}
}

// waitForMails waits until the SMTP server has at least n messages: the point in a
// burst where a test injects its fault. It fails the test, with the manager's log,
// if ctx ends first.
func waitForMails(ctx context.Context, t *testing.T, smtp *mailtest.Server, n int, managerLog string) {
	t.Helper()
	for len(smtp.Messages()) < n {
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d mails before the fault; manager log:\n%s", len(smtp.Messages()), n, tail(managerLog))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// undelivered returns the addresses the SMTP server has no message for.
func undelivered(smtp *mailtest.Server, emails []string) []string {
	var lost []string
	for _, e := range emails {
		if len(smtp.MessagesTo(e)) == 0 {
			lost = append(lost, e)
		}
	}
	return lost
}

// invitedMemberships counts the memberships whose Invited condition is True.
func invitedMemberships(ctx context.Context, c client.Client) (int, error) {
	var list v1alpha1.CustomerMembershipList
	if err := c.List(ctx, &list); err != nil {
		return 0, err
	}
	invited := 0
	for _, m := range list.Items {
		if apimeta.IsStatusConditionTrue(m.Status.Conditions, v1alpha1.InvitedCondition) {
			invited++
		}
	}
	return invited, nil
}
