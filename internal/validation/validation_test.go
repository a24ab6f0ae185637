package validation

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

func customer(name, identifier, display string) *v1alpha1.Customer {
	return &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.CustomerSpec{Identifier: identifier, DisplayName: display},
	}
}

// fields lists "type field" of each error, to compare exactly what was refused.
func fields(errs field.ErrorList) []string {
	out := make([]string, 0, len(errs))
	for _, e := range errs {
		out = append(out, string(e.Type)+" "+e.Field)
	}
	return out
}

func TestValidateCustomer(t *testing.T) {
	tests := []struct {
		name string
		c    *v1alpha1.Customer
		want []string
	}{
		{"valid", customer("acme", "acme", "ACME Corp"), []string{}},
		{"identifier differs from name", customer("acme", "other", "ACME"),
			[]string{"FieldValueInvalid spec.identifier"}},
		{"64 characters", customer(strings.Repeat("a", 64), strings.Repeat("a", 64), "A"),
			[]string{"FieldValueInvalid spec.identifier"}},
		{"dotted", customer("acme.corp", "acme.corp", "A"),
			[]string{"FieldValueInvalid spec.identifier"}},
		{"upper case", customer("ACME", "ACME", "A"),
			[]string{"FieldValueInvalid spec.identifier"}},
		{"cyrillic look-alike", customer("аcme", "аcme", "A"),
			[]string{"FieldValueInvalid spec.identifier"}},
		{"empty identifier", customer("", "", "A"),
			[]string{"FieldValueRequired spec.identifier"}},
		{"blank display name", customer("acme", "acme", "  "),
			[]string{"FieldValueRequired spec.displayName"}},
		{"long display name", customer("acme", "acme", strings.Repeat("é", 257)),
			[]string{"FieldValueTooLong spec.displayName"}},
		{"256 runes of display name are fine", customer("acme", "acme", strings.Repeat("é", 256)), []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(fields(ValidateCustomer(tt.c))).To(Equal(tt.want))
		})
	}
}

func TestValidateCustomerUpdate(t *testing.T) {
	g := NewWithT(t)
	old := customer("acme", "acme", "ACME")
	renamed := customer("acme", "acme2", "ACME")
	errs := ValidateCustomerUpdate(old, renamed)
	g.Expect(fields(errs)).To(Equal([]string{"FieldValueInvalid spec.identifier", "FieldValueInvalid spec.identifier"}))
	g.Expect(errs.ToAggregate().Error()).To(ContainSubstring("field is immutable"))
	g.Expect(ValidateCustomerUpdate(old, customer("acme", "acme", "New Name"))).To(BeEmpty())
}

func membership(customer, email string, role v1alpha1.Role) *v1alpha1.CustomerMembership {
	return &v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: "m"},
		Spec: v1alpha1.CustomerMembershipSpec{
			Customer: v1alpha1.CustomerName(customer), Email: email, Role: role,
		},
	}
}

