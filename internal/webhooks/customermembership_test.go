package webhooks

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
)

// The membership webhook's own rules, against a fake cache. CEL holds the field
// rules it shares (immutability, "system:"), which the envtest suite covers end to
// end; these are the rules only the webhook can check.

type cmPartners map[string]bool

func (p cmPartners) IsPartner(_ context.Context, user authenticationv1.UserInfo) (bool, error) {
	return p[user.Username], nil
}

var cmCreated = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

func cmMembership(name, customer, email string, role v1alpha1.Role, mode v1alpha1.InvitationMode, mutate ...func(*v1alpha1.CustomerMembership)) *v1alpha1.CustomerMembership {
	m := &v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: cmCreated},
		Spec:       v1alpha1.CustomerMembershipSpec{Customer: v1alpha1.CustomerName(customer), Email: email, Role: role, Invitation: mode},
	}
	for _, f := range mutate {
		f(m)
	}
	return m
}

func cmCustomer(name string, deleting bool) *v1alpha1.Customer {
	c := &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.CustomerSpec{Identifier: name, DisplayName: name},
	}
	if deleting {
		c.DeletionTimestamp = &metav1.Time{Time: cmCreated.Time}
		c.Finalizers = []string{v1alpha1.CustomerFinalizer}
	}
	return c
}

func newMembershipValidator(t *testing.T) *CustomerMembershipValidator {
	t.Helper()
	scheme := testScheme(t)
	accepted := func(m *v1alpha1.CustomerMembership) { m.Status.AcceptedTime = &cmCreated }
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		cmCustomer("acme", false),
		cmCustomer("globex", false),
		cmCustomer("leaving", true),
		// ann: accepted Admin of acme. ivan: invited Admin, not accepted yet.
		cmMembership("acme-ann", "acme", "ann@acme.test", v1alpha1.RoleAdmin, v1alpha1.InvitationEmail, accepted),
		cmMembership("acme-ivan", "acme", "ivan@acme.test", v1alpha1.RoleAdmin, v1alpha1.InvitationEmail),
		cmMembership("acme-eve", "acme", "eve@acme.test", v1alpha1.RoleEditor, v1alpha1.InvitationNone),
		cmMembership("globex-gus", "globex", "gus@globex.test", v1alpha1.RoleViewer, v1alpha1.InvitationNone),
		cmMembership("leaving-lou", "leaving", "lou@leaving.test", v1alpha1.RoleAdmin, v1alpha1.InvitationNone),
	).WithIndex(&v1alpha1.CustomerMembership{}, controllers.MembershipCustomerIndex, func(o client.Object) []string {
		return []string{string(o.(*v1alpha1.CustomerMembership).Spec.Customer)}
	}).Build()
	return &CustomerMembershipValidator{Reader: c, Partners: cmPartners{"pat@partner.test": true}, UsernamePrefix: "oidc:"}
}

// testScheme knows Kubernetes' kinds and the operator's, for the fake clients of
// these tests.
func testScheme(tb testing.TB) *runtime.Scheme {
	tb.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		tb.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		tb.Fatal(err)
	}
	return scheme
}

func cmAs(user string, op admissionv1.Operation) context.Context {
	return admission.NewContextWithRequest(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: op,
		UserInfo:  authenticationv1.UserInfo{Username: user},
	}})
}

