package webhooks

import (
	"context"
	"fmt"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
	"github.com/partnerops/customer-operator/internal/access"
	"github.com/partnerops/customer-operator/internal/authz"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/validation"
)

// +kubebuilder:webhook:path=/validate-customers-partnerops-io-v1alpha1-customermembership,mutating=false,failurePolicy=fail,sideEffects=None,groups=customers.partnerops.io,resources=customermemberships,verbs=create;update;delete,versions=v1alpha1,name=vcustomermembership.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5

// CustomerMembershipValidator decides who may write which memberships. Partners may
// write any (within the field rules); an active Admin member of a customer may
// create, update and delete that customer's memberships only, checked against the
// old and the new object, because RBAC gives Admins these verbs cluster-wide (RBAC
// cannot narrow create or filter by a field). Non-partners may not use invitation
// None nor choose a username. One membership per (customer, e-mail): a visible
// duplicate is refused here; one that races past gets Ready=False/Duplicate from
// the controller.
type CustomerMembershipValidator struct {
	// Reader reads memberships and customers from the manager's cache.
	Reader client.Reader
	// Partners decides who is a partner.
	Partners authz.PartnerChecker
	// UsernamePrefix is --username-prefix: a member's default username is it
	// followed by their e-mail.
	UsernamePrefix string
	// MaxPerCustomer caps how many memberships a customer may have for its Admins
	// to create another (0: no cap). Each membership is an invitation e-mail to an
	// address the Admin chooses and a name in the customer's RBAC objects.
	MaxPerCustomer int
}

var _ admission.Validator[*v1alpha1.CustomerMembership] = &CustomerMembershipValidator{}

var (
	membershipEmailPath      = field.NewPath("spec", "email")
	membershipUsernamePath   = field.NewPath("spec", "username")
	membershipInvitationPath = field.NewPath("spec", "invitation")
)

// ValidateCreate implements admission.Validator.
func (v *CustomerMembershipValidator) ValidateCreate(ctx context.Context, m *v1alpha1.CustomerMembership) (admission.Warnings, error) {
	if err := invalid("CustomerMembership", m.Name, validation.ValidateMembership(m)); err != nil {
		return nil, err
	}
	user, partner, err := v.requester(ctx)
	if err != nil {
		return nil, err
	}
	if !partner {
		if err := v.requireCustomerAdmin(ctx, user, m, "create"); err != nil {
			return nil, err
		}
		if err := invalid("CustomerMembership", m.Name, v.nonPartnerRules(m)); err != nil {
			return nil, err
		}
		if err := v.refuseOverCap(ctx, m); err != nil {
			return nil, err
		}
	}
	return nil, v.refuseDuplicate(ctx, m)
}

// refuseOverCap refuses an Admin's membership when the customer has
// MaxPerCustomer already (being deleted or not, pending or active), as the cache
// shows them. Creates racing past the check may each end one over (as many as
// are in flight at once): a bound on abuse, not a quota.
func (v *CustomerMembershipValidator) refuseOverCap(ctx context.Context, m *v1alpha1.CustomerMembership) error {
	if v.MaxPerCustomer <= 0 {
		return nil
	}
	var list v1alpha1.CustomerMembershipList
	if err := v.Reader.List(ctx, &list, client.MatchingFields{controllers.MembershipCustomerIndex: string(m.Spec.Customer)},
		client.UnsafeDisableDeepCopy); err != nil {
		return apierrors.NewInternalError(fmt.Errorf("listing the memberships of customer %q: %w", m.Spec.Customer, err))
	}
	if len(list.Items) < v.MaxPerCustomer {
		return nil
	}
	return forbidden("customermemberships", m.Name,
		"customer %q has %d memberships, the most its Admins may create (--max-memberships-per-customer); delete one, or ask your partner",
		m.Spec.Customer, len(list.Items))
}

// ValidateUpdate implements admission.Validator. The customer is immutable (CEL
// holds that too), but both objects are checked, so that an Admin can neither
// take over another customer's membership nor move one to their customer.
// An update that only finishes a deletion passes (finishingDeletion).
func (v *CustomerMembershipValidator) ValidateUpdate(ctx context.Context, old, m *v1alpha1.CustomerMembership) (admission.Warnings, error) {
	if finishingDeletion(old, m, old.Spec, m.Spec) {
		return nil, nil
	}
	if err := invalid("CustomerMembership", m.Name, validation.ValidateMembershipUpdate(old, m)); err != nil {
		return nil, err
	}
	user, partner, err := v.requester(ctx)
	if err != nil || partner {
		return nil, err
	}
	if err := v.requireCustomerAdmin(ctx, user, old, "update"); err != nil {
		return nil, err
	}
	return nil, v.requireCustomerAdmin(ctx, user, m, "update")
}

// ValidateDelete implements admission.Validator.
func (v *CustomerMembershipValidator) ValidateDelete(ctx context.Context, old *v1alpha1.CustomerMembership) (admission.Warnings, error) {
	user, partner, err := v.requester(ctx)
	if err != nil || partner {
		return nil, err
	}
	return nil, v.requireCustomerAdmin(ctx, user, old, "delete")
}

// requester returns who sent the request and whether they are a partner.
func (v *CustomerMembershipValidator) requester(ctx context.Context) (authenticationv1.UserInfo, bool, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return authenticationv1.UserInfo{}, false, apierrors.NewInternalError(err)
	}
	partner, err := v.Partners.IsPartner(ctx, req.UserInfo)
	if err != nil {
		return req.UserInfo, false, apierrors.NewInternalError(err)
	}
	return req.UserInfo, partner, nil
}

