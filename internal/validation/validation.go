// Package validation holds the admission rules of the five kinds as pure functions
// returning field errors, in the style of cert-manager's validation package. CEL in
// the CRDs holds most of these rules first (so they hold while the webhook is down);
// these are the webhook's own copy, unit-tested here, plus the rules CEL cannot say.
package validation

import (
	"fmt"
	"strings"

	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

var (
	specPath       = field.NewPath("spec")
	identifierPath = specPath.Child("identifier")
	customerPath   = specPath.Child("customer")
)

// Limits shared with the CRD schema.
const (
	MaxDisplayName = 256
	MaxTitle       = 200
	MaxBodyBytes   = 16 * 1024
)

// ValidateCustomerName checks a reference to a customer: a DNS-1123 label.
func ValidateCustomerName(name string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if name == "" {
		return append(errs, field.Required(path, "must be the identifier of a Customer"))
	}
	for _, msg := range validation.IsDNS1123Label(name) {
		errs = append(errs, field.Invalid(path, name, msg))
	}
	return errs
}

// ValidateCustomer checks a Customer on create and update.
func ValidateCustomer(c *v1alpha1.Customer) field.ErrorList {
	errs := ValidateCustomerName(c.Spec.Identifier, identifierPath)
	if c.Spec.Identifier != c.Name {
		errs = append(errs, field.Invalid(identifierPath, c.Spec.Identifier,
			fmt.Sprintf("must equal metadata.name %q", c.Name)))
	}
	errs = append(errs, validateText(c.Spec.DisplayName, specPath.Child("displayName"), MaxDisplayName)...)
	return errs
}

// ValidateCustomerUpdate checks that a Customer's identifier does not change.
func ValidateCustomerUpdate(old, c *v1alpha1.Customer) field.ErrorList {
	errs := ValidateCustomer(c)
	errs = append(errs, apivalidation.ValidateImmutableField(c.Spec.Identifier, old.Spec.Identifier, identifierPath)...)
	return errs
}

// ValidateQuota checks a CustomerQuota on create and update.
func ValidateQuota(q *v1alpha1.CustomerQuota) field.ErrorList {
	errs := ValidateCustomerName(string(q.Spec.Customer), customerPath)
	if string(q.Spec.Customer) != q.Name {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), q.Name,
			fmt.Sprintf("must equal spec.customer %q (one quota per customer)", q.Spec.Customer)))
	}
	maxPath := specPath.Child("maxProjects")
	switch {
	case q.Spec.MaxProjects == nil:
		errs = append(errs, field.Required(maxPath, "must be the number of projects the customer may have"))
	case *q.Spec.MaxProjects < 0:
		errs = append(errs, field.Invalid(maxPath, *q.Spec.MaxProjects, "must be greater than or equal to 0"))
	}
	return errs
}

// ValidateQuotaUpdate checks that a CustomerQuota's customer does not change.
func ValidateQuotaUpdate(old, q *v1alpha1.CustomerQuota) field.ErrorList {
	errs := ValidateQuota(q)
	errs = append(errs, apivalidation.ValidateImmutableField(q.Spec.Customer, old.Spec.Customer, customerPath)...)
	return errs
}

// ValidateMembership checks a CustomerMembership on create and update.
func ValidateMembership(m *v1alpha1.CustomerMembership) field.ErrorList {
	errs := ValidateCustomerName(string(m.Spec.Customer), customerPath)
	errs = append(errs, ValidateEmail(m.Spec.Email, specPath.Child("email"))...)
	errs = append(errs, validateRole(m.Spec.Role, specPath.Child("role"))...)
	switch m.Spec.Invitation {
	case "", v1alpha1.InvitationEmail, v1alpha1.InvitationNone:
	default:
		errs = append(errs, field.NotSupported(specPath.Child("invitation"), m.Spec.Invitation,
			[]string{string(v1alpha1.InvitationEmail), string(v1alpha1.InvitationNone)}))
	}
	return errs
}

// ValidateMembershipUpdate checks that a membership's customer, email, username and
// invitation mode do not change (only the role may).
func ValidateMembershipUpdate(old, m *v1alpha1.CustomerMembership) field.ErrorList {
	errs := ValidateMembership(m)
	errs = append(errs, apivalidation.ValidateImmutableField(m.Spec.Customer, old.Spec.Customer, customerPath)...)
	errs = append(errs, apivalidation.ValidateImmutableField(
		LowerASCII(m.Spec.Email), LowerASCII(old.Spec.Email), specPath.Child("email"))...)
	errs = append(errs, apivalidation.ValidateImmutableField(m.Spec.Username, old.Spec.Username, specPath.Child("username"))...)
	errs = append(errs, apivalidation.ValidateImmutableField(
		invitationOrDefault(m.Spec.Invitation), invitationOrDefault(old.Spec.Invitation), specPath.Child("invitation"))...)
	return errs
}

func invitationOrDefault(mode v1alpha1.InvitationMode) v1alpha1.InvitationMode {
	if mode == "" {
		return v1alpha1.InvitationEmail
	}
	return mode
}

