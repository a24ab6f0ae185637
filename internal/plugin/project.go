package plugin

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

func newProjectCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "project",
		Short: "Work with a customer's projects",
		Long: longDesc(`
			Work with a customer's projects: namespaces labelled
			customers.partnerops.io/customer=<customer>.`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "create CUSTOMER NAME",
		Short: "Create a project (a labelled namespace) for a customer",
		Long: longDesc(`
			Create a project for a customer: the namespace NAME, labelled as the
			customer's. The cluster admits it for partners and the customer's Admins,
			within the customer's quota; a refusal says which quota and how to raise it.`),
		Example: examples(`
			# Create the project acme-web for acme
			kubectl customer project create acme acme-web`),
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runProjectCreate(cmd.Context(), args[0], args[1])
		},
	})
	return cmd
}

func (o *Options) runProjectCreate(ctx context.Context, customer, name string) error {
	c, me, err := o.clientAndUser(ctx)
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   name,
		Labels: map[string]string{v1alpha1.CustomerLabel: customer},
	}}
	if err := c.Create(ctx, ns, client.FieldOwner(fieldManager)); err != nil {
		return explain(err, quoteUser(me.Username), fmt.Sprintf("create project %q for customer %q", name, customer),
			"partners and the customer's Admins may create projects")
	}
	fmt.Fprintf(o.Out, "Created project %q for customer %q.\n", name, customer)
	return nil
}
