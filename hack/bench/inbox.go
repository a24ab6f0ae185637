package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/operator"
	"github.com/partnerops/customer-operator/internal/plugin"
)

// inboxMessages is how many open messages the member of the plugin phase has: a
// customer's notices of a year or two, all still to be read.
const inboxMessages = 100

// inboxRuns is how many times each is timed; the median is reported.
const inboxRuns = 3

type inboxResult struct {
	inbox, list time.Duration // medians
}

// runInbox times `kubectl customer inbox` (the plugin's command, in this process,
// with the admin's kubeconfig and --as the member, as a member's own kubeconfig
// would run it) for a member of a customer with inboxMessages open messages. A
// member reads messages by name, one request each (DESIGN.md: RBAC cannot filter
// lists), and asks admission with a dry-run create whether each open one is
// addressed to them. The baseline is one LIST of the same messages as the admin:
// what reading them would cost if RBAC could filter lists.
func (b *bench) runInbox(ctx context.Context) (inboxResult, error) {
	var r inboxResult
	const customer, user = "inbox", "reader@inbox.example.com"
	objs := []client.Object{
		&v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: customer}, Spec: v1alpha1.CustomerSpec{Identifier: customer, DisplayName: "Inbox"}},
		&v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: customer + "-reader"}, Spec: v1alpha1.CustomerMembershipSpec{
			Customer: customer, Email: user, Role: v1alpha1.RoleViewer, Invitation: v1alpha1.InvitationNone}},
	}
	for i := range inboxMessages {
		objs = append(objs, &v1alpha1.CustomerMessage{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%03d", customer, i)},
			Spec: v1alpha1.CustomerMessageSpec{Customer: customer, Title: fmt.Sprintf("Notice %d", i),
				Body: "Maintenance window on Saturday, 02:00 to 04:00 UTC."}})
	}
	for _, o := range objs {
		if err := b.admin.Create(ctx, o); err != nil {
			return r, fmt.Errorf("creating %T %s: %w", o, o.GetName(), err)
		}
	}

	// Ready when the member may read every message: the access controller has
	// granted the membership and named the messages in its rules.
	memberCfg := rest.CopyConfig(b.adminCfg)
	memberCfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:authenticated"}}
	member, err := client.New(memberCfg, client.Options{Scheme: operator.Scheme})
	if err != nil {
		return r, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, o := range objs[2:] {
		for {
			err := member.Get(ctx, client.ObjectKeyFromObject(o), &v1alpha1.CustomerMessage{})
			if err == nil {
				break
			}
			if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
				return r, fmt.Errorf("the member reading CustomerMessage %s: %w", o.GetName(), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	kubeconfig := filepath.Join(b.workDir, "admin.kubeconfig")
	if err := writeKubeconfig(b.env.AdminConfig, kubeconfig); err != nil {
		return r, err
	}
	inboxOnce := func() (time.Duration, string, error) {
		var out, errOut bytes.Buffer
		cmd := plugin.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		cmd.SetArgs([]string{"--kubeconfig=" + kubeconfig, "--as=" + user, "--as-group=system:authenticated", "inbox"})
		start := time.Now()
		if err := cmd.ExecuteContext(ctx); err != nil {
			return 0, "", fmt.Errorf("kubectl customer inbox: %w (%s)", err, errOut.String())
		}
		return time.Since(start), out.String() + errOut.String(), nil
	}
	// The header and one line per message, and no warning on stderr (that the
	// member may not acknowledge, so the list is unverified): every one was read
	// and is open to the member.
	complete := func(out string) bool {
		return strings.Count(out, "\n") == inboxMessages+1 && !strings.Contains(out, "Warning:")
	}
	// Untimed until it lists them all: RBAC may name the messages before the
	// webhook's cache has the membership, which decides who may acknowledge.
	deadline = time.Now().Add(time.Minute)
	for {
		_, out, err := inboxOnce()
		if err != nil {
			return r, err
		}
		if complete(out) {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("kubectl customer inbox printed %d lines, want %d:\n%s", strings.Count(out, "\n"), inboxMessages+1, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var inbox, list []time.Duration
	for range inboxRuns {
		took, out, err := inboxOnce()
		if err != nil {
			return r, err
		}
		if !complete(out) {
			return r, fmt.Errorf("kubectl customer inbox printed %d lines, want %d:\n%s", strings.Count(out, "\n"), inboxMessages+1, out)
		}
		inbox = append(inbox, took)

		// No other phase makes CustomerMessages: the list is these.
		var messages v1alpha1.CustomerMessageList
		start := time.Now()
		if err := b.admin.List(ctx, &messages); err != nil {
			return r, err
		}
		list = append(list, time.Since(start))
	}
	r.inbox, r.list = median(inbox), median(list)
	return r, nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