// ValidateMessage checks a CustomerMessage on create and update.
func ValidateMessage(m *v1alpha1.CustomerMessage) field.ErrorList {
	errs := ValidateCustomerName(string(m.Spec.Customer), customerPath)
	errs = append(errs, validateText(m.Spec.Title, specPath.Child("title"), MaxTitle)...)
	bodyPath := specPath.Child("body")
	switch {
	case m.Spec.Body == "":
		errs = append(errs, field.Required(bodyPath, "must not be empty"))
	case len(m.Spec.Body) > MaxBodyBytes:
		errs = append(errs, field.TooLong(bodyPath, "", MaxBodyBytes))
	}
	seen := map[v1alpha1.Role]bool{}
	for i, r := range m.Spec.Roles {
		p := specPath.Child("roles").Index(i)
		errs = append(errs, validateRole(r, p)...)
		if seen[r] {
			errs = append(errs, field.Duplicate(p, r))
		}
		seen[r] = true
	}
	switch m.Spec.ReadPolicy {
	case "", v1alpha1.AllMustRead, v1alpha1.SingleRead:
	default:
		errs = append(errs, field.NotSupported(specPath.Child("readPolicy"), m.Spec.ReadPolicy,
			[]string{string(v1alpha1.AllMustRead), string(v1alpha1.SingleRead)}))
	}
	switch m.Spec.Notify {
	case "", v1alpha1.NotifyNone, v1alpha1.NotifyEmail:
	default:
		errs = append(errs, field.NotSupported(specPath.Child("notify"), m.Spec.Notify,
			[]string{string(v1alpha1.NotifyNone), string(v1alpha1.NotifyEmail)}))
	}
	return errs
}

// ValidateMessageUpdate checks that a message's customer and read policy do not change.
func ValidateMessageUpdate(old, m *v1alpha1.CustomerMessage) field.ErrorList {
	errs := ValidateMessage(m)
	errs = append(errs, apivalidation.ValidateImmutableField(m.Spec.Customer, old.Spec.Customer, customerPath)...)
	errs = append(errs, apivalidation.ValidateImmutableField(
		readPolicyOrDefault(m.Spec.ReadPolicy), readPolicyOrDefault(old.Spec.ReadPolicy), specPath.Child("readPolicy"))...)
	return errs
}

func readPolicyOrDefault(p v1alpha1.ReadPolicy) v1alpha1.ReadPolicy {
	if p == "" {
		return v1alpha1.AllMustRead
	}
	return p
}

// ValidateAcknowledgement checks a MessageAcknowledgement on create and update.
func ValidateAcknowledgement(a *v1alpha1.MessageAcknowledgement) field.ErrorList {
	var errs field.ErrorList
	msgPath := specPath.Child("message")
	if a.Spec.Message == "" {
		errs = append(errs, field.Required(msgPath, "must name a CustomerMessage"))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(a.Spec.Message) {
			errs = append(errs, field.Invalid(msgPath, a.Spec.Message, msg))
		}
	}
	if a.Spec.User == "" {
		errs = append(errs, field.Required(specPath.Child("user"), "must be your username"))
	}
	return errs
}

// ValidateAcknowledgementUpdate checks that an acknowledgement's message and user do not change.
func ValidateAcknowledgementUpdate(old, a *v1alpha1.MessageAcknowledgement) field.ErrorList {
	errs := ValidateAcknowledgement(a)
	errs = append(errs, apivalidation.ValidateImmutableField(a.Spec.Message, old.Spec.Message, specPath.Child("message"))...)
	errs = append(errs, apivalidation.ValidateImmutableField(a.Spec.User, old.Spec.User, specPath.Child("user"))...)
	return errs
}

// ValidateEmail checks an e-mail address: one '@', a non-empty local part, a
// dotted domain of DNS labels, at most 254 characters.
func ValidateEmail(email string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if email == "" {
		return append(errs, field.Required(path, "must be an e-mail address"))
	}
	if len(email) > 254 {
		return append(errs, field.TooLong(path, "", 254))
	}
	local, domain, ok := strings.Cut(email, "@")
	switch {
	case !ok || local == "" || strings.Contains(domain, "@"):
		errs = append(errs, field.Invalid(path, email, "must be an e-mail address of the form name@example.com"))
	case strings.ContainsAny(local, " \t\r\n\"(),:;<>[\\]`"):
		errs = append(errs, field.Invalid(path, email, "must not contain spaces, quotes or brackets"))
	case !strings.Contains(domain, "."):
		errs = append(errs, field.Invalid(path, email, "must have a dotted domain, such as example.com"))
	default:
		// LowerASCII, not strings.ToLower: that maps U+0130 (İ) and the Kelvin sign
		// to ASCII letters, and a look-alike domain would pass as a real one.
		for _, label := range strings.Split(LowerASCII(domain), ".") {
			if len(validation.IsDNS1123Label(label)) > 0 {
				errs = append(errs, field.Invalid(path, email, "must have a domain of DNS labels (letters, digits and '-')"))
				break
			}
		}
	}
	return errs
}

// LowerASCII lower-cases the ASCII letters of s and leaves every other rune as
// it is. E-mail addresses are stored and compared this way: strings.ToLower would
// turn some non-ASCII letters (İ, the Kelvin sign K) into ASCII ones and so
// silently change an address into another, valid one instead of refusing it.
func LowerASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, s)
}

func validateRole(r v1alpha1.Role, path *field.Path) field.ErrorList {
	for _, known := range v1alpha1.Roles {
		if r == known {
			return nil
		}
	}
	return field.ErrorList{field.NotSupported(path, r, []string{"Admin", "Editor", "Viewer"})}
}

func validateText(s string, path *field.Path, maxLen int) field.ErrorList {
	switch {
	case strings.TrimSpace(s) == "":
		return field.ErrorList{field.Required(path, "must not be empty")}
	case len([]rune(s)) > maxLen:
		return field.ErrorList{field.TooLongCharacters(path, s, maxLen)}
	}
	return nil
}
