package plugin

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"text/tabwriter"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/messages"
)

func newStatusCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "status CUSTOMER",
		Short: "Show a customer's projects, members and open messages",
		Long: longDesc(`
			Show a customer: its projects (used of the quota, and their names), its
			members and its open messages. Everyone sees how many members there
			are; partners and the customer's Admins, who may read the memberships,
			also see who they are.`),
		Example: examples(`
			# Show the customer acme
			kubectl customer status acme`),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runStatus(cmd.Context(), args[0])
		},
	}
}

func (o *Options) runStatus(ctx context.Context, name string) error {
	c, me, err := o.clientAndUser(ctx)
	if err != nil {
		return err
	}
	customer := &v1alpha1.Customer{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, customer); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("customer %q does not exist", name)
		}
		return explain(err, quoteUser(me.Username), fmt.Sprintf("read customer %q", name),
			"members read their own customers; ask your partner to add you")
	}

	readable, err := readableMessages(ctx, c, name)
	if err != nil {
		return explain(err, quoteUser(me.Username), fmt.Sprintf("read the messages of customer %q", name), "")
	}
	var open []v1alpha1.CustomerMessage
	for _, m := range readable {
		if !messages.IsResolved(&m) {
			open = append(open, m)
		}
	}

	out := tabwriter.NewWriter(o.Out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(out, "Customer:\t%s (%s)\n", customer.Name, inline(customer.Spec.DisplayName))
	fmt.Fprintf(out, "Ready:\t%s\n", readySummary(customer.Status.Conditions))
	fmt.Fprintf(out, "Projects:\t%s\n", projectsLine(ctx, c, customer))
	fmt.Fprintf(out, "Members:\t%s\n", membersLine(ctx, c, customer))
	if len(open) == 0 {
		fmt.Fprintf(out, "Open messages:\tnone\n")
		return out.Flush()
	}
	fmt.Fprintf(out, "Open messages:\t%d\n", len(open))
	if err := out.Flush(); err != nil {
		return err
	}
	w := tabwriter.NewWriter(o.Out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "  NAME\tTITLE\tPOLICY\tPENDING\tACKNOWLEDGED BY YOU\tAGE")
	for _, m := range open {
		mine := "no"
		if messages.HasAcknowledged(&m, me.Username) {
			mine = "yes"
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%d\t%s\t%s\n", m.Name, oneLine(m.Spec.Title, 50), messages.ReadPolicy(&m),
			m.Status.Pending, mine, age(m.CreationTimestamp))
	}
	return w.Flush()
}

// projectsLine is "<used> of <max> used (CustomerQuota ...)", both numbers from the
// Customer's status (the maximum in force, its quota's or the operator's default),
// with the names of the projects the user may read (every member may: by name).
func projectsLine(ctx context.Context, c client.Client, customer *v1alpha1.Customer) string {
	line := fmt.Sprintf("%d of %d used", customer.Status.Projects, customer.Status.MaxProjects)
	quota := &v1alpha1.CustomerQuota{}
	switch err := c.Get(ctx, client.ObjectKey{Name: customer.Name}, quota); {
	case err == nil:
		line += fmt.Sprintf(" (CustomerQuota %q)", quota.Name)
	case apierrors.IsNotFound(err):
		line += " (default quota: no CustomerQuota)"
	default:
		line += " (quota not readable)"
	}
	// Best effort, like the members' names: the count above is the answer.
	if names, err := readableProjects(ctx, c, customer.Name); err == nil && len(names) > 0 {
		line += ": " + strings.Join(names, ", ")
	}
	return line
}

// membersLine is the number of active members, with names and roles when the user
// may read the memberships (partners by list, the customer's Admins by name).
func membersLine(ctx context.Context, c client.Client, customer *v1alpha1.Customer) string {
	line := fmt.Sprintf("%d active", customer.Status.Members)
	list, err := readableMemberships(ctx, c, customer.Name)
	if err != nil {
		return line
	}
	var names []string
	for i := range list {
		m := &list[i]
		names = append(names, fmt.Sprintf("%s (%s, %s)", inline(m.Spec.Email), m.Spec.Role, memberState(m)))
	}
	sort.Strings(names)
	if len(names) > 0 {
		line += ": " + strings.Join(names, ", ")
	}
	return line
}

// readySummary is the Ready condition as "True" or "False (Reason: message)".
func readySummary(conditions []metav1.Condition) string {
	ready := apimeta.FindStatusCondition(conditions, v1alpha1.ReadyCondition)
	if ready == nil {
		return "Unknown (not reconciled yet)"
	}
	if ready.Status == metav1.ConditionTrue {
		return "True"
	}
	return fmt.Sprintf("%s (%s: %s)", ready.Status, ready.Reason, inline(ready.Message))
}

// memberState is what a membership gives its person now, in the words of its
// conditions: a duplicate grants nothing even if accepted, and an invitation that
// expired is no longer waiting.
func memberState(m *v1alpha1.CustomerMembership) string {
	accepted := apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.AcceptedCondition)
	switch {
	case members.IsDuplicate(m):
		return "duplicate, grants nothing"
	case members.IsActive(m):
		return "active"
	case accepted != nil && accepted.Reason == v1alpha1.InvitationExpiredReason:
		return "invitation expired"
	}
	return "invited"
}
