package controllers_test

import (
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/status"
)

// The access a member has, as the API server's authorizer answers it.
func canCreateDeployments(user, project string) func() bool {
	return func() bool { return canI(user, "create", "apps", "deployments", project, "") }
}

func canGetPods(user, project string) func() bool {
	return func() bool { return canI(user, "get", "", "pods", project, "") }
}

var _ = Describe("Access", func() {
	It("grants a None membership at once, follows role changes and new projects, and revokes on delete", func() {
		const user = "hank@example.com"
		createCustomer("access-co", "Access Co")
		createProject("access-co-web", "access-co")
		m := createMembership(newMembership("access-co-hank", "access-co", user, v1alpha1.RoleViewer, v1alpha1.InvitationNone))

		By("making it active at once, without an e-mail")
		expectCondition(m.Name, v1alpha1.AcceptedCondition, metav1.ConditionTrue, v1alpha1.AddedDirectlyReason)
		expectCondition(m.Name, v1alpha1.InvitedCondition, metav1.ConditionFalse, v1alpha1.InvitationNotRequiredReason)
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)

		By("granting view in the project, and get by name on the customer and its quota, nothing more")
		// Ready means the bindings are written; the API server's authorizer reads them
		// from its own informer a moment later.
		Eventually(canGetPods(user, "access-co-web"), "3s").Should(BeTrue(), "Ready means access was granted")
		Expect(canCreateDeployments(user, "access-co-web")()).To(BeFalse())
		Expect(canI(user, "get", v1alpha1.GroupName, "customers", "", "access-co")).To(BeTrue())
		Expect(canI(user, "get", v1alpha1.GroupName, "customerquotas", "", "access-co")).To(BeTrue())
		Expect(canI(user, "get", v1alpha1.GroupName, "customers", "", "other-co")).To(BeFalse())
		Expect(canI(user, "list", v1alpha1.GroupName, "customers", "", "")).To(BeFalse())
		Expect(canI(user, "create", v1alpha1.GroupName, "messageacknowledgements", "", "")).To(BeTrue())
		Expect(canI(user, "create", "", "namespaces", "", "")).To(BeFalse(), "only Admins create projects")
		Expect(canI(user, "delete", "", "namespaces", "access-co-web", "access-co-web")).To(BeFalse())
		Expect(mailsTo(user)()).To(BeEmpty())

		By("granting get on a new message by name")
		msg := &v1alpha1.CustomerMessage{
			ObjectMeta: metav1.ObjectMeta{Name: "access-co-notice"},
			Spec:       v1alpha1.CustomerMessageSpec{Customer: "access-co", Title: "Maintenance", Body: "Tonight."},
		}
		Expect(admin.Create(ctx, msg)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, msg))).To(Succeed()) })
		Eventually(func() bool {
			return canI(user, "get", v1alpha1.GroupName, "customermessages", "", "access-co-notice")
		}).Should(BeTrue())
		Expect(canI(user, "get", v1alpha1.GroupName, "customermessages", "", "someone-elses")).To(BeFalse())

		By("rebinding on a role change")
		Expect(admin.Patch(ctx, &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: m.Name}},
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"role":"Admin"}}`)))).To(Succeed())
		Eventually(canCreateDeployments(user, "access-co-web")).Should(BeTrue())
		Eventually(func() bool { return canI(user, "create", "", "namespaces", "", "") }).Should(BeTrue())
		Expect(canI(user, "delete", "", "namespaces", "access-co-web", "access-co-web")).To(BeTrue())
		Expect(canI(user, "delete", "", "namespaces", "kube-system", "kube-system")).To(BeFalse())
		Expect(canI(user, "get", v1alpha1.GroupName, "customermemberships", "", m.Name)).To(BeTrue())
		Eventually(func(g Gomega) {
			var rb rbacv1.RoleBinding
			err := admin.Get(ctx, types.NamespacedName{Namespace: "access-co-web", Name: "customer-operator:access-co:view"}, &rb)
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the Viewer binding is gone: %v", err)
		}).Should(Succeed())

		By("binding the members in a new project")
		createProject("access-co-api", "access-co")
		Eventually(canCreateDeployments(user, "access-co-api")).Should(BeTrue())

		By("putting back a binding edited by hand")
		var rb rbacv1.RoleBinding
		key := types.NamespacedName{Namespace: "access-co-api", Name: "customer-operator:access-co:admin"}
		Expect(admin.Get(ctx, key, &rb)).To(Succeed())
		rb.Subjects = append(rb.Subjects, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "mallory"})
		Expect(admin.Update(ctx, &rb)).To(Succeed())
		edited := rb.ResourceVersion
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, key, &rb)).To(Succeed())
			g.Expect(rb.ResourceVersion).NotTo(Equal(edited), "the operator rewrote the binding")
			g.Expect(rb.Subjects).NotTo(ContainElement(HaveField("Name", "mallory")))
		}).Should(Succeed())
		Expect(rb.Subjects).To(ContainElement(HaveField("Name", user)), "the member stays")
		// The API server's RBAC authorizer reads bindings from its own informer, a
		// moment behind the binding a GET returns.
		Eventually(canCreateDeployments("mallory", "access-co-api")).Should(BeFalse())
		Consistently(canCreateDeployments("mallory", "access-co-api"), "2s").Should(BeFalse())

		By("revoking everything when the membership is deleted")
		Expect(admin.Delete(ctx, m)).To(Succeed())
		Eventually(canGetPods(user, "access-co-web")).Should(BeFalse())
		Eventually(canGetPods(user, "access-co-api")).Should(BeFalse())
		Eventually(func() bool { return canI(user, "get", v1alpha1.GroupName, "customers", "", "access-co") }).Should(BeFalse())
		Eventually(func(g Gomega) {
			var crbs rbacv1.ClusterRoleBindingList
			g.Expect(admin.List(ctx, &crbs, client.MatchingLabels{v1alpha1.CustomerLabel: "access-co"})).To(Succeed())
			g.Expect(crbs.Items).To(BeEmpty())
			var crs rbacv1.ClusterRoleList
			g.Expect(admin.List(ctx, &crs, client.MatchingLabels{v1alpha1.CustomerLabel: "access-co"})).To(Succeed())
			g.Expect(crs.Items).To(BeEmpty())
			var rbs rbacv1.RoleBindingList
			g.Expect(admin.List(ctx, &rbs, client.MatchingLabels{v1alpha1.CustomerLabel: "access-co"})).To(Succeed())
			g.Expect(rbs.Items).To(BeEmpty())
		}).Should(Succeed())
	})

	It("grants nothing before acceptance", func() {
		const user = "ivy@example.com"
		createCustomer("pending-co", "Pending Co")
		createProject("pending-co-web", "pending-co")
		m := createMembership(newMembership("pending-co-ivy", "pending-co", user, v1alpha1.RoleAdmin, v1alpha1.InvitationEmail))
		expectCondition(m.Name, v1alpha1.InvitedCondition, metav1.ConditionTrue, v1alpha1.InvitationSentReason)
		Consistently(canGetPods(user, "pending-co-web"), "2s").Should(BeFalse())
		Expect(canI(user, "create", "", "namespaces", "", "")).To(BeFalse())
		Expect(canI(user, "get", v1alpha1.GroupName, "customers", "", "pending-co")).To(BeFalse())
	})

	It("lets the older of two memberships for one e-mail win; the duplicate gets Ready=False, Duplicate, and grants nothing", func() {
		const user = "jack@example.com"
		createCustomer("dup-co", "Dup Co")
		createProject("dup-co-web", "dup-co")
		older := createMembership(newMembership("dup-co-jack", "dup-co", user, v1alpha1.RoleViewer, v1alpha1.InvitationNone))
		expectCondition(older.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)

		By("refusing a visible duplicate at admission, naming the field and the existing membership")
		err := admin.Create(ctx, newMembership("dup-co-jack-2", "dup-co", "JACK@example.com", v1alpha1.RoleAdmin, v1alpha1.InvitationNone))
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.email"))
		Expect(err.Error()).To(ContainSubstring(`already has a membership for this e-mail (CustomerMembership "dup-co-jack")`))

		By("marking one that raced past admission as a duplicate")
		var newer *v1alpha1.CustomerMembership
		withoutWebhook("vcustomermembership.customers.partnerops.io", func() {
			newer = newMembership("dup-co-jack-2", "dup-co", "jack@example.com", v1alpha1.RoleAdmin, v1alpha1.InvitationNone)
			// The API server picks up the changed webhook configuration asynchronously.
			Eventually(func() error { return admin.Create(ctx, newer) }).Should(Succeed())
			DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, newer))).To(Succeed()) })
		})
		expectCondition(newer.Name, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.DuplicateReason)
		expectCondition(newer.Name, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.DuplicateReason)
		Consistently(canCreateDeployments(user, "dup-co-web"), "2s").Should(BeFalse(), "the duplicate's Admin role is not granted")
		Expect(canGetPods(user, "dup-co-web")()).To(BeTrue(), "the original's Viewer role is")
		Eventually(func(g Gomega) {
			var c v1alpha1.Customer
			g.Expect(admin.Get(ctx, types.NamespacedName{Name: "dup-co"}, &c)).To(Succeed())
			g.Expect(c.Status.Members).To(Equal(int32(1)))
		}).Should(Succeed())

		By("handing over to the duplicate when the original is deleted")
		Expect(admin.Delete(ctx, older)).To(Succeed())
		expectCondition(newer.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)
		Eventually(canCreateDeployments(user, "dup-co-web")).Should(BeTrue())
	})

	It("makes anew a project binding that a customer's Admin re-made with another role, and still removes members", func() {
		const eve, bob = "eve-rb@example.com", "bob-rb@example.com"
		createCustomer("rebind-co", "Rebind Co")
		createProject("rebind-co-web", "rebind-co")
		eveM := createMembership(newMembership("rebind-co-eve", "rebind-co", eve, v1alpha1.RoleAdmin, v1alpha1.InvitationNone))
		Eventually(canCreateDeployments(eve, "rebind-co-web")).Should(BeTrue())

		By("letting the Admin make, before there are Viewers, the Viewer binding's name bound to edit (RBAC allows it)")
		var adminBinding rbacv1.RoleBinding
		Expect(admin.Get(ctx, types.NamespacedName{Namespace: "rebind-co-web", Name: "customer-operator:rebind-co:admin"}, &adminBinding)).To(Succeed())
		Expect(adminBinding.Subjects).To(HaveLen(1))
		bobSubject := adminBinding.Subjects[0]
		bobSubject.Name = strings.Replace(bobSubject.Name, eve, bob, 1)
		key := types.NamespacedName{Namespace: "rebind-co-web", Name: "customer-operator:rebind-co:view"}
		Expect(clientAs(eve).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
			Subjects:   []rbacv1.Subject{bobSubject},
		})).To(Succeed())
		Eventually(canCreateDeployments(bob, "rebind-co-web")).Should(BeTrue(), "the precondition: bob may edit through it")

		By("adding a Viewer: the binding of that name is deleted and made anew with its role (roleRef cannot be updated)")
		createMembership(newMembership("rebind-co-bob", "rebind-co", bob, v1alpha1.RoleViewer, v1alpha1.InvitationNone))
		Eventually(func(g Gomega) {
			var rb rbacv1.RoleBinding
			g.Expect(admin.Get(ctx, key, &rb)).To(Succeed())
			g.Expect(rb.RoleRef.Name).To(Equal("view"))
			g.Expect(rb.Labels).To(HaveKeyWithValue(v1alpha1.CustomerLabel, "rebind-co"))
		}).Should(Succeed())
		Eventually(canCreateDeployments(bob, "rebind-co-web")).Should(BeFalse())
		Expect(canGetPods(bob, "rebind-co-web")()).To(BeTrue())

		By("revoking the Admin's access when her membership is deleted")
		Expect(admin.Delete(ctx, eveM)).To(Succeed())
		Eventually(canCreateDeployments(eve, "rebind-co-web")).Should(BeFalse())
		Eventually(func() bool { return canI(eve, "get", v1alpha1.GroupName, "customers", "", "rebind-co") }).Should(BeFalse())
		Eventually(func() bool { return canI(eve, "create", "", "namespaces", "", "") }).Should(BeFalse())
	})

	It("reads a role change as granted only once the project bindings follow it", func() {
		const user = "rhea@example.com"
		createCustomer("role-co", "Role Co")
		createProject("role-co-web", "role-co")
		m := createMembership(newMembership("role-co-rhea", "role-co", user, v1alpha1.RoleEditor, v1alpha1.InvitationNone))
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)
		Expect(canCreateDeployments(user, "role-co-web")()).To(BeTrue())

		By("holding back the project's view binding with an admission policy")
		viewBinding := "customer-operator:role-co:view"
		holdBack(viewBinding)

		By("changing the role to Viewer: the member binding still lists her, but Ready waits for the project")
		Expect(admin.Patch(ctx, &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: m.Name}},
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"role":"Viewer"}}`)))).To(Succeed())
		readyFor := func(g Gomega) (int64, *metav1.Condition) {
			current := getMembership(g, m.Name)
			return current.Generation, status.Get(current, v1alpha1.ReadyCondition)
		}
		Eventually(func(g Gomega) {
			generation, ready := readyFor(g)
			g.Expect(ready.ObservedGeneration).To(Equal(generation))
			g.Expect(ready.Status).To(Equal(metav1.ConditionFalse), ready.Message)
			g.Expect(ready.Reason).To(Equal(v1alpha1.GrantingAccessReason))
			g.Expect(ready.Message).To(ContainSubstring("Viewer"))
		}).Should(Succeed())
		Eventually(canCreateDeployments(user, "role-co-web")).Should(BeFalse(), "the edit binding is pruned all the same")
		Consistently(func(g Gomega) {
			_, ready := readyFor(g)
			g.Expect(ready.Status).NotTo(Equal(metav1.ConditionTrue), "Ready while she cannot read the project: %s", ready.Message)
		}, "3s").Should(Succeed())
		Expect(canGetPods(user, "role-co-web")()).To(BeFalse(), "the precondition: the view binding is held back")

		By("letting the binding through: Ready comes with the Viewer's access")
		releaseHoldBack(viewBinding)
		Eventually(func(g Gomega) {
			generation, ready := readyFor(g)
			g.Expect(ready.ObservedGeneration).To(Equal(generation))
			g.Expect(ready.Status).To(Equal(metav1.ConditionTrue), ready.Message)
		}).Should(Succeed())
		Expect(canGetPods(user, "role-co-web")()).To(BeTrue(), "Ready means access was granted")
		Expect(canCreateDeployments(user, "role-co-web")()).To(BeFalse())
	})

	It("never binds members in a system namespace, even one labelled for the customer before the policy existed", func() {
		const user = "sid@example.com"
		createCustomer("sysns-co", "Sysns Co")
		createMembership(newMembership("sysns-co-sid", "sysns-co", user, v1alpha1.RoleAdmin, v1alpha1.InvitationNone))

		By("labelling kube-public for the customer while the no-system-projects policy is not bound")
		binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
		Expect(admin.Get(ctx, types.NamespacedName{Name: "customer-operator-no-system-projects"}, binding)).To(Succeed())
		Expect(admin.Delete(ctx, binding)).To(Succeed())
		DeferCleanup(func() {
			restored := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
				ObjectMeta: metav1.ObjectMeta{Name: binding.Name, Labels: binding.Labels},
				Spec:       binding.Spec,
			}
			Expect(admin.Create(ctx, restored)).To(Succeed())
			// The API server loads policies asynchronously: wait until it refuses
			// the label again, so that later specs see the policy.
			Eventually(func() error {
				return admin.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-public"}},
					client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"customers.partnerops.io/customer":"sysns-co"}}}`)),
					client.DryRunAll)
			}).Should(MatchError(ContainSubstring("is a system namespace and cannot be a project")))
		})
		Eventually(func() error {
			return admin.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-public"}},
				client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"customers.partnerops.io/customer":"sysns-co"}}}`)))
		}).Should(Succeed())
		DeferCleanup(func() {
			Expect(admin.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-public"}},
				client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"customers.partnerops.io/customer":null}}}`)))).To(Succeed())
		})

		By("binding the members in the customer's real project, made after the label")
		createProject("sysns-co-web", "sysns-co")
		Eventually(canCreateDeployments(user, "sysns-co-web")).Should(BeTrue())

		By("and in kube-public not at all")
		Expect(canGetPods(user, "kube-public")()).To(BeFalse())
		var rbs rbacv1.RoleBindingList
		Expect(admin.List(ctx, &rbs, client.InNamespace("kube-public"), client.MatchingLabels{v1alpha1.CustomerLabel: "sysns-co"})).To(Succeed())
		Expect(rbs.Items).To(BeEmpty())
		Eventually(func(g Gomega) {
			var c v1alpha1.Customer
			g.Expect(admin.Get(ctx, types.NamespacedName{Name: "sysns-co"}, &c)).To(Succeed())
			g.Expect(c.Status.Projects).To(Equal(int32(1)))
		}).Should(Succeed())
	})
})

// DESIGN.md: when a Customer goes, everything the operator made for it goes too, and
// its memberships (the user's objects) stay, report CustomerNotFound and grant
// nothing; when it comes back they resume.
var _ = Describe("Access when the customer goes", func() {
	It("takes every grant away with the customer, and gives it back when the customer returns", func() {
		const user = "kim@gone.example"
		createCustomer("access-gone", "Access Gone")
		m := createMembership(newMembership("access-gone-kim", "access-gone", user, v1alpha1.RoleAdmin, v1alpha1.InvitationNone))
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)
		canReadCustomer := func() bool { return canI(user, "get", v1alpha1.GroupName, "customers", "", "access-gone") }
		canCreateProjects := func() bool { return canI(user, "create", "", "namespaces", "", "") }
		Eventually(canReadCustomer, "3s").Should(BeTrue())
		Expect(canCreateProjects()).To(BeTrue())
		operatorRBAC := func(g Gomega) []string {
			var names []string
			selector := client.MatchingLabels{v1alpha1.CustomerLabel: "access-gone"}
			var roles rbacv1.ClusterRoleList
			g.Expect(admin.List(ctx, &roles, selector)).To(Succeed())
			for _, r := range roles.Items {
				names = append(names, "ClusterRole "+r.Name)
			}
			var bindings rbacv1.ClusterRoleBindingList
			g.Expect(admin.List(ctx, &bindings, selector)).To(Succeed())
			for _, b := range bindings.Items {
				names = append(names, "ClusterRoleBinding "+b.Name)
			}
			return names
		}
		Expect(operatorRBAC(Default)).NotTo(BeEmpty(), "the operator's RBAC for the customer, found by its label")

		By("deleting the customer (it has no projects)")
		Expect(admin.Delete(ctx, newCustomer("access-gone", "Access Gone"))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(admin.Get(ctx, types.NamespacedName{Name: "access-gone"}, &v1alpha1.Customer{}))
		}, "10s").Should(BeTrue())
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.CustomerNotFoundReason)
		Eventually(operatorRBAC).Should(BeEmpty(), "everything the operator made for the customer is gone")
		Eventually(canReadCustomer, "3s").Should(BeFalse())
		Eventually(canCreateProjects, "3s").Should(BeFalse())
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(m), &v1alpha1.CustomerMembership{})).To(Succeed(), "the membership is the user's: it stays")

		By("creating the customer again: the membership resumes")
		createCustomer("access-gone", "Access Gone")
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)
		Eventually(canReadCustomer, "3s").Should(BeTrue())
		Expect(canCreateProjects()).To(BeTrue())
	})
})

var _ = Describe("CustomerMembership admission", func() {
	const annAdmin = "ann@a.example"

	// Ann is an active Admin of customer adm-a (invitation None, made by a partner).
	BeforeEach(func() {
		createCustomer("adm-a", "Admission A")
		createCustomer("adm-b", "Admission B")
		m := createMembership(newMembership("adm-a-ann", "adm-a", annAdmin, v1alpha1.RoleAdmin, v1alpha1.InvitationNone))
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)
	})

	It("lets a customer's Admin invite, change and remove members of that customer only", func() {
		ann := clientAs(annAdmin)

		By("creating, updating and deleting a membership of her own customer")
		own := newMembership("adm-a-bob", "adm-a", "bob@a.example", v1alpha1.RoleViewer, "")
		Expect(ann.Create(ctx, own)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, own))).To(Succeed()) })
		Eventually(func() error {
			return ann.Get(ctx, client.ObjectKeyFromObject(own), &v1alpha1.CustomerMembership{})
		}).Should(Succeed(), "she may read her customer's memberships by name")
		Expect(ann.Patch(ctx, own, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"role":"Editor"}}`)))).To(Succeed())
		Expect(ann.Delete(ctx, own)).To(Succeed())

		By("being refused for another customer on create")
		foreign := newMembership("adm-b-carl", "adm-b", "carl@b.example", v1alpha1.RoleAdmin, "")
		err := ann.Create(ctx, foreign)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring(`"ann@a.example" is not an Admin of customer "adm-b" (spec.customer)`))

		By("being refused for another customer's membership on update and delete")
		existing := createMembership(newMembership("adm-b-dora", "adm-b", "dora@b.example", v1alpha1.RoleViewer, ""))
		err = ann.Patch(ctx, existing, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"role":"Admin"}}`)))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring(`not an Admin of customer "adm-b"`))
		err = ann.Delete(ctx, existing)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring(`not an Admin of customer "adm-b"`))
		err = ann.Get(ctx, client.ObjectKeyFromObject(existing), &v1alpha1.CustomerMembership{})
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "RBAC gives her no read on other customers' memberships: %v", err)
		Expect(admin.Get(ctx, client.ObjectKeyFromObject(existing), existing)).To(Succeed())
		Expect(existing.Spec.Role).To(Equal(v1alpha1.RoleViewer))
	})

	DescribeTable("refuses a customer's Admin the fields only partners may set, naming the field",
		func(m *v1alpha1.CustomerMembership, wantField, wantRule string) {
			err := clientAs(annAdmin).Create(ctx, m)
			Expect(err).To(HaveOccurred())
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
			Expect(err.Error()).To(ContainSubstring(wantField))
			Expect(err.Error()).To(ContainSubstring(wantRule))
		},
		Entry("invitation None", newMembership("adm-a-none", "adm-a", "eve@a.example", v1alpha1.RoleViewer, v1alpha1.InvitationNone),
			"spec.invitation", "only partners may create memberships with invitation None"),
		Entry("another username", func() *v1alpha1.CustomerMembership {
			m := newMembership("adm-a-user", "adm-a", "eve@a.example", v1alpha1.RoleViewer, "")
			m.Spec.Username = "root"
			return m
		}(), "spec.username", `only partners may set a username other than the default "eve@a.example"`),
		Entry("a system: name", func() *v1alpha1.CustomerMembership {
			m := newMembership("adm-a-system", "adm-a", "eve@a.example", v1alpha1.RoleViewer, "")
			m.Spec.Username = "system:kube-controller-manager"
			return m
		}(), "spec.username", `must not start with "system:"`),
	)

	It("refuses a non-member outright", func() {
		err := clientAs("stranger@example.com").Create(ctx, newMembership("adm-a-x", "adm-a", "x@example.com", v1alpha1.RoleViewer, ""))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "RBAC: %v", err)
	})

	It("lets a partner add themselves with invitation None, and keeps spec.invitation immutable", func() {
		const partner = "pat@partner.example"
		bindPartner(partner)
		m := newMembership("adm-a-pat", "adm-a", partner, v1alpha1.RoleAdmin, v1alpha1.InvitationNone)
		Expect(clientAs(partner).Create(ctx, m)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, m))).To(Succeed()) })
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)

		By("refusing Email→None, which would skip acceptance (CEL, so it holds without the webhook)")
		invited := createMembership(newMembership("adm-a-fay", "adm-a", "fay@a.example", v1alpha1.RoleViewer, v1alpha1.InvitationEmail))
		err := admin.Patch(ctx, invited, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"invitation":"None"}}`)))
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.invitation is immutable"))
		withoutWebhook("vcustomermembership.customers.partnerops.io", func() {
			Consistently(func(g Gomega) {
				err := admin.Patch(ctx, invited, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"invitation":"None"}}`)))
				g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
				g.Expect(err.Error()).To(ContainSubstring("spec.invitation is immutable"))
			}, "2s").Should(Succeed())
		})
	})
})

// holdBack makes the API server refuse every create and update of RoleBindings
// named name (a ValidatingAdmissionPolicy, removed after the spec or by
// releaseHoldBack), and waits until it does: policies load asynchronously.
func holdBack(name string) {
	GinkgoHelper()
	policyName := holdBackPolicyName(name)
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
						Rule: admissionregistrationv1.Rule{
							APIGroups: []string{rbacv1.GroupName}, APIVersions: []string{"v1"}, Resources: []string{"rolebindings"},
						},
					},
				}},
			},
			Validations: []admissionregistrationv1.Validation{{
				Expression: fmt.Sprintf("object.metadata.name != %q", name),
				Message:    "held back by the test",
			}},
		},
	}
	Expect(admin.Create(ctx, policy)).To(Succeed())
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policyName},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policyName,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	Expect(admin.Create(ctx, binding)).To(Succeed())
	DeferCleanup(func() { releaseHoldBack(name) })
	probe := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
	}
	Eventually(func() error { return admin.Create(ctx, probe.DeepCopy(), client.DryRunAll) }).
		Should(MatchError(ContainSubstring("held back by the test")))
}

// releaseHoldBack removes holdBack's policy and waits until the API server lets
// such a binding through again.
func releaseHoldBack(name string) {
	GinkgoHelper()
	policyName := holdBackPolicyName(name)
	Expect(client.IgnoreNotFound(admin.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: policyName}}))).To(Succeed())
	Expect(client.IgnoreNotFound(admin.Delete(ctx, &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: policyName}}))).To(Succeed())
	probe := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
	}
	Eventually(func() error { return admin.Create(ctx, probe.DeepCopy(), client.DryRunAll) }).Should(Succeed())
}

func holdBackPolicyName(name string) string {
	return "test-hold-back-" + strings.ReplaceAll(name, ":", "-")
}
