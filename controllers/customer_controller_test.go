package controllers_test

import (
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

func newCustomer(name, displayName string) *v1alpha1.Customer {
	return &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.CustomerSpec{Identifier: name, DisplayName: displayName},
	}
}

func newProject(name, customer string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   name,
		Labels: map[string]string{v1alpha1.CustomerLabel: customer},
	}}
}

// kstatusOf computes what Flux (kstatus) would say of obj.
func kstatusOf(obj client.Object) status.Status {
	GinkgoHelper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	Expect(err).NotTo(HaveOccurred())
	res, err := status.Compute(&unstructuredObj{Object: u})
	Expect(err).NotTo(HaveOccurred())
	return res.Status
}

func readyCondition(obj interface{ GetConditions() []metav1.Condition }) *metav1.Condition {
	return apimeta.FindStatusCondition(obj.GetConditions(), v1alpha1.ReadyCondition)
}

var _ = Describe("Customer", func() {
	It("becomes Ready, counts its projects, and reads as Current to kstatus", func() {
		customerHook := map[string]string{"webhook": "/validate-customers-partnerops-io-v1alpha1-customer", "code": "200"}
		calls := counter("controller_runtime_webhook_requests_total", customerHook)
		c := newCustomer("ready-co", "Ready Co")
		Expect(admin.Create(ctx, c)).To(Succeed())
		By("without calling the Customer webhook: the schema's rules decide a create (matchConditions)")
		Expect(counter("controller_runtime_webhook_requests_total", customerHook)).To(Equal(calls))
		Expect(admin.Create(ctx, newProject("ready-co-web", "ready-co"))).To(Succeed())

		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Status.ObservedGeneration).To(Equal(c.Generation))
			g.Expect(readyCondition(c)).NotTo(BeNil())
			g.Expect(readyCondition(c).Status).To(Equal(metav1.ConditionTrue))
			g.Expect(c.Status.Projects).To(Equal(int32(1)))
			g.Expect(c.Finalizers).To(ContainElement(v1alpha1.CustomerFinalizer))
		}).Should(Succeed())
		Expect(kstatusOf(c)).To(Equal(status.CurrentStatus))
		Expect(apimeta.FindStatusCondition(c.Status.Conditions, v1alpha1.ReconcilingCondition)).To(BeNil())
		Expect(apimeta.FindStatusCondition(c.Status.Conditions, v1alpha1.StalledCondition)).To(BeNil())

		By("putting the finalizer back when someone removed it")
		Expect(updateFresh(c, func() { c.Finalizers = nil })).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Finalizers).To(ContainElement(v1alpha1.CustomerFinalizer))
		}).Should(Succeed())

		By("reading as InProgress while a newer generation is not reconciled yet")
		// The API server's answer to the update is the object as stored, before any
		// reconcile of the new generation could have happened.
		Expect(updateFresh(c, func() { c.Spec.DisplayName = "Ready Company" })).To(Succeed())
		Expect(c.Generation).To(BeNumerically(">", c.Status.ObservedGeneration))
		Expect(kstatusOf(c)).To(Equal(status.InProgressStatus))

		By("reading as Current again once reconciled")
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(kstatusOf(c)).To(Equal(status.CurrentStatus))
		}).Should(Succeed())

		By("not counting a project that is being deleted")
		Expect(admin.Delete(ctx, newProject("ready-co-web", "ready-co"))).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Status.Projects).To(Equal(int32(0)))
		}).Should(Succeed())
	})

	DescribeTable("refuses a bad Customer end to end, naming the field",
		func(mutate func(*v1alpha1.Customer), wantField, wantRule string) {
			c := newCustomer("bad-input", "Bad Input")
			mutate(c)
			err := admin.Create(ctx, c)
			Expect(err).To(HaveOccurred())
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring(wantField))
			Expect(err.Error()).To(ContainSubstring(wantRule))
		},
		Entry("identifier differs from the name", func(c *v1alpha1.Customer) { c.Spec.Identifier = "other" },
			"spec.identifier", "must equal metadata.name"),
		Entry("64-character identifier", func(c *v1alpha1.Customer) {
			c.Name = strings.Repeat("a", 64)
			c.Spec.Identifier = c.Name
		}, "spec.identifier", "63"),
		Entry("dotted identifier", func(c *v1alpha1.Customer) {
			c.Name = "acme.corp"
			c.Spec.Identifier = c.Name
		}, "spec.identifier", `spec.identifier: Invalid value: "acme.corp": spec.identifier must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit`),
		Entry("upper-case look-alike identifier", func(c *v1alpha1.Customer) {
			c.Name = "acme"
			c.Spec.Identifier = "ACME"
		}, "spec.identifier", `spec.identifier: Invalid value: "ACME": spec.identifier must be a DNS-1123 label`),
		Entry("empty display name", func(c *v1alpha1.Customer) { c.Spec.DisplayName = "" },
			"spec.displayName", "at least 1"),
		Entry("over-long display name", func(c *v1alpha1.Customer) { c.Spec.DisplayName = strings.Repeat("x", 257) },
			"spec.displayName", "256"),
	)

	It("keeps what client-side kubectl apply stored, though its cache drops the last-applied copy", func() {
		const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"
		c := newCustomer("applied-co", "Applied Co")
		c.Annotations = map[string]string{lastApplied: `{"kind":"Customer","metadata":{"name":"applied-co"}}`}
		Expect(admin.Create(ctx, c)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Finalizers).To(ContainElement(v1alpha1.CustomerFinalizer))
			g.Expect(readyCondition(c)).NotTo(BeNil())
		}).Should(Succeed())
		Expect(c.Annotations).To(HaveKeyWithValue(lastApplied, `{"kind":"Customer","metadata":{"name":"applied-co"}}`),
			"the finalizer and status patches are computed against the cached copy and leave the annotation alone")
	})

	It("refuses to change the identifier, naming the field and the rule", func() {
		c := newCustomer("immutable-co", "Immutable Co")
		Expect(admin.Create(ctx, c)).To(Succeed())
		err := updateFresh(c, func() { c.Spec.Identifier = "renamed-co" })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.identifier is immutable"))
	})

	It("refuses to delete a Customer with projects, and holds it with the finalizer when the webhook is bypassed", func() {
		c := newCustomer("holding-co", "Holding Co")
		Expect(admin.Create(ctx, c)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Finalizers).To(ContainElement(v1alpha1.CustomerFinalizer))
		}).Should(Succeed())
		project := newProject("holding-co-api", "holding-co")
		Expect(admin.Create(ctx, project)).To(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			g.Expect(c.Status.Projects).To(Equal(int32(1)))
		}).Should(Succeed())

		By("refusing the delete at admission")
		Eventually(func(g Gomega) {
			err := admin.Delete(ctx, c)
			g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(`customer "holding-co" still has 1 project(s) ([holding-co-api]); delete them first`))
		}).Should(Succeed())

		By("holding it with the finalizer when the webhook is out of the way")
		withoutWebhook("vcustomer.customers.partnerops.io", func() {
			// The API server picks up the changed webhook configuration asynchronously.
			Eventually(func() error { return admin.Delete(ctx, c) }).Should(Succeed())
		})
		Consistently(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
		}, "2s").Should(Succeed())
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(c), c)).To(Succeed())
			ready := readyCondition(c)
			g.Expect(ready).NotTo(BeNil())
			g.Expect(ready.Reason).To(Equal(v1alpha1.HasProjectsReason))
			g.Expect(ready.Message).To(ContainSubstring("holding-co-api"))
		}).Should(Succeed())

		By("letting it go once the project is gone (kube-controller-manager finishes the namespace)")
		Expect(admin.Delete(ctx, project)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(admin.Get(ctx, client.ObjectKeyFromObject(c), &v1alpha1.Customer{}))
		}, "60s").Should(BeTrue())
	})
})
