package webhooks

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/quota"
)

// nsPartners is a PartnerChecker that knows its partners by name and counts how
// often it was asked (the webhook must ask only when the cache cannot decide).
type nsPartners struct {
	partners map[string]bool
	asked    int
}

func (p *nsPartners) IsPartner(_ context.Context, user authenticationv1.UserInfo) (bool, error) {
	p.asked++
	return p.partners[user.Username], nil
}

// nsSlots is a ProjectSlots that answers with one outcome and records the calls.
type nsSlots struct {
	outcome  quota.Outcome
	reserved []string
	checked  []string
	// slots are the requests as the ledger got them, reserved and checked.
	slots []quota.Slot
}

func (s *nsSlots) decision(customer string) quota.Decision {
	return quota.Decision{Outcome: s.outcome, Customer: customer, Used: 2, Limit: quota.Limit{Max: 2, Quota: customer}}
}

func (s *nsSlots) Reserve(_ context.Context, customer string, slot quota.Slot) (quota.Decision, error) {
	s.reserved = append(s.reserved, customer+"/"+slot.Namespace)
	s.slots = append(s.slots, slot)
	return s.decision(customer), nil
}

func (s *nsSlots) Check(_ context.Context, customer string, slot quota.Slot) (quota.Decision, error) {
	s.checked = append(s.checked, customer+"/"+slot.Namespace)
	s.slots = append(s.slots, slot)
	return s.decision(customer), nil
}

func nsMembership(name, customer, email string, role v1alpha1.Role, invitation v1alpha1.InvitationMode) *v1alpha1.CustomerMembership {
	return &v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.Now()},
		Spec:       v1alpha1.CustomerMembershipSpec{Customer: v1alpha1.CustomerName(customer), Email: email, Role: role, Invitation: invitation},
	}
}

func nsNamespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func acmeProject(name string) *corev1.Namespace {
	return nsNamespace(name, map[string]string{v1alpha1.CustomerLabel: "acme"})
}

type nsFixture struct {
	validator *NamespaceValidator
	partners  *nsPartners
	slots     *nsSlots
}

func newNamespaceFixture(t *testing.T, outcome quota.Outcome, existing ...client.Object) *nsFixture {
	scheme := testScheme(t)
	objs := append([]client.Object{
		nsMembership("acme-alice", "acme", "alice@acme.test", v1alpha1.RoleAdmin, v1alpha1.InvitationNone),
		nsMembership("acme-eve", "acme", "eve@acme.test", v1alpha1.RoleEditor, v1alpha1.InvitationNone),
		// Invited but not accepted: not active, so not an Admin yet.
		nsMembership("acme-ivan", "acme", "ivan@acme.test", v1alpha1.RoleAdmin, v1alpha1.InvitationEmail),
		nsMembership("globex-gina", "globex", "gina@globex.test", v1alpha1.RoleAdmin, v1alpha1.InvitationNone),
		// An Admin who is a partner too.
		nsMembership("acme-pat", "acme", "pat@partner.test", v1alpha1.RoleAdmin, v1alpha1.InvitationNone),
	}, existing...)
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithIndex(&v1alpha1.CustomerMembership{}, controllers.MembershipCustomerIndex, func(o client.Object) []string {
			return []string{string(o.(*v1alpha1.CustomerMembership).Spec.Customer)}
		}).
		WithIndex(&v1alpha1.CustomerMembership{}, membershipUsernameIndex, func(o client.Object) []string {
			return []string{members.Username(o.(*v1alpha1.CustomerMembership), "")}
		}).
		Build()
	f := &nsFixture{
		partners: &nsPartners{partners: map[string]bool{"pat@partner.test": true, "system:admin": true}},
		slots:    &nsSlots{outcome: outcome},
	}
	f.validator = &NamespaceValidator{Cache: c, APIReader: c, Partners: f.partners, Slots: f.slots}
	return f
}

func asUser(user string, op admissionv1.Operation, dryRun bool) context.Context {
	return admission.NewContextWithRequest(context.Background(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: op,
		UserInfo:  authenticationv1.UserInfo{Username: user},
		DryRun:    ptr.To(dryRun),
	}})
}

