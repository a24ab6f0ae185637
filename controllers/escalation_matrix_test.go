package controllers_test

import (
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// The escalation matrix (issue 8, item 5): every actor tries what they must not do,
// as themselves (impersonated, so RBAC, the webhooks, CEL and the
// ValidatingAdmissionPolicy all run as in production), and each attempt must be
// refused with a message that says what and why. The outcome of every row is
// collected first and asserted at the end, so that the printed matrix always shows
// every row, including any that was wrongly allowed.

// The actors. Customer A is esc-a, customer B is esc-b.
const (
	escPartner  = "pat@esc-partner.test" // bound to ClusterRole customer-operator-partner
	escAdminA   = "ada@esc-a.test"       // Admin of A
	escEditorA  = "eda@esc-a.test"       // Editor of A
	escViewerA  = "vic@esc-a.test"       // Viewer of A
	escMemberB  = "bea@esc-b.test"       // Admin of B: the strongest member of another customer
	escStranger = "sam@elsewhere.test"   // authenticated, nothing else
	// escNSEditor may update namespaces and their status and finalize
	// subresources (say, a cluster tool) but is no partner: only admission
	// stands between them and the customer label.
	escNSEditor = "nso@tools.test"
)

// refusedBy reports whether message is a refusal by layer, so that a rule that
// moves to another layer (a CEL rule dropped, and the webhook's copy answering
// instead) shows in the matrix rather than passing unnoticed.
func refusedBy(layer, message string) bool {
	webhook := strings.Contains(message, `admission webhook "`)
	policy := strings.Contains(message, "ValidatingAdmissionPolicy")
	switch layer {
	case "webhook":
		return webhook
	case "VAP":
		return policy
	case "CEL":
		return !webhook && !policy && strings.Contains(message, " is invalid: ")
	case "RBAC":
		return !webhook && !policy && strings.Contains(strings.ToLower(message), "is forbidden: user") ||
			strings.Contains(message, "is attempting to grant RBAC permissions not currently held")
	}
	return false
}

// escRow is one attempted escalation and how it must be refused.
type escRow struct {
	actor   string
	attempt string
	// layer is what is expected to refuse it: RBAC, webhook, CEL or VAP.
	layer string
	do    func() error
	// want are substrings the refusal's message must contain.
	want []string
}

// escResult is what happened to one row.
type escResult struct {
	row     escRow
	code    int32
	message string
	ok      bool
}

// escMember creates an active membership (invitation None, by system:masters).
func escMember(name, customer, user string, role v1alpha1.Role) *v1alpha1.CustomerMembership {
	GinkgoHelper()
	return createMembership(newMembership(name, customer, user, role, v1alpha1.InvitationNone))
}

// escNamespaceWith reads namespace name fresh and sets (or, with "", removes) its
// customer label.
func escNamespaceWith(name, customer string) *corev1.Namespace {
	GinkgoHelper()
	ns := &corev1.Namespace{}
	Expect(admin.Get(ctx, types.NamespacedName{Name: name}, ns)).To(Succeed())
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	if customer == "" {
		delete(ns.Labels, v1alpha1.CustomerLabel)
	} else {
		ns.Labels[v1alpha1.CustomerLabel] = customer
	}
	return ns
}

func escPatch(c client.Client, obj client.Object, patch string) error {
	return c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch)))
}

