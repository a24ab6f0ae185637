// Package plugin is the kubectl plugin kubectl-customer: what a customer's user (or a
// partner) does day to day, with their own kubeconfig and credentials only. It never
// needs list rights: who you are comes from a SelfSubjectReview, and which
// customers, messages, projects and memberships you may read from a
// SelfSubjectRulesReview, which returns the names RBAC lets you get.
package plugin

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// scheme knows the built-in kinds and the operator's.
var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
}

// fieldManager names the plugin's writes in managedFields.
const fieldManager = "kubectl-customer"

// Options are what every command shares: the kubeconfig flags and the streams.
type Options struct {
	ConfigFlags *genericclioptions.ConfigFlags
	genericiooptions.IOStreams

	client client.Client
}

// NewCommand returns the root command, `kubectl customer`.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{
		ConfigFlags: genericclioptions.NewConfigFlags(true),
		IOStreams:   streams,
	}
	cmd := &cobra.Command{
		Use:   "kubectl-customer",
		Short: "Work with the customer accounts of customer-operator",
		Long: longDesc(`
			Work with the customer accounts that customer-operator manages: read and
			acknowledge the notices your partner sends, see a customer's projects, members
			and open messages, invite colleagues and create projects.

			Every command runs with your own kubeconfig and credentials, and needs no list
			rights: who you are comes from a SelfSubjectReview, and what you may read
			(customers, messages, projects) from a SelfSubjectRulesReview.`),
		Example: examples(`
			# List the customers you belong to
			kubectl customer list

			# List the open messages addressed to you, across your customers
			kubectl customer inbox

			# Acknowledge one
			kubectl customer ack acme-maintenance

			# See a customer's projects, members and open messages
			kubectl customer status acme`),
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl customer"},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)
	o.ConfigFlags.AddFlags(cmd.PersistentFlags())

	cmd.AddCommand(
		newListCommand(o),
		newInboxCommand(o),
		newAckCommand(o),
		newAddMyselfCommand(o),
		newInviteCommand(o),
		newStatusCommand(o),
		newProjectCommand(o),
	)
	return cmd
}

// Client returns a client with the user's credentials.
func (o *Options) Client() (client.Client, error) {
	if o.client != nil {
		return o.client, nil
	}
	cfg, err := o.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	if cfg.QPS == 0 {
		// client-go's default, 5 requests a second after a burst of 10, made a
		// member's inbox of 100 messages (a GET and a dry-run create each) take 36 s
		// (docs/benchmarks.md). The API server's Priority and Fairness is what
		// protects it; kubectl's discovery client allows as much.
		cfg.QPS, cfg.Burst = 50, 300
	}
	// The API server's warnings (deprecations, a policy's Warn) go to stderr as
	// kubectl prints them, not to controller-runtime's logger, which nothing sets
	// here (it would print a stack trace about that after 30 s).
	cfg.WarningHandler = rest.NewWarningWriter(o.ErrOut, rest.WarningWriterOptions{Deduplicate: true})
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	o.client = c
	return c, nil
}

// clientAndUser returns the client and who the credentials belong to: what every
// command starts with.
func (o *Options) clientAndUser(ctx context.Context) (client.Client, authenticationv1.UserInfo, error) {
	c, err := o.Client()
	if err != nil {
		return nil, authenticationv1.UserInfo{}, err
	}
	me, err := o.WhoAmI(ctx)
	if err != nil {
		return nil, authenticationv1.UserInfo{}, err
	}
	return c, me, nil
}

// WhoAmI asks the API server who the credentials belong to.
func (o *Options) WhoAmI(ctx context.Context) (authenticationv1.UserInfo, error) {
	c, err := o.Client()
	if err != nil {
		return authenticationv1.UserInfo{}, err
	}
	review := &authenticationv1.SelfSubjectReview{}
	if err := c.Create(ctx, review); err != nil {
		return authenticationv1.UserInfo{}, fmt.Errorf("asking the cluster who you are (SelfSubjectReview): %w", err)
	}
	if review.Status.UserInfo.Username == "" {
		return authenticationv1.UserInfo{}, fmt.Errorf("the cluster did not say who you are (SelfSubjectReview returned no username)")
	}
	return review.Status.UserInfo, nil
}

// longDesc and examples indent help text the way kubectl's templates do: the
// description flush left, examples by two spaces.
func longDesc(s string) string { return strings.TrimSpace(dedent(s)) }

func examples(s string) string {
	lines := strings.Split(strings.TrimSpace(dedent(s)), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = "  " + l
		}
	}
	return strings.Join(lines, "\n")
}

// dedent removes the indentation common to all non-empty lines.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	common := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, " \t"))
		if common < 0 || n < common {
			common = n
		}
	}
	for i, l := range lines {
		if len(l) >= common && common > 0 {
			lines[i] = l[common:]
		} else {
			lines[i] = strings.TrimLeft(l, " \t")
		}
	}
	return strings.Join(lines, "\n")
}