func TestValidateMembership(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*v1alpha1.CustomerMembership)
		want   []string
	}{
		{"valid", func(*v1alpha1.CustomerMembership) {}, []string{}},
		{"no at sign", func(m *v1alpha1.CustomerMembership) { m.Spec.Email = "alice.example.com" },
			[]string{"FieldValueInvalid spec.email"}},
		{"undotted domain", func(m *v1alpha1.CustomerMembership) { m.Spec.Email = "alice@localhost" },
			[]string{"FieldValueInvalid spec.email"}},
		{"space", func(m *v1alpha1.CustomerMembership) { m.Spec.Email = "al ice@example.com" },
			[]string{"FieldValueInvalid spec.email"}},
		{"two at signs", func(m *v1alpha1.CustomerMembership) { m.Spec.Email = "a@b@example.com" },
			[]string{"FieldValueInvalid spec.email"}},
		// strings.ToLower maps both to ASCII letters ("i", "k"): found by
		// FuzzValidateMembership (testdata/fuzz).
		{"dotted capital I in the domain", func(m *v1alpha1.CustomerMembership) { m.Spec.Email = "alice@exİmple.com" },
			[]string{"FieldValueInvalid spec.email"}},
		{"Kelvin sign in the domain", func(m *v1alpha1.CustomerMembership) { m.Spec.Email = "alice@\u212Aorp.com" },
			[]string{"FieldValueInvalid spec.email"}},
		{"unknown role", func(m *v1alpha1.CustomerMembership) { m.Spec.Role = "Owner" },
			[]string{"FieldValueNotSupported spec.role"}},
		{"unknown invitation", func(m *v1alpha1.CustomerMembership) { m.Spec.Invitation = "Carrier-Pigeon" },
			[]string{"FieldValueNotSupported spec.invitation"}},
		{"bad customer", func(m *v1alpha1.CustomerMembership) { m.Spec.Customer = "Acme" },
			[]string{"FieldValueInvalid spec.customer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			m := membership("acme", "alice@example.com", v1alpha1.RoleAdmin)
			tt.mutate(m)
			g.Expect(fields(ValidateMembership(m))).To(Equal(tt.want))
		})
	}
}

func TestValidateMembershipUpdate(t *testing.T) {
	old := membership("acme", "alice@example.com", v1alpha1.RoleViewer)
	tests := []struct {
		name   string
		mutate func(*v1alpha1.CustomerMembership)
		want   []string
	}{
		{"role may change", func(m *v1alpha1.CustomerMembership) { m.Spec.Role = v1alpha1.RoleAdmin }, []string{}},
		{"email case is not a change", func(m *v1alpha1.CustomerMembership) { m.Spec.Email = "Alice@Example.com" }, []string{}},
		{"customer", func(m *v1alpha1.CustomerMembership) { m.Spec.Customer = "other" },
			[]string{"FieldValueInvalid spec.customer"}},
		{"email", func(m *v1alpha1.CustomerMembership) { m.Spec.Email = "bob@example.com" },
			[]string{"FieldValueInvalid spec.email"}},
		{"username set", func(m *v1alpha1.CustomerMembership) { m.Spec.Username = "alice" },
			[]string{"FieldValueInvalid spec.username"}},
		{"Email to None", func(m *v1alpha1.CustomerMembership) { m.Spec.Invitation = v1alpha1.InvitationNone },
			[]string{"FieldValueInvalid spec.invitation"}},
		{"explicit default is not a change", func(m *v1alpha1.CustomerMembership) { m.Spec.Invitation = v1alpha1.InvitationEmail }, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			m := old.DeepCopy()
			tt.mutate(m)
			g.Expect(fields(ValidateMembershipUpdate(old, m))).To(Equal(tt.want))
		})
	}
}

func TestValidateQuota(t *testing.T) {
	quota := func(name, customer string, max *int32) *v1alpha1.CustomerQuota {
		return &v1alpha1.CustomerQuota{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       v1alpha1.CustomerQuotaSpec{Customer: v1alpha1.CustomerName(customer), MaxProjects: max},
		}
	}
	g := NewWithT(t)
	g.Expect(ValidateQuota(quota("acme", "acme", ptr.To[int32](0)))).To(BeEmpty())
	g.Expect(fields(ValidateQuota(quota("other", "acme", ptr.To[int32](1))))).To(Equal([]string{"FieldValueInvalid metadata.name"}))
	g.Expect(fields(ValidateQuota(quota("acme", "acme", ptr.To[int32](-1))))).To(Equal([]string{"FieldValueInvalid spec.maxProjects"}))
	g.Expect(fields(ValidateQuota(quota("acme", "acme", nil)))).To(Equal([]string{"FieldValueRequired spec.maxProjects"}))
	g.Expect(fields(ValidateQuotaUpdate(quota("acme", "acme", ptr.To[int32](1)), quota("acme", "beta", ptr.To[int32](1))))).
		To(Equal([]string{"FieldValueInvalid metadata.name", "FieldValueInvalid spec.customer"}))
}

