package validation

import (
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// Fuzz targets of the pure validation rules (issue 8, item 7). Beyond "no panic",
// each checks the promise the webhook makes with these functions: every refusal
// names a field under spec or metadata with a readable reason, and whatever is
// accepted really satisfies the rule (so that a look-alike or an over-long value
// cannot slip through). Seed corpora live in testdata/fuzz/<target>/; `make fuzz`
// runs each target briefly.

// checkErrors fails t unless every error names a spec/metadata field and says why.
func checkErrors(t *testing.T, errs field.ErrorList) {
	t.Helper()
	for _, e := range errs {
		if e.Field == "" || !(strings.HasPrefix(e.Field, "spec.") || strings.HasPrefix(e.Field, "metadata.")) {
			t.Fatalf("error %q names no spec or metadata field", e.Error())
		}
		if !strings.Contains(e.Error(), e.Field) {
			t.Fatalf("error %q does not name its field %s", e.Error(), e.Field)
		}
		if e.Type != field.ErrorTypeRequired && e.Type != field.ErrorTypeNotSupported && e.Type != field.ErrorTypeTooLong &&
			e.Type != field.ErrorTypeDuplicate && e.Detail == "" {
			t.Fatalf("error %q gives no reason", e.Error())
		}
	}
}

// isIdentifier is the rule a customer reference must satisfy.
func isIdentifier(s string) bool {
	return s != "" && len(validation.IsDNS1123Label(s)) == 0
}

func FuzzValidateCustomer(f *testing.F) {
	f.Add("acme", "acme", "Acme Inc.")
	f.Add("acme", "acme-old", "Acme")
	f.Add("аcme", "аcme", "Cyrillic a") // U+0430, a look-alike of "a"
	f.Add("ACME", "ACME", "upper")
	f.Add("acme", "acme", "   ")
	f.Add("acme", "acme", strings.Repeat("é", MaxDisplayName+1))
	f.Add(strings.Repeat("a", 64), strings.Repeat("a", 64), "long")
	f.Fuzz(func(t *testing.T, name, identifier, displayName string) {
		c := &v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.CustomerSpec{Identifier: identifier, DisplayName: displayName}}
		errs := ValidateCustomer(c)
		checkErrors(t, errs)
		if len(errs) == 0 {
			if identifier != name || !isIdentifier(identifier) {
				t.Fatalf("accepted identifier %q for name %q", identifier, name)
			}
			if strings.TrimSpace(displayName) == "" || utf8.RuneCountInString(displayName) > MaxDisplayName {
				t.Fatalf("accepted displayName %q", displayName)
			}
		}
		old := c.DeepCopy()
		old.Spec.Identifier = identifier + "x"
		if len(ValidateCustomerUpdate(old, c)) == 0 {
			t.Fatalf("accepted a changed identifier %q -> %q", old.Spec.Identifier, identifier)
		}
	})
}

func FuzzValidateMembership(f *testing.F) {
	f.Add("acme", "dana@example.com", "", "Admin", "")
	f.Add("acme", "Dana@Example.COM", "dana", "Viewer", "None")
	f.Add("acme", "dana@exаmple.com", "", "Editor", "Email") // Cyrillic a in the domain
	f.Add("acme", "dana@localhost", "", "Admin", "")
	f.Add("acme", "a@b@c.com", "", "Admin", "")
	f.Add("acme", "\"dana\"@example.com", "", "Admin", "")
	f.Add("acme", "dana@example.com", "system:admin", "Admin", "")
	f.Add("acme", "dana@example.com", "", "Owner", "Sms")
	f.Add("", strings.Repeat("x", 250)+"@example.com", "", "", "")
	f.Fuzz(func(t *testing.T, customer, email, username, role, invitation string) {
		m := &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: "m"},
			Spec: v1alpha1.CustomerMembershipSpec{Customer: v1alpha1.CustomerName(customer), Email: email,
				Username: username, Role: v1alpha1.Role(role), Invitation: v1alpha1.InvitationMode(invitation)}}
		errs := ValidateMembership(m)
		checkErrors(t, errs)
		if len(errs) == 0 {
			if !isIdentifier(customer) {
				t.Fatalf("accepted customer %q", customer)
			}
			if role != "Admin" && role != "Editor" && role != "Viewer" {
				t.Fatalf("accepted role %q", role)
			}
			if invitation != "" && invitation != "Email" && invitation != "None" {
				t.Fatalf("accepted invitation %q", invitation)
			}
			checkAcceptedEmail(t, email)
		}
		// The same object is always a valid update of itself; a change of any
		// immutable field never is.
		if got := ValidateMembershipUpdate(m.DeepCopy(), m); len(got) != len(errs) {
			t.Fatalf("an unchanged update has %v, a create %v", got, errs)
		}
		moved := m.DeepCopy()
		moved.Spec.Customer += "x"
		if len(ValidateMembershipUpdate(m, moved)) == 0 {
			t.Fatalf("accepted a changed spec.customer")
		}
	})
}

