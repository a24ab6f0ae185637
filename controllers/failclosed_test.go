package controllers_test

import (
	"net/url"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	gomegatypes "github.com/onsi/gomega/types"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// withWebhooksDown runs f while the API server cannot reach the operator's webhook
// server: every webhook's clientConfig points at a port where nothing listens (as
// when every replica is down or unreachable), and is restored afterwards, also when
// f fails. The manager itself keeps running, so this is what the API server sees.
func withWebhooksDown(f func()) {
	GinkgoHelper()
	var list admissionregistrationv1.ValidatingWebhookConfigurationList
	Expect(admin.List(ctx, &list)).To(Succeed())
	for i := range list.Items {
		cfg := &list.Items[i]
		if !strings.HasPrefix(cfg.Name, "customer-operator") && cfg.Name != "validating-webhook-configuration" {
			continue
		}
		original := cfg.DeepCopy().Webhooks
		changed := false
		for j := range cfg.Webhooks {
			cc := &cfg.Webhooks[j].ClientConfig
			if cc.URL == nil {
				continue
			}
			u, err := url.Parse(*cc.URL)
			Expect(err).NotTo(HaveOccurred())
			u.Host = "127.0.0.1:1" // nothing listens on port 1
			cc.URL = ptr.To(u.String())
			changed = true
		}
		if !changed {
			continue
		}
		Expect(admin.Update(ctx, cfg)).To(Succeed())
		name := cfg.Name
		defer func() {
			restored := &admissionregistrationv1.ValidatingWebhookConfiguration{}
			Expect(admin.Get(ctx, types.NamespacedName{Name: name}, restored)).To(Succeed())
			restored.Webhooks = original
			Expect(admin.Update(ctx, restored)).To(Succeed())
		}()
	}
	f()
}

// failedCallingWebhook matches the API server's refusal when a webhook with
// failurePolicy Fail cannot be reached.
func failedCallingWebhook(name string) gomegatypes.GomegaMatcher {
	return MatchError(ContainSubstring(`failed calling webhook "` + name + `"`))
}

var _ = Describe("Fail-closed admission", func() {
	It("refuses projects, keeps identifiers immutable and system namespaces writable while the webhook server is unreachable", func() {
		const customer = "fc-acme"
		pqSetup() // binds pqPartner to customer-operator-partner
		createCustomer(customer, "Fail Closed")
		q := &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: customer},
			Spec: v1alpha1.CustomerQuotaSpec{Customer: customer, MaxProjects: ptr.To[int32](1)}}
		Expect(admin.Create(ctx, q)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, q))).To(Succeed()) })
		createProject("fc-acme-web", customer)
		m := createMembership(newMembership("fc-acme-dana", customer, "dana@fc.test", v1alpha1.RoleViewer, v1alpha1.InvitationEmail))
		gil := createMembership(newMembership("fc-acme-gil", customer, "gil@fc.test", v1alpha1.RoleAdmin, v1alpha1.InvitationNone))
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(gil), gil)).To(Succeed())
			g.Expect(meta.IsStatusConditionTrue(gil.Status.Conditions, v1alpha1.ReadyCondition)).To(BeTrue(), "the Admin's access is granted")
		}).Should(Succeed())
		pqCustomerEventually(customer, func(g Gomega, c *v1alpha1.Customer) { g.Expect(c.Status.Projects).To(Equal(int32(1))) })
		By("the quota is full: the webhook refuses the next project")
		pqDenied(admin.Create(ctx, newProject("fc-acme-api", customer), client.DryRunAll), `customer "fc-acme" has 1 of 1 projects`)

		withWebhooksDown(func() {
			By("refusing every project create, over quota or not (failurePolicy Fail)")
			Eventually(func() error {
				return admin.Create(ctx, newProject("fc-acme-api", customer))
			}).Should(failedCallingWebhook("vnamespace.customers.partnerops.io"))
			Expect(pqClient(pqPartner).Create(ctx, newProject("fc-acme-api", customer))).
				To(failedCallingWebhook("vnamespace.customers.partnerops.io"), "a partner too")
			By("letting partners create plain namespaces, which the webhook would admit anyway (matchConditions)")
			team := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fc-team"}}
			Expect(admin.Create(ctx, team)).To(Succeed(), "a down operator must not stop cluster administrators")
			DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, team))).To(Succeed()) })
			By("and anyone else who could not be a customer's Admin (no right to create memberships): a CI bot")
			pqBind("fay@fc.test", "pqtest-create-namespaces")
			fay := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fc-fay"}}
			Expect(pqClient("fay@fc.test").Create(ctx, fay)).To(Succeed())
			DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, fay))).To(Succeed()) })
			By("while the plain namespace of a customer's Admin goes to the webhook, and fails closed")
			Expect(pqClient("gil@fc.test").Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fc-gil"}})).
				To(failedCallingWebhook("vnamespace.customers.partnerops.io"))
			By("refusing to label an existing namespace into the customer")
			team.Labels = map[string]string{v1alpha1.CustomerLabel: customer}
			Expect(admin.Update(ctx, team)).To(failedCallingWebhook("vnamespace.customers.partnerops.io"))

			By("keeping identifiers and references immutable (CEL runs inside the API server)")
			err := admin.Patch(ctx, &v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: customer}},
				client.RawPatch(types.MergePatchType, []byte(`{"spec":{"identifier":"fc-other"}}`)))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
			Expect(err.Error()).To(ContainSubstring("spec.identifier is immutable"))
			Expect(admin.Patch(ctx, &v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: customer}},
				client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"fc-test":"written"}}}`)))).
				To(Succeed(), "an update that leaves spec alone (labels, the operator's finalizer) does not call the webhook")
			err = admin.Patch(ctx, m, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"customer":"fc-other"}}`)))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
			Expect(err.Error()).To(ContainSubstring("spec.customer is immutable"))
			err = admin.Patch(ctx, m, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"invitation":"None"}}`)))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
			Expect(err.Error()).To(ContainSubstring("spec.invitation is immutable"))
			err = admin.Patch(ctx, q, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"customer":"fc-other"}}`)))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
			Expect(err.Error()).To(ContainSubstring("spec.customer is immutable"))

			By("keeping kube-system, default and the operator's namespace writable (matchConditions exclude them)")
			for _, name := range []string{"kube-system", "default", "customer-operator-system"} {
				Expect(admin.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}},
					client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"fc-test":"written"}}}`)))).
					To(Succeed(), "namespace %s must stay writable without the webhook", name)
			}
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "fc-probe", Namespace: "kube-system"}}
			Expect(admin.Create(ctx, cm)).To(Succeed())
			Expect(admin.Delete(ctx, cm)).To(Succeed())
			By("while the ValidatingAdmissionPolicy, inside the API server, still keeps them out of customers")
			err = admin.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
				client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"customers.partnerops.io/customer":"fc-acme"}}}`)))
			Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
			Expect(err.Error()).To(ContainSubstring(`namespace "default" is a system namespace and cannot be a project`))
		})
		for _, name := range []string{"kube-system", "default", "customer-operator-system"} {
			Expect(admin.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}},
				client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"fc-test":null}}}`)))).To(Succeed())
		}

		By("answering from the webhook again once it is reachable")
		Eventually(func() error {
			return admin.Create(ctx, newProject("fc-acme-api", customer), client.DryRunAll)
		}).Should(MatchError(ContainSubstring(`customer "fc-acme" has 1 of 1 projects`)))

		By("nothing got in while it was down")
		Expect(pqProjectNames(customer)).To(ConsistOf("fc-acme-web"))
		Expect(apierrors.IsNotFound(admin.Get(ctx, types.NamespacedName{Name: "fc-gil"}, &corev1.Namespace{}))).To(BeTrue(),
			"the Admin's plain namespace")
	})
})