func TestValidateMessage(t *testing.T) {
	message := func(mutate func(*v1alpha1.CustomerMessage)) *v1alpha1.CustomerMessage {
		m := &v1alpha1.CustomerMessage{
			ObjectMeta: metav1.ObjectMeta{Name: "notice"},
			Spec:       v1alpha1.CustomerMessageSpec{Customer: "acme", Title: "Maintenance", Body: "Tonight."},
		}
		mutate(m)
		return m
	}
	tests := []struct {
		name   string
		mutate func(*v1alpha1.CustomerMessage)
		want   []string
	}{
		{"valid", func(*v1alpha1.CustomerMessage) {}, []string{}},
		{"body of 16 KiB", func(m *v1alpha1.CustomerMessage) { m.Spec.Body = strings.Repeat("x", 16384) }, []string{}},
		{"body over 16 KiB in bytes", func(m *v1alpha1.CustomerMessage) { m.Spec.Body = strings.Repeat("é", 8193) },
			[]string{"FieldValueTooLong spec.body"}},
		{"empty title", func(m *v1alpha1.CustomerMessage) { m.Spec.Title = "" },
			[]string{"FieldValueRequired spec.title"}},
		{"long title", func(m *v1alpha1.CustomerMessage) { m.Spec.Title = strings.Repeat("t", 201) },
			[]string{"FieldValueTooLong spec.title"}},
		{"duplicate role", func(m *v1alpha1.CustomerMessage) { m.Spec.Roles = []v1alpha1.Role{"Admin", "Admin"} },
			[]string{"FieldValueDuplicate spec.roles[1]"}},
		{"unknown policy", func(m *v1alpha1.CustomerMessage) { m.Spec.ReadPolicy = "SomeRead" },
			[]string{"FieldValueNotSupported spec.readPolicy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(fields(ValidateMessage(message(tt.mutate)))).To(Equal(tt.want))
		})
	}
	g := NewWithT(t)
	old := message(func(*v1alpha1.CustomerMessage) {})
	changed := message(func(m *v1alpha1.CustomerMessage) { m.Spec.ReadPolicy = v1alpha1.SingleRead; m.Spec.Customer = "beta" })
	g.Expect(fields(ValidateMessageUpdate(old, changed))).To(Equal([]string{"FieldValueInvalid spec.customer", "FieldValueInvalid spec.readPolicy"}))
}

func TestValidateAcknowledgement(t *testing.T) {
	g := NewWithT(t)
	ack := &v1alpha1.MessageAcknowledgement{Spec: v1alpha1.MessageAcknowledgementSpec{Message: "notice", User: "alice@example.com"}}
	g.Expect(ValidateAcknowledgement(ack)).To(BeEmpty())
	other := ack.DeepCopy()
	other.Spec.User = "mallory"
	other.Spec.Message = "Other_Message"
	g.Expect(fields(ValidateAcknowledgementUpdate(ack, other))).To(Equal([]string{
		"FieldValueInvalid spec.message", "FieldValueInvalid spec.message", "FieldValueInvalid spec.user"}))
}

// Texts are limited in characters (runes), and the denial says so.
func TestTextLimitSaysCharacters(t *testing.T) {
	errs := validateText(strings.Repeat("é", MaxTitle+1), field.NewPath("spec", "title"), MaxTitle)
	NewWithT(t).Expect(errs.ToAggregate()).To(MatchError(`spec.title: Too long: may not be more than 200 characters`))
}

func TestLowerASCII(t *testing.T) {
	g := NewWithT(t)
	g.Expect(LowerASCII("Bob.Smith@ACME.test")).To(Equal("bob.smith@acme.test"))
	g.Expect(LowerASCII("Alice@Exİmple.COM")).To(Equal("alice@exİmple.com"), "İ stays, to be refused")
	g.Expect(LowerASCII("\u212Aorp")).To(Equal("\u212Aorp"))
}