func TestMembershipCreate(t *testing.T) {
	tests := []struct {
		name      string
		user      string
		m         *v1alpha1.CustomerMembership
		forbidden string // substring of a 403
		invalid   string // substring of a 422
	}{{
		name: "a partner adds themselves with invitation None",
		user: "pat@partner.test",
		m:    cmMembership("acme-pat", "acme", "pat@partner.test", v1alpha1.RoleAdmin, v1alpha1.InvitationNone),
	}, {
		name: "a partner chooses a username",
		user: "pat@partner.test",
		m: cmMembership("acme-svc", "acme", "svc@acme.test", v1alpha1.RoleViewer, "", func(m *v1alpha1.CustomerMembership) {
			m.Spec.Username = "ci-bot"
		}),
	}, {
		name: "an Admin invites to her own customer",
		user: "oidc:ann@acme.test",
		m:    cmMembership("acme-bob", "acme", "bob@acme.test", v1alpha1.RoleViewer, ""),
	}, {
		name: "an Admin may spell out the default username",
		user: "oidc:ann@acme.test",
		m: cmMembership("acme-bob", "acme", "bob@acme.test", v1alpha1.RoleViewer, "", func(m *v1alpha1.CustomerMembership) {
			m.Spec.Username = "oidc:bob@acme.test"
		}),
	}, {
		name:      "an Admin of acme for globex",
		user:      "oidc:ann@acme.test",
		m:         cmMembership("globex-bob", "globex", "bob@globex.test", v1alpha1.RoleViewer, ""),
		forbidden: `"oidc:ann@acme.test" is not an Admin of customer "globex" (spec.customer)`,
	}, {
		name:      "an invited Admin who has not accepted yet",
		user:      "oidc:ivan@acme.test",
		m:         cmMembership("acme-bob", "acme", "bob@acme.test", v1alpha1.RoleViewer, ""),
		forbidden: `not an Admin of customer "acme"`,
	}, {
		name:      "an Editor",
		user:      "oidc:eve@acme.test",
		m:         cmMembership("acme-bob", "acme", "bob@acme.test", v1alpha1.RoleViewer, ""),
		forbidden: `not an Admin of customer "acme"`,
	}, {
		name:      "an Admin of a customer being deleted",
		user:      "oidc:lou@leaving.test",
		m:         cmMembership("leaving-bob", "leaving", "bob@leaving.test", v1alpha1.RoleViewer, ""),
		forbidden: `not an Admin of customer "leaving"`,
	}, {
		name:      "a customer that does not exist",
		user:      "oidc:ann@acme.test",
		m:         cmMembership("ghost-bob", "ghost", "bob@ghost.test", v1alpha1.RoleViewer, ""),
		forbidden: `not an Admin of customer "ghost"`,
	}, {
		name:    "an Admin asks for invitation None",
		user:    "oidc:ann@acme.test",
		m:       cmMembership("acme-bob", "acme", "bob@acme.test", v1alpha1.RoleViewer, v1alpha1.InvitationNone),
		invalid: "spec.invitation: Forbidden: only partners may create memberships with invitation None",
	}, {
		name: "an Admin chooses a username",
		user: "oidc:ann@acme.test",
		m: cmMembership("acme-bob", "acme", "bob@acme.test", v1alpha1.RoleViewer, "", func(m *v1alpha1.CustomerMembership) {
			m.Spec.Username = "oidc:ann@acme.test"
		}),
		invalid: `spec.username: Forbidden: only partners may set a username other than the default "oidc:bob@acme.test"`,
	}, {
		name: "an Admin gets no system: name",
		user: "oidc:ann@acme.test",
		m: cmMembership("acme-sys", "acme", "sys@acme.test", v1alpha1.RoleViewer, "", func(m *v1alpha1.CustomerMembership) {
			m.Spec.Username = "system:serviceaccount:acme-web:deployer"
		}),
		invalid: `spec.username: Forbidden: must not start with "system:": only partners may give a membership a system username`,
	}, {
		name: "a partner may give a ServiceAccount's username (DESIGN: only non-partners are restricted)",
		user: "pat@partner.test",
		m: cmMembership("acme-ci", "acme", "ci@acme.test", v1alpha1.RoleEditor, v1alpha1.InvitationNone, func(m *v1alpha1.CustomerMembership) {
			m.Spec.Username = "system:serviceaccount:acme-web:deployer"
		}),
	}, {
		name:    "a visible duplicate, whatever the case of the address",
		user:    "pat@partner.test",
		m:       cmMembership("acme-ann-2", "acme", "ANN@acme.test", v1alpha1.RoleViewer, v1alpha1.InvitationNone),
		invalid: `spec.email: Invalid value: "ANN@acme.test": customer "acme" already has a membership for this e-mail (CustomerMembership "acme-ann")`,
	}, {
		name: "the same address for another customer is no duplicate",
		user: "pat@partner.test",
		m:    cmMembership("globex-ann", "globex", "ann@acme.test", v1alpha1.RoleViewer, v1alpha1.InvitationNone),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			_, err := newMembershipValidator(t).ValidateCreate(cmAs(tt.user, admissionv1.Create), tt.m)
			switch {
			case tt.forbidden != "":
				g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
				g.Expect(err.Error()).To(ContainSubstring(tt.forbidden))
			case tt.invalid != "":
				g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
				g.Expect(err.Error()).To(ContainSubstring(tt.invalid))
			default:
				g.Expect(err).NotTo(HaveOccurred())
			}
		})
	}
}