// escMarkdown renders results as a Markdown table (for the report and docs/security.md).
func escMarkdown(results []escResult) string {
	var b strings.Builder
	b.WriteString("| # | actor | attempt | refused by | HTTP | message (abridged) | ok |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for i, r := range results {
		msg := escReason(r.message)
		if len(msg) > 200 {
			msg = msg[:197] + "..."
		}
		msg = strings.NewReplacer("|", `\|`, "\n", " ").Replace(msg)
		verdict := "yes"
		if !r.ok {
			verdict = "**NO**"
		}
		code := "-"
		if r.code != 0 {
			code = fmt.Sprint(r.code)
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s |\n", i+1, r.row.actor, r.row.attempt, r.row.layer, code, msg, verdict)
	}
	return b.String()
}

// escReason cuts a refusal down to its reason, for the table: without the
// "admission webhook ... denied the request" and "<resource> is forbidden" framing
// (the refused-by column says which layer answered).
func escReason(msg string) string {
	for _, sep := range []string{" denied the request: ", " denied request: ", " is forbidden: ", " is invalid: "} {
		if _, after, found := strings.Cut(msg, sep); found {
			msg = after
		}
	}
	return msg
}

var _ = Describe("Escalation matrix", func() {
	It("refuses every actor every escalation, with a message that says what and why", func() {
		By("setting up customers A and B, their projects, members and a message")
		createCustomer("esc-a", "Escalation A")
		createCustomer("esc-b", "Escalation B")
		for _, q := range []*v1alpha1.CustomerQuota{
			{ObjectMeta: metav1.ObjectMeta{Name: "esc-a"}, Spec: v1alpha1.CustomerQuotaSpec{Customer: "esc-a", MaxProjects: ptr.To[int32](5)}},
			{ObjectMeta: metav1.ObjectMeta{Name: "esc-b"}, Spec: v1alpha1.CustomerQuotaSpec{Customer: "esc-b", MaxProjects: ptr.To[int32](1)}},
		} {
			Expect(admin.Create(ctx, q)).To(Succeed())
			DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, q))).To(Succeed()) })
		}
		createProject("esc-a-web", "esc-a")
		createProject("esc-b-web", "esc-b")
		team := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "esc-team"}}
		Expect(admin.Create(ctx, team)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, team))).To(Succeed()) })

		bindPartner(escPartner)
		nsEditorRole := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "esctest-namespace-editor"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""},
				Resources: []string{"namespaces", "namespaces/status", "namespaces/finalize"},
				Verbs:     []string{"get", "update", "patch"}}},
		}
		Expect(admin.Create(ctx, nsEditorRole)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, nsEditorRole))).To(Succeed()) })
		nsEditorBinding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "esctest-namespace-editor"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: nsEditorRole.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: escNSEditor}},
		}
		Expect(admin.Create(ctx, nsEditorBinding)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, nsEditorBinding))).To(Succeed()) })

		escMember("esc-a-ada", "esc-a", escAdminA, v1alpha1.RoleAdmin)
		escMember("esc-a-eda", "esc-a", escEditorA, v1alpha1.RoleEditor)
		vic := escMember("esc-a-vic", "esc-a", escViewerA, v1alpha1.RoleViewer)
		bea := escMember("esc-b-bea", "esc-b", escMemberB, v1alpha1.RoleAdmin)
		// An invited (Email) member of A, for the Email→None attempt.
		eli := createMembership(newMembership("esc-a-eli", "esc-a", "eli@esc-a.test", v1alpha1.RoleViewer, v1alpha1.InvitationEmail))
		notice := &v1alpha1.CustomerMessage{
			ObjectMeta: metav1.ObjectMeta{Name: "esc-a-notice"},
			Spec:       v1alpha1.CustomerMessageSpec{Customer: "esc-a", Title: "Maintenance", Body: "Tonight."},
		}
		Expect(admin.Create(ctx, notice)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, notice))).To(Succeed()) })

		By("waiting until the access controller has granted each member their role")
		Eventually(canCreateDeployments(escAdminA, "esc-a-web")).Should(BeTrue())
		Eventually(func() bool { return canI(escAdminA, "create", "", "namespaces", "", "") }).Should(BeTrue())
		Eventually(canCreateDeployments(escEditorA, "esc-a-web")).Should(BeTrue())
		Eventually(canGetPods(escViewerA, "esc-a-web")).Should(BeTrue())
		Eventually(canCreateDeployments(escMemberB, "esc-b-web")).Should(BeTrue())
		Eventually(func() bool { return canI(escMemberB, "create", "", "namespaces", "", "") }).Should(BeTrue())
		Eventually(func() bool { return canI(escViewerA, "get", v1alpha1.GroupName, "customermessages", "", notice.Name) }).Should(BeTrue())
		Eventually(func(g Gomega) {
			m := &v1alpha1.CustomerMessage{}
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(notice), m)).To(Succeed())
			g.Expect(m.Status.ObservedGeneration).To(Equal(m.Generation))
			g.Expect(m.Status.Recipients).To(BeNumerically(">=", 3))
		}).Should(Succeed())

		partner, adminA, editorA := clientAs(escPartner), clientAs(escAdminA), clientAs(escEditorA)
		viewerA, memberB, stranger := clientAs(escViewerA), clientAs(escMemberB), clientAs(escStranger)
		nsEditor, err := kubernetes.NewForConfig(env.ConfigAs(escNSEditor))
		Expect(err).NotTo(HaveOccurred())
		adminACS, err := kubernetes.NewForConfig(env.ConfigAs(escAdminA))
		Expect(err).NotTo(HaveOccurred())

		customerA := func() *v1alpha1.Customer { return &v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: "esc-a"}} }
		customerB := func() *v1alpha1.Customer { return &v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: "esc-b"}} }
		quotaA := func() *v1alpha1.CustomerQuota {
			return &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "esc-a"}}
		}
		withUsername := func(m *v1alpha1.CustomerMembership, username string) *v1alpha1.CustomerMembership {
			m.Spec.Username = username
			return m
		}
		privileged := newProject("esc-a-priv", "esc-a")
		privileged.Labels["pod-security.kubernetes.io/enforce"] = "privileged"
		bindClusterAdmin := func(ns string) *rbacv1.RoleBinding {
			return &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "esc-escalate", Namespace: ns},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: escAdminA}},
			}
		}
		const rbac = "is forbidden: User"
		const notRecipientOrSelf = "must be your own username"

		rows := []escRow{
			// The partner may do a lot, but not break the invariants.
			{escPartner, "label kube-system into customer A", "VAP", func() error {
				return partner.Update(ctx, escNamespaceWith("kube-system", "esc-a"))
			}, []string{`namespace "kube-system" is a system namespace and cannot be a project`, "metadata.labels"}},
			{escPartner, "label default into customer A", "VAP", func() error {
				return partner.Update(ctx, escNamespaceWith("default", "esc-a"))
			}, []string{`namespace "default" is a system namespace and cannot be a project`}},
			{escPartner, "change customer A's identifier", "CEL", func() error {
				return escPatch(partner, customerA(), `{"spec":{"identifier":"esc-z"}}`)
			}, []string{"spec.identifier"}},
			{escPartner, "move a membership to customer B (spec.customer)", "CEL", func() error {
				return escPatch(partner, vic.DeepCopy(), `{"spec":{"customer":"esc-b"}}`)
			}, []string{"spec.customer is immutable"}},
			{escPartner, "change a quota's customer reference", "CEL", func() error {
				return escPatch(partner, quotaA(), `{"spec":{"customer":"esc-b"}}`)
			}, []string{"spec.customer is immutable"}},
			{escPartner, "patch an Email membership to None", "CEL", func() error {
				return escPatch(partner, eli.DeepCopy(), `{"spec":{"invitation":"None"}}`)
			}, []string{"spec.invitation is immutable"}},
			{escPartner, "delete customer A, which has a project", "webhook", func() error {
				return partner.Delete(ctx, customerA())
			}, []string{`customer "esc-a" still has 1 project(s) ([esc-a-web]); delete them first`}},
			{escPartner, "create a project over customer B's quota", "webhook", func() error {
				return partner.Create(ctx, newProject("esc-b-more", "esc-b"))
			}, []string{`customer "esc-b" has 1 of 1 projects (CustomerQuota "esc-b"); ask your partner to raise spec.maxProjects`}},
			{escPartner, "acknowledge as the Viewer of A", "webhook", func() error {
				return partner.Create(ctx, msgAck("esc-ack-pat", notice.Name, escViewerA))
			}, []string{"spec.user", notRecipientOrSelf}},

			// Customer A's Admin: strongest customer user.
			{escAdminA, "write customer B", "RBAC", func() error {
				return escPatch(adminA, customerB(), `{"spec":{"displayName":"Pwned"}}`)
			}, []string{rbac, `cannot patch resource "customers"`}},
			{escAdminA, "raise their own quota", "RBAC", func() error {
				return escPatch(adminA, quotaA(), `{"spec":{"maxProjects":500}}`)
			}, []string{rbac, `cannot patch resource "customerquotas"`}},
			{escAdminA, "invite into customer B", "webhook", func() error {
				return adminA.Create(ctx, newMembership("esc-b-x", "esc-b", "x@esc-b.test", v1alpha1.RoleAdmin, ""))
			}, []string{`"ada@esc-a.test" is not an Admin of customer "esc-b" (spec.customer)`}},
			{escAdminA, "invite with invitation None (not a partner)", "webhook", func() error {
				return adminA.Create(ctx, newMembership("esc-a-none", "esc-a", "none@esc-a.test", v1alpha1.RoleAdmin, v1alpha1.InvitationNone))
			}, []string{"spec.invitation", "only partners may create memberships with invitation None"}},
			{escAdminA, "pick a system: username", "webhook", func() error {
				return adminA.Create(ctx, withUsername(newMembership("esc-a-sys2", "esc-a", "sys@esc-a.test", v1alpha1.RoleAdmin, ""), "system:admin"))
			}, []string{"spec.username", `must not start with "system:"`}},
			{escAdminA, "pick someone else's username", "webhook", func() error {
				return adminA.Create(ctx, withUsername(newMembership("esc-a-alias", "esc-a", "new@esc-a.test", v1alpha1.RoleAdmin, ""), escMemberB))
			}, []string{"spec.username", "only partners may set a username other than the default"}},
			{escAdminA, "move a member of A to customer B", "CEL", func() error {
				return escPatch(adminA, vic.DeepCopy(), `{"spec":{"customer":"esc-b"}}`)
			}, []string{"spec.customer is immutable"}},
			{escAdminA, "patch an Email membership to None", "CEL", func() error {
				return escPatch(adminA, eli.DeepCopy(), `{"spec":{"invitation":"None"}}`)
			}, []string{"spec.invitation is immutable"}},
			{escAdminA, "delete customer B's membership", "webhook", func() error {
				return adminA.Delete(ctx, bea.DeepCopy())
			}, []string{`"ada@esc-a.test" is not an Admin of customer "esc-b"`}},
			{escAdminA, "create a project of customer B", "webhook", func() error {
				return adminA.Create(ctx, newProject("esc-b-ada", "esc-b"))
			}, []string{`"ada@esc-a.test" is not an Admin of customer "esc-b"`}},
			{escAdminA, "create a project with a privileged pod-security label", "webhook", func() error {
				return adminA.Create(ctx, privileged.DeepCopy())
			}, []string{"metadata.labels[pod-security.kubernetes.io/enforce]", "only partners may set pod-security.kubernetes.io/* labels"}},
			{escAdminA, "create a plain namespace (not a project)", "webhook", func() error {
				return adminA.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "esc-a-scratch"}})
			}, []string{`has no label customers.partnerops.io/customer`}},
			{escAdminA, "create a kube-* namespace", "VAP", func() error {
				return adminA.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-esc"}})
			}, []string{`namespace "kube-esc" has a system name`}},
			{escAdminA, "label kube-system into customer A", "RBAC", func() error {
				return adminA.Update(ctx, escNamespaceWith("kube-system", "esc-a"))
			}, []string{rbac, `cannot update resource "namespaces"`}},
			{escAdminA, "move project A to B through namespaces/status", "RBAC", func() error {
				_, err := adminACS.CoreV1().Namespaces().UpdateStatus(ctx, escNamespaceWith("esc-a-web", "esc-b"), metav1.UpdateOptions{})
				return err
			}, []string{rbac, `cannot update resource "namespaces/status"`}},
			{escAdminA, "move project A to B through namespaces/finalize", "RBAC", func() error {
				_, err := adminACS.CoreV1().Namespaces().Finalize(ctx, escNamespaceWith("esc-a-web", "esc-b"), metav1.UpdateOptions{})
				return err
			}, []string{rbac, `cannot update resource "namespaces/finalize"`}},
			{escAdminA, "bind cluster-admin in their own project", "RBAC", func() error {
				return adminA.Create(ctx, bindClusterAdmin("esc-a-web"))
			}, []string{"is attempting to grant RBAC permissions not currently held"}},
			{escAdminA, "create a ClusterRoleBinding", "RBAC", func() error {
				return adminA.Create(ctx, &rbacv1.ClusterRoleBinding{
					ObjectMeta: metav1.ObjectMeta{Name: "esc-escalate"},
					RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
					Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: escAdminA}},
				})
			}, []string{rbac, `cannot create resource "clusterrolebindings"`}},
			{escAdminA, "delete customer B's project", "RBAC", func() error {
				return adminA.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "esc-b-web"}})
			}, []string{rbac, `cannot delete resource "namespaces"`}},
			{escAdminA, "read a secret in customer B's project", "RBAC", func() error {
				return adminA.Get(ctx, types.NamespacedName{Namespace: "esc-b-web", Name: "any"}, &corev1.Secret{})
			}, []string{rbac, `cannot get resource "secrets"`}},
			{escAdminA, "acknowledge as the Viewer of A", "webhook", func() error {
				return adminA.Create(ctx, msgAck("esc-ack-ada", notice.Name, escViewerA))
			}, []string{"spec.user", notRecipientOrSelf}},

			// Customer A's Editor and Viewer: RBAC of their role, nothing more.
			{escEditorA, "invite a member (Admins only)", "RBAC", func() error {
				return editorA.Create(ctx, newMembership("esc-a-ed", "esc-a", "ed@esc-a.test", v1alpha1.RoleViewer, ""))
			}, []string{rbac, `cannot create resource "customermemberships"`}},
			{escEditorA, "make themselves Admin", "RBAC", func() error {
				return escPatch(editorA, &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: "esc-a-eda"}}, `{"spec":{"role":"Admin"}}`)
			}, []string{rbac, `cannot patch resource "customermemberships"`}},
			{escEditorA, "create a project", "RBAC", func() error {
				return editorA.Create(ctx, newProject("esc-a-eda", "esc-a"))
			}, []string{rbac, `cannot create resource "namespaces"`}},
			{escEditorA, "create a RoleBinding in their project", "RBAC", func() error {
				return editorA.Create(ctx, bindClusterAdmin("esc-a-web"))
			}, []string{rbac, `cannot create resource "rolebindings"`}},
			{escViewerA, "create a ConfigMap in their project", "RBAC", func() error {
				return viewerA.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "esc", Namespace: "esc-a-web"}})
			}, []string{rbac, `cannot create resource "configmaps"`}},
			{escViewerA, "read a Secret in their project", "RBAC", func() error {
				return viewerA.Get(ctx, types.NamespacedName{Namespace: "esc-a-web", Name: "any"}, &corev1.Secret{})
			}, []string{rbac, `cannot get resource "secrets"`}},
			{escViewerA, "acknowledge as the Editor of A", "webhook", func() error {
				return viewerA.Create(ctx, msgAck("esc-ack-vic", notice.Name, escEditorA))
			}, []string{"spec.user", notRecipientOrSelf}},
			{escViewerA, "list customers", "RBAC", func() error {
				return viewerA.List(ctx, &v1alpha1.CustomerList{})
			}, []string{rbac, `cannot list resource "customers"`}},

			// A member (Admin) of customer B, against customer A.
			{escMemberB, "read customer A", "RBAC", func() error {
				return memberB.Get(ctx, types.NamespacedName{Name: "esc-a"}, &v1alpha1.Customer{})
			}, []string{rbac, `cannot get resource "customers"`}},
			{escMemberB, "invite into customer A", "webhook", func() error {
				return memberB.Create(ctx, newMembership("esc-a-bea", "esc-a", escMemberB, v1alpha1.RoleAdmin, ""))
			}, []string{`"bea@esc-b.test" is not an Admin of customer "esc-a" (spec.customer)`}},
			{escMemberB, "delete a membership of customer A", "webhook", func() error {
				return memberB.Delete(ctx, vic.DeepCopy())
			}, []string{`"bea@esc-b.test" is not an Admin of customer "esc-a"`}},
			{escMemberB, "create a project of customer A", "webhook", func() error {
				return memberB.Create(ctx, newProject("esc-a-bea", "esc-a"))
			}, []string{`"bea@esc-b.test" is not an Admin of customer "esc-a"`}},
			{escMemberB, "list pods in customer A's project", "RBAC", func() error {
				return memberB.List(ctx, &corev1.PodList{}, client.InNamespace("esc-a-web"))
			}, []string{rbac, `cannot list resource "pods"`}},
			{escMemberB, "read customer A's message", "RBAC", func() error {
				return memberB.Get(ctx, client.ObjectKeyFromObject(notice), &v1alpha1.CustomerMessage{})
			}, []string{rbac, `cannot get resource "customermessages"`}},
			{escMemberB, "acknowledge customer A's message", "webhook", func() error {
				return memberB.Create(ctx, msgAck("esc-ack-bea", notice.Name, escMemberB))
			}, []string{`spec.message: CustomerMessage "esc-a-notice" does not exist, or its customer has no active member "bea@esc-b.test"`}},

			// Someone with namespace write rights who is no partner: admission alone.
			{escNSEditor, "label another team's namespace into customer A", "webhook", func() error {
				_, err := nsEditor.CoreV1().Namespaces().Update(ctx, escNamespaceWith("esc-team", "esc-a"), metav1.UpdateOptions{})
				return err
			}, []string{`only a partner may make the existing namespace "esc-team" a project of customer "esc-a"`}},
			{escNSEditor, "the same through namespaces/status", "webhook", func() error {
				_, err := nsEditor.CoreV1().Namespaces().UpdateStatus(ctx, escNamespaceWith("esc-team", "esc-a"), metav1.UpdateOptions{})
				return err
			}, []string{`only a partner may make the existing namespace "esc-team" a project of customer "esc-a"`}},
			{escNSEditor, "move project A to B through namespaces/finalize", "webhook", func() error {
				_, err := nsEditor.CoreV1().Namespaces().Finalize(ctx, escNamespaceWith("esc-a-web", "esc-b"), metav1.UpdateOptions{})
				return err
			}, []string{`only a partner may move namespace "esc-a-web" from customer "esc-a" to customer "esc-b"`}},
			{escNSEditor, "remove the customer label from project A", "webhook", func() error {
				_, err := nsEditor.CoreV1().Namespaces().Update(ctx, escNamespaceWith("esc-a-web", ""), metav1.UpdateOptions{})
				return err
			}, []string{`only a partner may remove label customers.partnerops.io/customer from namespace "esc-a-web"`}},
			{escNSEditor, "label default into customer A", "VAP", func() error {
				_, err := nsEditor.CoreV1().Namespaces().Update(ctx, escNamespaceWith("default", "esc-a"), metav1.UpdateOptions{})
				return err
			}, []string{`namespace "default" is a system namespace and cannot be a project`}},

			// An unrelated authenticated user.
			{escStranger, "read customer A", "RBAC", func() error {
				return stranger.Get(ctx, types.NamespacedName{Name: "esc-a"}, &v1alpha1.Customer{})
			}, []string{rbac, `cannot get resource "customers"`}},
			{escStranger, "create a customer", "RBAC", func() error {
				return stranger.Create(ctx, newCustomer("esc-mine", "Mine"))
			}, []string{rbac, `cannot create resource "customers"`}},
			{escStranger, "invite themselves into customer A", "RBAC", func() error {
				return stranger.Create(ctx, newMembership("esc-a-sam", "esc-a", escStranger, v1alpha1.RoleAdmin, v1alpha1.InvitationNone))
			}, []string{rbac, `cannot create resource "customermemberships"`}},
			{escStranger, "create a project of customer A", "RBAC", func() error {
				return stranger.Create(ctx, newProject("esc-a-sam", "esc-a"))
			}, []string{rbac, `cannot create resource "namespaces"`}},
			{escStranger, "acknowledge customer A's message", "RBAC", func() error {
				return stranger.Create(ctx, msgAck("esc-ack-sam", notice.Name, escStranger))
			}, []string{rbac, `cannot create resource "messageacknowledgements"`}},
			{escStranger, "read customer A's quota", "RBAC", func() error {
				return stranger.Get(ctx, types.NamespacedName{Name: "esc-a"}, &v1alpha1.CustomerQuota{})
			}, []string{rbac, `cannot get resource "customerquotas"`}},
		}

		By(fmt.Sprintf("trying %d escalations", len(rows)))
		results := make([]escResult, 0, len(rows))
		for _, row := range rows {
			err := row.do()
			r := escResult{row: row}
			if err != nil {
				r.message = err.Error()
				if status, isStatus := err.(apierrors.APIStatus); isStatus {
					r.code = status.Status().Code
				}
			} else {
				r.message = "ALLOWED"
			}
			refused := apierrors.IsForbidden(err) || apierrors.IsInvalid(err)
			r.ok = refused && refusedBy(row.layer, r.message)
			for _, w := range row.want {
				r.ok = r.ok && strings.Contains(r.message, w)
			}
			results = append(results, r)
		}
		table := escMarkdown(results)
		GinkgoWriter.Println(table)
		AddReportEntry("escalation matrix", table, ReportEntryVisibilityAlways)

		By("checking that nothing changed")
		c := &v1alpha1.Customer{}
		Expect(admin.Get(ctx, types.NamespacedName{Name: "esc-b"}, c)).To(Succeed())
		Expect(c.Spec.DisplayName).To(Equal("Escalation B"))
		q := &v1alpha1.CustomerQuota{}
		Expect(admin.Get(ctx, types.NamespacedName{Name: "esc-a"}, q)).To(Succeed())
		Expect(*q.Spec.MaxProjects).To(Equal(int32(5)))
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(bea), &v1alpha1.CustomerMembership{})).To(Succeed())
		Expect(pqProjectNames("esc-a")).To(ConsistOf("esc-a-web"))
		Expect(pqProjectNames("esc-b")).To(ConsistOf("esc-b-web"))
		for _, name := range []string{"kube-system", "default", "esc-team"} {
			ns := &corev1.Namespace{}
			Expect(admin.Get(ctx, types.NamespacedName{Name: name}, ns)).To(Succeed())
			Expect(ns.Labels).NotTo(HaveKey(v1alpha1.CustomerLabel), name)
		}

		for _, r := range results {
			Expect(r.ok).To(BeTrue(), "%s: %q must be refused (by %s) with a message containing %q; got %d %s",
				r.row.actor, r.row.attempt, r.row.layer, r.row.want, r.code, r.message)
		}

		By("letting the partner, and only the partner, give a membership a ServiceAccount's username (DESIGN.md)")
		const deployer = "system:serviceaccount:esc-a-web:deployer"
		ci := withUsername(newMembership("esc-a-ci", "esc-a", "ci@esc-a.test", v1alpha1.RoleEditor, v1alpha1.InvitationNone), deployer)
		Expect(partner.Create(ctx, ci)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, ci))).To(Succeed()) })
		Eventually(canCreateDeployments(deployer, "esc-a-web"), "10s").Should(BeTrue(), "the ServiceAccount is an Editor of A's projects")
	})
})
