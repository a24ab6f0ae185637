package plugin

import (
	"context"
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"
	authorizationv1 "k8s.io/api/authorization/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

func newListCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the customers you belong to",
		Long: longDesc(`
			List the customers you may read: those you are an active member of (partners,
			who may list customers, see them all), with their projects used of the quota,
			their active members and whether the operator has done its part (Ready).
			Then "kubectl customer status CUSTOMER" shows one in full.`),
		Example: examples(`
			# Which customers am I a member of?
			kubectl customer list`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.runList(cmd.Context())
		},
	}
}

func (o *Options) runList(ctx context.Context) error {
	c, me, err := o.clientAndUser(ctx)
	if err != nil {
		return err
	}
	customers, err := readable(ctx, c, v1alpha1.GroupName, "customers", "Customer",
		func() ([]v1alpha1.Customer, error) {
			var list v1alpha1.CustomerList
			err := c.List(ctx, &list)
			return list.Items, err
		})
	if err != nil {
		return explain(err, quoteUser(me.Username), "read your customers", "ask your partner to add you to a customer")
	}
	sort.Slice(customers, func(i, j int) bool { return customers[i].Name < customers[j].Name })
	if len(customers) == 0 {
		if mayListCustomers(ctx, c) {
			_, err := fmt.Fprintln(o.Out, "There are no customers yet.")
			return err
		}
		_, err := fmt.Fprintf(o.Out, "%s is a member of no customer.\n", me.Username)
		return err
	}
	w := tabwriter.NewWriter(o.Out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tDISPLAY NAME\tPROJECTS\tMEMBERS\tREADY\tAGE")
	for _, cu := range customers {
		ready := "Unknown"
		if r := apimeta.FindStatusCondition(cu.Status.Conditions, v1alpha1.ReadyCondition); r != nil {
			ready = string(r.Status)
		}
		if !cu.DeletionTimestamp.IsZero() {
			ready = "Deleting"
		}
		fmt.Fprintf(w, "%s\t%s\t%d/%d\t%d\t%s\t%s\n", cu.Name, oneLine(cu.Spec.DisplayName, 40),
			cu.Status.Projects, cu.Status.MaxProjects, cu.Status.Members, ready, age(cu.CreationTimestamp))
	}
	return w.Flush()
}

// mayListCustomers reports whether the user may list every customer (a partner),
// so that an empty list means there are none, not that the user belongs to none.
func mayListCustomers(ctx context.Context, c client.Client) bool {
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "list", Group: v1alpha1.GroupName, Resource: "customers"},
	}}
	return c.Create(ctx, review) == nil && review.Status.Allowed
}