// checkAcceptedEmail fails t unless an accepted address has one '@', a local part
// without spaces or quotes, and a dotted ASCII domain of DNS labels (so no
// unicode look-alike domain is ever accepted).
func checkAcceptedEmail(t *testing.T, email string) {
	t.Helper()
	local, domain, ok := strings.Cut(email, "@")
	if !ok || local == "" || strings.Contains(domain, "@") || len(email) > 254 {
		t.Fatalf("accepted e-mail %q", email)
	}
	if !strings.Contains(domain, ".") {
		t.Fatalf("accepted e-mail %q without a dotted domain", email)
	}
	for _, r := range domain {
		if r > 127 {
			t.Fatalf("accepted e-mail %q with a non-ASCII domain", email)
		}
	}
}

func FuzzValidateEmail(f *testing.F) {
	for _, seed := range []string{"dana@example.com", "", "@", "a@b", "a@b.c", "a b@example.com", "a@ex_ample.com",
		"a@-example.com", "a@example..com", "dana@еxample.com", "dana@example.com\n", strings.Repeat("a", 255)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, email string) {
		errs := ValidateEmail(email, field.NewPath("spec", "email"))
		checkErrors(t, errs)
		if len(errs) == 0 {
			checkAcceptedEmail(t, email)
		}
	})
}

func FuzzValidateMessage(f *testing.F) {
	f.Add("acme", "Maintenance", "Tonight.", "AllMustRead")
	f.Add("acme", "", "", "SingleRead")
	f.Add("acme", strings.Repeat("t", MaxTitle+1), "", "")
	f.Add("аcme", "look-alike customer", "", "Sometimes")
	f.Fuzz(func(t *testing.T, customer, title, body, policy string) {
		m := &v1alpha1.CustomerMessage{ObjectMeta: metav1.ObjectMeta{Name: "msg"},
			Spec: v1alpha1.CustomerMessageSpec{Customer: v1alpha1.CustomerName(customer), Title: title, Body: body,
				ReadPolicy: v1alpha1.ReadPolicy(policy)}}
		errs := ValidateMessage(m)
		checkErrors(t, errs)
		if len(errs) == 0 {
			if !isIdentifier(customer) {
				t.Fatalf("accepted customer %q", customer)
			}
			if strings.TrimSpace(title) == "" || utf8.RuneCountInString(title) > MaxTitle {
				t.Fatalf("accepted title %q", title)
			}
			if len(body) > MaxBodyBytes {
				t.Fatalf("accepted a body of %d bytes", len(body))
			}
		}
		_ = ValidateMessageUpdate(m.DeepCopy(), m)
	})
}

func FuzzValidateAcknowledgement(f *testing.F) {
	f.Add("msg", "dana@example.com")
	f.Add("", "")
	f.Add("MSG", "system:admin")
	f.Fuzz(func(t *testing.T, message, user string) {
		a := &v1alpha1.MessageAcknowledgement{ObjectMeta: metav1.ObjectMeta{Name: "ack"},
			Spec: v1alpha1.MessageAcknowledgementSpec{Message: message, User: user}}
		checkErrors(t, ValidateAcknowledgement(a))
		checkErrors(t, ValidateAcknowledgementUpdate(a.DeepCopy(), a))
	})
}