func TestNamespaceCreate(t *testing.T) {
	tests := []struct {
		name     string
		user     string
		ns       *corev1.Namespace
		outcome  quota.Outcome
		dryRun   bool
		existing []client.Object
		// wantErr is a substring of the denial; empty means admitted.
		wantErr     string
		wantAsked   int
		wantReserve []string
		wantCheck   []string
	}{
		{name: "an Admin's plain project: the cache decides, no authorizer", user: "alice@acme.test",
			ns: acmeProject("acme-web"), outcome: quota.Reserved, wantReserve: []string{"acme/acme-web"}},
		{name: "allowed metadata", user: "alice@acme.test",
			ns: func() *corev1.Namespace {
				ns := nsNamespace("acme-web", map[string]string{v1alpha1.CustomerLabel: "acme", corev1.LabelMetadataName: "acme-web"})
				ns.Annotations = map[string]string{corev1.LastAppliedConfigAnnotation: "{}", "kubernetes.io/description": "web shop"}
				return ns
			}(),
			outcome: quota.Reserved, wantReserve: []string{"acme/acme-web"}},
		{name: "a partner", user: "pat@partner.test", ns: nsNamespace("globex-web", map[string]string{v1alpha1.CustomerLabel: "globex"}),
			outcome: quota.Reserved, wantAsked: 1, wantReserve: []string{"globex/globex-web"}},
		{name: "a partner may set any metadata", user: "system:admin",
			ns:      nsNamespace("acme-web", map[string]string{v1alpha1.CustomerLabel: "acme", "pod-security.kubernetes.io/enforce": "privileged"}),
			outcome: quota.Reserved, wantAsked: 1, wantReserve: []string{"acme/acme-web"}},
		{name: "a privileged pod-security label from an Admin", user: "alice@acme.test",
			ns:      nsNamespace("acme-web", map[string]string{v1alpha1.CustomerLabel: "acme", "pod-security.kubernetes.io/enforce": "privileged"}),
			wantErr: `metadata.labels[pod-security.kubernetes.io/enforce]: Forbidden: only partners may set pod-security.kubernetes.io/* labels`, wantAsked: 1},
		{name: "a label outside the allow-list from an Admin", user: "alice@acme.test",
			ns:      nsNamespace("acme-web", map[string]string{v1alpha1.CustomerLabel: "acme", "istio-injection": "enabled"}),
			wantErr: `metadata.labels[istio-injection]: Forbidden: only partners may set labels other than customers.partnerops.io/customer, kubernetes.io/metadata.name`, wantAsked: 1},
		{name: "an annotation outside the allow-list from an Admin", user: "alice@acme.test",
			ns: func() *corev1.Namespace {
				ns := acmeProject("acme-web")
				ns.Annotations = map[string]string{"scheduler.alpha.kubernetes.io/node-selector": "pool=gpu"}
				return ns
			}(),
			wantErr: `metadata.annotations[scheduler.alpha.kubernetes.io/node-selector]: Forbidden: only partners may set annotations`, wantAsked: 1},
		{name: "finalizers from an Admin", user: "alice@acme.test",
			ns: func() *corev1.Namespace {
				ns := acmeProject("acme-web")
				ns.Finalizers = []string{"example.com/hold"}
				return ns
			}(),
			wantErr: `metadata.finalizers: Forbidden`, wantAsked: 1},
		{name: "an Editor is not an Admin", user: "eve@acme.test", ns: acmeProject("acme-web"),
			wantErr: `"eve@acme.test" is not an Admin of customer "acme" (label customers.partnerops.io/customer): only partners and the customer's active Admin members may create its projects`, wantAsked: 1},
		{name: "an Admin who has not accepted the invitation", user: "ivan@acme.test", ns: acmeProject("acme-web"),
			wantErr: `"ivan@acme.test" is not an Admin of customer "acme"`, wantAsked: 1},
		{name: "an Admin of another customer", user: "gina@globex.test", ns: acmeProject("acme-web"),
			wantErr: `"gina@globex.test" is not an Admin of customer "acme"`, wantAsked: 1},
		{name: "an empty customer label", user: "system:admin", ns: nsNamespace("x", map[string]string{v1alpha1.CustomerLabel: ""}),
			wantErr: `metadata.labels[customers.partnerops.io/customer]: Required value: must be the identifier of a Customer (the label's value is a Customer's identifier)`},
		{name: "a label that no Customer can have, from an Admin", user: "alice@acme.test", ns: nsNamespace("acme-web", map[string]string{v1alpha1.CustomerLabel: "Acme"}),
			wantErr: `metadata.labels[customers.partnerops.io/customer]: Invalid value: "Acme": a lowercase RFC 1123 label must consist of lower case alphanumeric characters`},
		{name: "a label that no Customer can have, from a partner", user: "pat@partner.test", ns: nsNamespace("acme-web", map[string]string{v1alpha1.CustomerLabel: "acme.eu"}),
			wantErr: `metadata.labels[customers.partnerops.io/customer]: Invalid value: "acme.eu"`},
		{name: "unknown customer", user: "system:admin", ns: nsNamespace("nope-web", map[string]string{v1alpha1.CustomerLabel: "nope"}),
			outcome: quota.CustomerNotFound, wantAsked: 1, wantReserve: []string{"nope/nope-web"},
			wantErr: `customer "nope" does not exist (label customers.partnerops.io/customer): create the Customer first`},
		{name: "customer being deleted", user: "alice@acme.test", ns: acmeProject("acme-web"),
			outcome: quota.CustomerDeleting, wantReserve: []string{"acme/acme-web"},
			wantErr: `customer "acme" is being deleted and takes no new projects`},
		{name: "over quota", user: "alice@acme.test", ns: acmeProject("acme-web"), outcome: quota.OverQuota,
			wantReserve: []string{"acme/acme-web"},
			wantErr:     `customer "acme" has 2 of 2 projects (CustomerQuota "acme"); ask your partner to raise spec.maxProjects`},
		{name: "over quota, but the namespace exists: AlreadyExists is the API server's answer", user: "alice@acme.test",
			ns: acmeProject("acme-web"), outcome: quota.OverQuota, existing: []client.Object{acmeProject("acme-web")},
			wantReserve: []string{"acme/acme-web"}},
		{name: "dry-run checks and reserves nothing", user: "alice@acme.test", ns: acmeProject("acme-web"),
			outcome: quota.Reserved, dryRun: true, wantCheck: []string{"acme/acme-web"}},
		{name: "dry-run over quota is refused too", user: "alice@acme.test", ns: acmeProject("acme-web"),
			outcome: quota.OverQuota, dryRun: true, wantCheck: []string{"acme/acme-web"}, wantErr: `has 2 of 2 projects`},
		{name: "an Admin may create only projects", user: "alice@acme.test", ns: nsNamespace("scratch", nil),
			wantErr:   `namespace "scratch" has no label customers.partnerops.io/customer: a customer's Admins may create only projects, so label it with the customer (acme)`,
			wantAsked: 1},
		{name: "a plain namespace of someone who is no Admin is not this webhook's business", user: "ci-bot",
			ns: nsNamespace("scratch", map[string]string{"team": "ci"})},
		{name: "an Admin who is a partner may create plain namespaces", user: "pat@partner.test",
			ns: nsNamespace("scratch", nil), wantAsked: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newNamespaceFixture(t, tt.outcome, tt.existing...)
			_, err := f.validator.ValidateCreate(asUser(tt.user, admissionv1.Create, tt.dryRun), tt.ns)
			if tt.wantErr == "" {
				g.Expect(err).NotTo(HaveOccurred())
			} else {
				g.Expect(err).To(HaveOccurred())
				g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want 403, got %v", err)
				g.Expect(err.Error()).To(ContainSubstring(tt.wantErr))
			}
			g.Expect(f.partners.asked).To(Equal(tt.wantAsked), "SubjectAccessReviews")
			g.Expect(f.slots.reserved).To(Equal(tt.wantReserve), "reservations")
			g.Expect(f.slots.checked).To(Equal(tt.wantCheck), "dry-run checks")
		})
	}
}

