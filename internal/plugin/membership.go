package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/validation"
)

func newAddMyselfCommand(o *Options) *cobra.Command {
	var role, email string
	cmd := &cobra.Command{
		Use:   "add-myself CUSTOMER [--role ROLE]",
		Short: "Make yourself a member of a customer, without an invitation (partners)",
		Long: longDesc(`
			Make yourself a member of a customer at once, without an invitation e-mail: a
			CustomerMembership with invitation None and your own username, as the cluster
			reports it. Only partners may do this.

			The membership needs an e-mail address: your username if it is one, else
			--email.`),
		Example: examples(`
			# Become an Admin of acme
			kubectl customer add-myself acme

			# Become a Viewer of acme, with an explicit e-mail address
			kubectl customer add-myself acme --role Viewer --email ops@partner.example`),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runAddMyself(cmd.Context(), args[0], v1alpha1.Role(role), email)
		},
	}
	cmd.Flags().StringVar(&role, "role", string(v1alpha1.RoleAdmin), "Your role in the customer: Admin, Editor or Viewer.")
	cmd.Flags().StringVar(&email, "email", "", "Your e-mail address, if your username is not one.")
	return cmd
}

func newInviteCommand(o *Options) *cobra.Command {
	var role string
	cmd := &cobra.Command{
		Use:   "invite CUSTOMER EMAIL --role ROLE",
		Short: "Invite someone to a customer by e-mail",
		Long: longDesc(`
			Invite someone to a customer: create a CustomerMembership for their e-mail
			address with the given role. The operator sends them an invitation e-mail
			with a link; their access begins when they accept it.

			Partners may invite to any customer; a customer's Admins to their own.`),
		Example: examples(`
			# Invite bob@example.com to acme as an Editor
			kubectl customer invite acme bob@example.com --role Editor`),
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runInvite(cmd.Context(), args[0], args[1], v1alpha1.Role(role))
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "Their role in the customer: Admin, Editor or Viewer (required).")
	_ = cmd.MarkFlagRequired("role")
	return cmd
}

func (o *Options) runAddMyself(ctx context.Context, customer string, role v1alpha1.Role, email string) error {
	if err := checkRole(role); err != nil {
		return err
	}
	c, me, err := o.clientAndUser(ctx)
	if err != nil {
		return err
	}
	if email == "" {
		if len(validation.ValidateEmail(me.Username, emailPath)) > 0 {
			return fmt.Errorf("your username %q is not an e-mail address: pass --email", me.Username)
		}
		email = me.Username
	}
	if errs := validation.ValidateEmail(email, emailPath); len(errs) > 0 {
		return fmt.Errorf("--email %q: %s", email, errs[0].Detail)
	}
	m := newMembership(customer, email, role)
	m.Spec.Username = me.Username
	m.Spec.Invitation = v1alpha1.InvitationNone
	if err := createMembership(ctx, c, m); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("cannot add you to customer %q: %s has CustomerMembership %q already (one per address and customer)",
				customer, email, m.Name)
		}
		return explain(err, quoteUser(me.Username), fmt.Sprintf("add you to customer %q", customer),
			"only partners may add themselves; others are invited (kubectl customer invite)")
	}
	fmt.Fprintf(o.Out, "You (%s) are now a member of customer %q as %s (CustomerMembership %q).\n",
		me.Username, customer, role, m.Name)
	return nil
}

func (o *Options) runInvite(ctx context.Context, customer, email string, role v1alpha1.Role) error {
	if err := checkRole(role); err != nil {
		return err
	}
	if errs := validation.ValidateEmail(email, emailPath); len(errs) > 0 {
		return fmt.Errorf("EMAIL %q: %s", email, errs[0].Detail)
	}
	c, me, err := o.clientAndUser(ctx)
	if err != nil {
		return err
	}
	m := newMembership(customer, email, role)
	if err := createMembership(ctx, c, m); err != nil {
		what := fmt.Sprintf("invite %q to customer %q", email, customer)
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("cannot %s: the address has CustomerMembership %q already (one per address and customer); "+
				"`kubectl get customermembership %s` shows whether it was accepted, and a new value of its annotation %s sends the invitation again",
				what, m.Name, m.Name, v1alpha1.ResendInvitationAnnotation)
		}
		return explain(err, quoteUser(me.Username), what, "partners and the customer's Admins may invite")
	}
	fmt.Fprintf(o.Out, "Invited %s to customer %q as %s (CustomerMembership %q); the invitation e-mail is on its way.\n",
		strings.ToLower(email), customer, role, m.Name)
	return nil
}

var emailPath = field.NewPath("email")

func checkRole(role v1alpha1.Role) error {
	for _, r := range v1alpha1.Roles {
		if r == role {
			return nil
		}
	}
	return fmt.Errorf("--role %q: must be one of Admin, Editor or Viewer", role)
}

// newMembership is a membership named after its customer and e-mail, so that the
// name says whose it is and a second invite of the same person collides.
func newMembership(customer, email string, role v1alpha1.Role) *v1alpha1.CustomerMembership {
	email = validation.LowerASCII(email)
	return &v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: membershipName(customer, email)},
		Spec: v1alpha1.CustomerMembershipSpec{
			Customer: v1alpha1.CustomerName(customer),
			Email:    email,
			Role:     role,
		},
	}
}

// membershipName is "<customer>-<local>-at-<domain>" when that is a valid object
// name, else hashedMembershipName.
func membershipName(customer, email string) string {
	local, domain, _ := strings.Cut(email, "@")
	name := customer + "-" + local + "-at-" + domain
	if len(utilvalidation.IsDNS1123Subdomain(name)) == 0 {
		return name
	}
	return hashedMembershipName(customer, email)
}

// hashedMembershipName is "<customer>-" and a hash of the e-mail. The hash is hex,
// so it cannot be read as part of a longer customer name.
func hashedMembershipName(customer, email string) string {
	sum := sha256.Sum256([]byte(email))
	return customer + "-" + hex.EncodeToString(sum[:])[:16]
}

// createMembership creates m under its readable name or, when that name is taken by
// the membership of another customer or address, under the hashed one: readable
// names are not unique ("acme" with eu-bob@x.io and "acme-eu" with bob@x.io both
// spell acme-eu-bob-at-x.io). An AlreadyExists error is returned as it is when the
// name holds this very customer and address (admission refuses that as a duplicate
// first, unless it has not seen the membership yet).
func createMembership(ctx context.Context, c client.Client, m *v1alpha1.CustomerMembership) error {
	err := c.Create(ctx, m, client.FieldOwner(fieldManager))
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	existing := &v1alpha1.CustomerMembership{}
	if getErr := c.Get(ctx, client.ObjectKeyFromObject(m), existing); getErr == nil &&
		existing.Spec.Customer == m.Spec.Customer && strings.EqualFold(existing.Spec.Email, m.Spec.Email) {
		return err
	}
	m.Name = hashedMembershipName(string(m.Spec.Customer), m.Spec.Email)
	return c.Create(ctx, m, client.FieldOwner(fieldManager))
}