// requireCustomerAdmin admits user only if they are an active Admin member of m's
// customer, which must exist and not be being deleted: the same rule by which the
// access controller grants Admins their rights.
func (v *CustomerMembershipValidator) requireCustomerAdmin(ctx context.Context, user authenticationv1.UserInfo, m *v1alpha1.CustomerMembership, verb string) error {
	customer := string(m.Spec.Customer)
	deny := func() error {
		return forbidden("customermemberships", m.Name,
			"%q is not an Admin of customer %q (spec.customer): only partners and the customer's own active Admin members may %s its memberships",
			user.Username, customer, verb)
	}
	var c v1alpha1.Customer
	if err := v.Reader.Get(ctx, types.NamespacedName{Name: customer}, &c); err != nil {
		if apierrors.IsNotFound(err) {
			return deny()
		}
		return apierrors.NewInternalError(fmt.Errorf("reading customer %q: %w", customer, err))
	}
	if !c.DeletionTimestamp.IsZero() {
		return deny()
	}
	var list v1alpha1.CustomerMembershipList
	if err := v.Reader.List(ctx, &list, client.MatchingFields{controllers.MembershipCustomerIndex: customer}, client.UnsafeDisableDeepCopy); err != nil {
		return apierrors.NewInternalError(fmt.Errorf("listing the memberships of customer %q: %w", customer, err))
	}
	for _, member := range access.ActiveMembers(list.Items, v.UsernamePrefix) {
		if member.Username == user.Username && member.Role == v1alpha1.RoleAdmin {
			return nil
		}
	}
	return deny()
}

// nonPartnerRules are the field rules for memberships created by a customer's
// Admin: no invitation None (that would skip acceptance), and no username other
// than the default (that would grant access to someone the e-mail does not reach),
// least of all a "system:" one. Partners may give any username (DESIGN.md): a
// ServiceAccount's, for a deployer; what it is granted is a project's admin, which
// a partner can grant themselves.
func (v *CustomerMembershipValidator) nonPartnerRules(m *v1alpha1.CustomerMembership) field.ErrorList {
	var errs field.ErrorList
	if members.InvitationMode(m) == v1alpha1.InvitationNone {
		errs = append(errs, field.Forbidden(membershipInvitationPath,
			"only partners may create memberships with invitation None; use Email (the default) to invite"))
	}
	if strings.HasPrefix(m.Spec.Username, "system:") {
		errs = append(errs, field.Forbidden(membershipUsernamePath,
			`must not start with "system:": only partners may give a membership a system username; leave spec.username unset`))
	} else if def := v.UsernamePrefix + validation.LowerASCII(m.Spec.Email); m.Spec.Username != "" && m.Spec.Username != def {
		errs = append(errs, field.Forbidden(membershipUsernamePath,
			fmt.Sprintf("only partners may set a username other than the default %q; leave spec.username unset", def)))
	}
	return errs
}

// refuseDuplicate refuses a second membership for the same customer and e-mail
// that the cache already shows.
func (v *CustomerMembershipValidator) refuseDuplicate(ctx context.Context, m *v1alpha1.CustomerMembership) error {
	var list v1alpha1.CustomerMembershipList
	if err := v.Reader.List(ctx, &list, client.MatchingFields{controllers.MembershipCustomerIndex: string(m.Spec.Customer)}, client.UnsafeDisableDeepCopy); err != nil {
		return apierrors.NewInternalError(fmt.Errorf("listing the memberships of customer %q: %w", m.Spec.Customer, err))
	}
	for i := range list.Items {
		other := &list.Items[i]
		if other.Name != m.Name && other.DeletionTimestamp.IsZero() && access.EmailKey(other) == access.EmailKey(m) {
			return invalid("CustomerMembership", m.Name, field.ErrorList{field.Invalid(membershipEmailPath, m.Spec.Email,
				fmt.Sprintf("customer %q already has a membership for this e-mail (CustomerMembership %q): one membership per customer and e-mail; "+
					"change its spec.role instead, or give its annotation %s a new value to send its invitation again",
					m.Spec.Customer, other.Name, v1alpha1.ResendInvitationAnnotation))})
		}
	}
	return nil
}

// +kubebuilder:webhook:path=/mutate-customers-partnerops-io-v1alpha1-customermembership,mutating=true,failurePolicy=fail,sideEffects=None,groups=customers.partnerops.io,resources=customermemberships,verbs=create;update,versions=v1alpha1,name=mcustomermembership.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5,reinvocationPolicy=Never

// CustomerMembershipDefaulter stores spec.email lower-case (DESIGN: e-mail
// addresses are compared case-insensitively and stored lower-case). It runs on
// UPDATE too, so re-applying a manifest that spells the address in mixed case is
// not refused as a change of the immutable field. Keep addresses lower-case in Git,
// or Argo CD shows the difference as drift.
type CustomerMembershipDefaulter struct{}

var _ admission.Defaulter[*v1alpha1.CustomerMembership] = CustomerMembershipDefaulter{}

// Default implements admission.Defaulter.
func (CustomerMembershipDefaulter) Default(_ context.Context, m *v1alpha1.CustomerMembership) error {
	// ASCII only, as the matchCondition's lowerAscii(): a non-ASCII letter stays,
	// and the schema's pattern refuses it, naming the field.
	m.Spec.Email = validation.LowerASCII(m.Spec.Email)
	return nil
}