func TestNamespaceUpdate(t *testing.T) {
	withLabel := func(customer string, extra ...string) *corev1.Namespace {
		labels := map[string]string{}
		if customer != "" {
			labels[v1alpha1.CustomerLabel] = customer
		}
		for i := 0; i+1 < len(extra); i += 2 {
			labels[extra[i]] = extra[i+1]
		}
		return nsNamespace("shared", labels)
	}
	tests := []struct {
		name        string
		user        string
		old, ns     *corev1.Namespace
		outcome     quota.Outcome
		wantErr     string
		wantAsked   int
		wantReserve []string
	}{
		{name: "a change that does not touch the customer label passes at once", user: "ci-bot",
			old: withLabel("acme"), ns: withLabel("acme", "team", "web")},
		{name: "a plain namespace's update passes at once", user: "ci-bot",
			old: withLabel(""), ns: withLabel("", "team", "web")},
		{name: "labelling another team's namespace into a customer", user: "alice@acme.test",
			old: withLabel(""), ns: withLabel("acme"), wantAsked: 1,
			wantErr: `only a partner may make the existing namespace "shared" a project of customer "acme" (label customers.partnerops.io/customer)`},
		{name: "moving a project to another customer", user: "alice@acme.test",
			old: withLabel("acme"), ns: withLabel("globex"), wantAsked: 1,
			wantErr: `only a partner may move namespace "shared" from customer "acme" to customer "globex"`},
		{name: "removing the label", user: "alice@acme.test",
			old: withLabel("acme"), ns: withLabel(""), wantAsked: 1,
			wantErr: `only a partner may remove label customers.partnerops.io/customer from namespace "shared" (a project of customer "acme")`},
		{name: "a partner removes the label: no quota matter", user: "system:admin",
			old: withLabel("acme"), ns: withLabel(""), wantAsked: 1},
		{name: "a partner moves a project: a slot of the new customer", user: "system:admin",
			old: withLabel("acme"), ns: withLabel("globex"), outcome: quota.Reserved, wantAsked: 1,
			wantReserve: []string{"globex/shared"}},
		{name: "a partner moves a project into a full customer", user: "system:admin",
			old: withLabel("acme"), ns: withLabel("globex"), outcome: quota.OverQuota, wantAsked: 1,
			wantReserve: []string{"globex/shared"}, wantErr: `customer "globex" has 2 of 2 projects`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			// The namespace exists (it is an update): that must not excuse a move over quota.
			f := newNamespaceFixture(t, tt.outcome, tt.old.DeepCopy())
			old := tt.old.DeepCopy()
			old.ResourceVersion = "41"
			_, err := f.validator.ValidateUpdate(asUser(tt.user, admissionv1.Update, false), old, tt.ns)
			if tt.wantErr == "" {
				g.Expect(err).NotTo(HaveOccurred())
			} else {
				g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want 403, got %v", err)
				g.Expect(err.Error()).To(ContainSubstring(tt.wantErr))
			}
			g.Expect(f.partners.asked).To(Equal(tt.wantAsked), "SubjectAccessReviews")
			g.Expect(f.slots.reserved).To(Equal(tt.wantReserve), "reservations")
			for _, slot := range f.slots.slots {
				// What tells the ledger that a cached copy of the namespace in this
				// customer (a label removed and put back) is out of date.
				g.Expect(slot.After).To(Equal("41"), "the old object's resourceVersion goes with the slot")
			}
		})
	}
}