// acme has three memberships (ann, ivan, eve): with a cap of three its Admin may
// make no more, a partner still may; with four, the Admin may.
func TestMembershipCapPerCustomer(t *testing.T) {
	g := NewWithT(t)
	v := newMembershipValidator(t)
	bob := cmMembership("acme-bob", "acme", "bob@acme.test", v1alpha1.RoleViewer, "")
	v.MaxPerCustomer = 3
	_, err := v.ValidateCreate(cmAs("oidc:ann@acme.test", admissionv1.Create), bob)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
	g.Expect(err).To(MatchError(ContainSubstring(
		`customer "acme" has 3 memberships, the most its Admins may create (--max-memberships-per-customer); delete one, or ask your partner`)))
	_, err = v.ValidateCreate(cmAs("pat@partner.test", admissionv1.Create), bob)
	g.Expect(err).NotTo(HaveOccurred(), "partners are not capped")
	_, err = v.ValidateCreate(cmAs("oidc:ann@acme.test", admissionv1.Create),
		cmMembership("globex-bob", "globex", "bob@globex.test", v1alpha1.RoleViewer, ""))
	g.Expect(err).To(MatchError(ContainSubstring("is not an Admin of customer")), "the cap does not come before who may")
	v.MaxPerCustomer = 4
	_, err = v.ValidateCreate(cmAs("oidc:ann@acme.test", admissionv1.Create), bob)
	g.Expect(err).NotTo(HaveOccurred())
	v.MaxPerCustomer = 0
	_, err = v.ValidateCreate(cmAs("oidc:ann@acme.test", admissionv1.Create), bob)
	g.Expect(err).NotTo(HaveOccurred(), "0: no cap")
}

func TestMembershipUpdateAndDeleteCheckOldAndNew(t *testing.T) {
	g := NewWithT(t)
	v := newMembershipValidator(t)
	ann := cmAs("oidc:ann@acme.test", admissionv1.Update)
	own := cmMembership("acme-eve", "acme", "eve@acme.test", v1alpha1.RoleEditor, v1alpha1.InvitationNone)
	foreign := cmMembership("globex-gus", "globex", "gus@globex.test", v1alpha1.RoleViewer, v1alpha1.InvitationNone)

	promoted := own.DeepCopy()
	promoted.Spec.Role = v1alpha1.RoleAdmin
	_, err := v.ValidateUpdate(ann, own, promoted)
	g.Expect(err).NotTo(HaveOccurred(), "her own customer's member")

	promotedForeign := foreign.DeepCopy()
	promotedForeign.Spec.Role = v1alpha1.RoleAdmin
	_, err = v.ValidateUpdate(ann, foreign, promotedForeign)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
	g.Expect(err.Error()).To(ContainSubstring(`not an Admin of customer "globex"`))

	// Moving a membership into her customer is refused on the old object (and by
	// the immutability of spec.customer, which CEL holds too).
	moved := foreign.DeepCopy()
	moved.Spec.Customer = "acme"
	_, err = v.ValidateUpdate(ann, foreign, moved)
	g.Expect(err).To(HaveOccurred())

	_, err = v.ValidateDelete(cmAs("oidc:ann@acme.test", admissionv1.Delete), foreign)
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
	_, err = v.ValidateDelete(cmAs("oidc:ann@acme.test", admissionv1.Delete), own)
	g.Expect(err).NotTo(HaveOccurred())
	_, err = v.ValidateDelete(cmAs("pat@partner.test", admissionv1.Delete), foreign)
	g.Expect(err).NotTo(HaveOccurred(), "partners may delete any")
}

func TestMembershipDefaulterLowerCasesTheEmail(t *testing.T) {
	g := NewWithT(t)
	m := cmMembership("acme-bob", "acme", "Bob.Smith@ACME.test", v1alpha1.RoleViewer, "")
	g.Expect(CustomerMembershipDefaulter{}.Default(context.Background(), m)).To(Succeed())
	g.Expect(m.Spec.Email).To(Equal("bob.smith@acme.test"))

	// Only ASCII letters: strings.ToLower would turn "İ" into "i" and so store
	// another, valid address instead of letting the schema refuse this one.
	m = cmMembership("acme-dana", "acme", "Dana@Exİmple.com", v1alpha1.RoleViewer, "")
	g.Expect(CustomerMembershipDefaulter{}.Default(context.Background(), m)).To(Succeed())
	g.Expect(m.Spec.Email).To(Equal("dana@exİmple.com"))
}