// With --require-project-prefix a customer's Admin cannot take a name the partner
// may later install or sync something into (argocd, another customer's
// globex-web); partners name namespaces freely.
func TestNamespaceCreateProjectPrefix(t *testing.T) {
	tests := []struct {
		name, user, namespace string
		require               bool
		wantErr               string
	}{
		{name: "an Admin's project named for the customer", user: "alice@acme.test", namespace: "acme-web", require: true},
		{name: "an Admin takes a tool's name", user: "alice@acme.test", namespace: "argocd", require: true,
			wantErr: `metadata.name: Invalid value: "argocd": a customer's Admins may create only projects named acme-<name> (--require-project-prefix)`},
		{name: "the customer's name without the dash", user: "alice@acme.test", namespace: "acmeweb", require: true,
			wantErr: `metadata.name: Invalid value: "acmeweb"`},
		{name: "another customer's prefix, which starts with this one's", user: "alice@acme.test", namespace: "acme-eu-web", require: true,
			wantErr: `metadata.name: Invalid value: "acme-eu-web": names starting with acme-eu- are for the projects of customer "acme-eu"`},
		{name: "a name that only looks like another customer's", user: "alice@acme.test", namespace: "acme-euro", require: true},
		{name: "a dash further on that names no customer", user: "alice@acme.test", namespace: "acme-web-eu", require: true},
		{name: "a partner names it freely", user: "system:admin", namespace: "argocd", require: true},
		{name: "off (the binary's default): any name", user: "alice@acme.test", namespace: "argocd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			f := newNamespaceFixture(t, quota.Reserved,
				&v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: "acme-eu"}})
			f.validator.RequireProjectPrefix = tt.require
			_, err := f.validator.ValidateCreate(asUser(tt.user, admissionv1.Create, false), acmeProject(tt.namespace))
			if tt.wantErr == "" {
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(f.slots.reserved).To(Equal([]string{"acme/" + tt.namespace}))
				return
			}
			g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want 403, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tt.wantErr))
			g.Expect(f.slots.reserved).To(BeEmpty(), "no slot for a refused name")
		})
	}
}
