package controllers_test

import (
	"fmt"
	"os/exec"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/localcluster"
)

func pqCondition(q *v1alpha1.CustomerQuota, conditionType string) *metav1.Condition {
	return apimeta.FindStatusCondition(q.Status.Conditions, conditionType)
}

func pqSetMax(name string, max int32) {
	GinkgoHelper()
	q := &v1alpha1.CustomerQuota{}
	Expect(admin.Get(ctx, types.NamespacedName{Name: name}, q)).To(Succeed())
	patch := client.MergeFrom(q.DeepCopy())
	q.Spec.MaxProjects = ptr.To(max)
	Expect(pqClient(pqPartner).Patch(ctx, q, patch)).To(Succeed())
}

var _ = Describe("CustomerQuota", func() {
	BeforeEach(pqSetup)

	It("stores the counters when they are 0, so that kubectl prints 0 rather than nothing", func() {
		const customer = "pq-zero"
		pqCustomer(customer, ptr.To[int32](0))
		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(localcluster.WriteKubeconfig(kubeconfig, env.AdminConfig, "envtest")).To(Succeed())
		jsonpath := func(g Gomega, kind, path string) string {
			out, err := exec.Command(filepath.Join(env.BinDir, "kubectl"), "--kubeconfig", kubeconfig,
				"get", kind, customer, "-o", "jsonpath="+path).CombinedOutput()
			g.Expect(err).NotTo(HaveOccurred(), "kubectl: %s", out)
			return string(out)
		}
		// Every counter stayed 0 from the start: a merge patch of what changed alone
		// would never have stored them.
		Eventually(func(g Gomega) {
			g.Expect(jsonpath(g, "customer", "{.status.projects},{.status.maxProjects},{.status.members}")).To(Equal("0,0,0"))
			g.Expect(jsonpath(g, "customerquota", "{.status.used},{.status.max}")).To(Equal("0,0"))
		}).Should(Succeed())
	})

	It("lowered below usage deletes nothing, refuses new projects and says so; raised, admits again at once", func() {
		const customer = "pq-lower"
		pqCustomer(customer, ptr.To[int32](3))
		partner := pqClient(pqPartner)
		for i := range 3 {
			Expect(partner.Create(ctx, newProject(fmt.Sprintf("pq-lower-%d", i), customer))).To(Succeed())
		}
		q := pqQuotaEventually(customer, func(g Gomega, q *v1alpha1.CustomerQuota) {
			g.Expect(q.Status.Used).To(Equal(int32(3)))
			g.Expect(pqCondition(q, v1alpha1.WithinQuotaCondition)).To(HaveField("Status", metav1.ConditionTrue))
		})
		Expect(kstatusOf(q)).To(Equal(status.CurrentStatus))

		By("lowering maxProjects to 2")
		pqSetMax(customer, 2)
		q = pqQuotaEventually(customer, func(g Gomega, q *v1alpha1.CustomerQuota) {
			g.Expect(q.Status.ObservedGeneration).To(Equal(q.Generation))
			g.Expect(q.Status.Max).To(Equal(int32(2)))
		})
		Expect(q.Status.Used).To(Equal(int32(3)))
		within := pqCondition(q, v1alpha1.WithinQuotaCondition)
		Expect(within).NotTo(BeNil())
		Expect(within.Status).To(Equal(metav1.ConditionFalse))
		Expect(within.Reason).To(Equal(v1alpha1.OverQuotaReason))
		Expect(within.Message).To(Equal(`3 of 2 projects used: new projects are refused until the customer has fewer than 2 or spec.maxProjects is raised; nothing is deleted`))
		Expect(readyCondition(q)).To(HaveField("Status", metav1.ConditionTrue), "over quota is not a reconcile failure")
		Expect(kstatusOf(q)).To(Equal(status.CurrentStatus))

		pqCustomerEventually(customer, func(g Gomega, c *v1alpha1.Customer) {
			g.Expect(c.Status.Projects).To(Equal(int32(3)))
			g.Expect(c.Status.MaxProjects).To(Equal(int32(2)), "the Customer shows used and max too")
		})

		By("deleting nothing")
		Consistently(func() []string { return pqProjectNames(customer) }, "1s").Should(HaveLen(3))

		By("refusing a new project")
		pqDenied(partner.Create(ctx, newProject("pq-lower-3", customer)),
			`customer "pq-lower" has 3 of 2 projects (CustomerQuota "pq-lower"); ask your partner to raise spec.maxProjects`)

		By("recording the change once, as a Warning event")
		Eventually(func(g Gomega) {
			var events eventsv1.EventList
			g.Expect(admin.List(ctx, &events)).To(Succeed())
			var overQuota []eventsv1.Event
			for _, e := range events.Items {
				if e.Regarding.Kind == "CustomerQuota" && e.Regarding.Name == customer && e.Reason == v1alpha1.OverQuotaReason {
					overQuota = append(overQuota, e)
				}
			}
			g.Expect(overQuota).To(HaveLen(1))
			g.Expect(overQuota[0].Type).To(Equal(corev1.EventTypeWarning))
		}).Should(Succeed())

		By("raising it to 5: admitted again at once")
		pqSetMax(customer, 5)
		Eventually(func() error {
			return partner.Create(ctx, newProject("pq-lower-3", customer))
		}).Should(Succeed())
		pqQuotaEventually(customer, func(g Gomega, q *v1alpha1.CustomerQuota) {
			g.Expect(q.Status.Used).To(Equal(int32(4)))
			g.Expect(q.Status.Max).To(Equal(int32(5)))
			g.Expect(pqCondition(q, v1alpha1.WithinQuotaCondition)).To(HaveField("Status", metav1.ConditionTrue))
		})

		By("falling back to --default-max-projects (10) when the quota is deleted")
		Expect(partner.Delete(ctx, &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: customer}})).To(Succeed())
		pqCustomerEventually(customer, func(g Gomega, c *v1alpha1.Customer) {
			g.Expect(c.Status.MaxProjects).To(Equal(int32(10)))
		})
		for i := 4; i < 10; i++ {
			Eventually(func() error {
				return partner.Create(ctx, newProject(fmt.Sprintf("pq-lower-%d", i), customer))
			}).Should(Succeed())
		}
		pqDenied(partner.Create(ctx, newProject("pq-lower-10", customer)),
			`customer "pq-lower" has 10 of 10 projects (default quota)`)
	})

	It("reports CustomerNotFound while its customer is missing, and resumes when it appears", func() {
		const customer = "pq-orphan"
		q := &v1alpha1.CustomerQuota{
			ObjectMeta: metav1.ObjectMeta{Name: customer},
			Spec:       v1alpha1.CustomerQuotaSpec{Customer: customer, MaxProjects: ptr.To[int32](4)},
		}
		Expect(pqClient(pqPartner).Create(ctx, q)).To(Succeed())
		q = pqQuotaEventually(customer, func(g Gomega, q *v1alpha1.CustomerQuota) {
			g.Expect(readyCondition(q)).NotTo(BeNil())
			g.Expect(readyCondition(q).Reason).To(Equal(v1alpha1.CustomerNotFoundReason))
		})
		Expect(readyCondition(q).Status).To(Equal(metav1.ConditionFalse))
		Expect(pqCondition(q, v1alpha1.StalledCondition)).To(HaveField("Status", metav1.ConditionTrue))
		Expect(q.Status.ObservedGeneration).To(Equal(q.Generation))
		Expect(kstatusOf(q)).To(Equal(status.FailedStatus))

		By("creating the customer")
		Expect(admin.Create(ctx, newCustomer(customer, "PQ Orphan"))).To(Succeed())
		q = pqQuotaEventually(customer, func(g Gomega, q *v1alpha1.CustomerQuota) {
			g.Expect(readyCondition(q)).To(HaveField("Status", metav1.ConditionTrue))
		})
		Expect(pqCondition(q, v1alpha1.StalledCondition)).To(BeNil())
		Expect(q.Status.Max).To(Equal(int32(4)))
		Expect(kstatusOf(q)).To(Equal(status.CurrentStatus))
	})

	It("reports CustomerDeleting while its customer is being deleted, then CustomerNotFound (and so does a message)", func() {
		const customer = "pq-going"
		createCustomer(customer, "PQ Going")
		createProject("pq-going-web", customer)
		q := &v1alpha1.CustomerQuota{
			ObjectMeta: metav1.ObjectMeta{Name: customer},
			Spec:       v1alpha1.CustomerQuotaSpec{Customer: customer, MaxProjects: ptr.To[int32](3)},
		}
		Expect(pqClient(pqPartner).Create(ctx, q)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, q))).To(Succeed()) })
		pqQuotaEventually(customer, func(g Gomega, q *v1alpha1.CustomerQuota) {
			g.Expect(readyCondition(q)).To(HaveField("Status", metav1.ConditionTrue))
			g.Expect(q.Status.Used).To(Equal(int32(1)))
		})
		Eventually(func(g Gomega) {
			var c v1alpha1.Customer
			g.Expect(admin.Get(ctx, types.NamespacedName{Name: customer}, &c)).To(Succeed())
			g.Expect(c.Finalizers).To(ContainElement(v1alpha1.CustomerFinalizer))
		}).Should(Succeed(), "the precondition: the customer's deletion will wait for its project")
		notice := msgMessage("pq-going-notice", customer, v1alpha1.AllMustRead)
		Expect(admin.Create(ctx, notice)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, notice))).To(Succeed()) })
		msgEventually(notice.Name, func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.ReadyCondition)).To(HaveField("Status", metav1.ConditionTrue))
		})

		const member = "gus@pq-going.test"
		Expect(admin.Create(ctx, msgMember(customer, member, v1alpha1.RoleEditor))).To(Succeed())
		pqCustomerEventually(customer, func(g Gomega, c *v1alpha1.Customer) { g.Expect(c.Status.Members).To(Equal(int32(1))) })

		By("deleting the customer past the webhook (it refuses while projects exist): the finalizer holds it")
		withoutWebhook("vcustomer.customers.partnerops.io", func() {
			// The API server picks up the changed webhook configuration asynchronously.
			Eventually(func() error { return admin.Delete(ctx, newCustomer(customer, "PQ Going")) }).Should(Succeed())
		})
		q = pqQuotaEventually(customer, func(g Gomega, q *v1alpha1.CustomerQuota) {
			g.Expect(readyCondition(q)).To(HaveField("Reason", v1alpha1.CustomerDeletingReason))
		})
		Expect(readyCondition(q).Status).To(Equal(metav1.ConditionFalse))
		Expect(readyCondition(q).Message).To(ContainSubstring("takes no new projects"))
		Expect(pqCondition(q, v1alpha1.StalledCondition)).To(HaveField("Status", metav1.ConditionTrue))
		Expect(q.Status.Used).To(Equal(int32(1)), "the count goes on")
		m := msgEventually(notice.Name, func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.ReadyCondition)).To(HaveField("Reason", v1alpha1.CustomerDeletingReason))
		})
		Expect(msgCondition(m, v1alpha1.StalledCondition)).To(HaveField("Status", metav1.ConditionTrue))
		Expect(kstatusOf(m)).To(Equal(status.FailedStatus), "Degraded for Argo CD and Failed for kstatus, like the quota")

		By("sending no notice for a message addressed to the customer meanwhile")
		late := msgMessage("pq-going-late", customer, v1alpha1.AllMustRead)
		late.Spec.Notify = v1alpha1.NotifyEmail
		Expect(admin.Create(ctx, late)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, late))).To(Succeed()) })
		msgEventually(late.Name, func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(1)), "the member is a recipient")
			g.Expect(msgCondition(m, v1alpha1.ReadyCondition)).To(HaveField("Reason", v1alpha1.CustomerDeletingReason))
		})
		Consistently(func(g Gomega) {
			g.Expect(mailServer.MessagesTo(member)).To(BeEmpty())
			var m v1alpha1.CustomerMessage
			g.Expect(admin.Get(ctx, types.NamespacedName{Name: late.Name}, &m)).To(Succeed())
			g.Expect(m.Status.Notice).To(BeNil(), "not even an attempt")
		}, "2s").Should(Succeed())

		By("deleting the project: the customer goes, and the quota says so")
		Expect(admin.Delete(ctx, newProject("pq-going-web", customer))).To(Succeed())
		pqQuotaEventually(customer, func(g Gomega, q *v1alpha1.CustomerQuota) {
			g.Expect(readyCondition(q)).To(HaveField("Reason", v1alpha1.CustomerNotFoundReason))
			g.Expect(q.Status.Used).To(BeZero())
		})
	})

	It("lets only partners create, change or delete quotas", func() {
		const customer, user = "pq-writers", "quinn@pq-writers.test"
		pqCustomer(customer, ptr.To[int32](2))
		// RBAC lets quinn write quotas, so that admission is what refuses.
		role := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "pqtest-quota-writer"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1alpha1.GroupName}, Resources: []string{"customerquotas"},
				Verbs: []string{"get", "create", "update", "patch", "delete"}}},
		}
		Expect(admin.Create(ctx, role)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, role))).To(Succeed()) })
		pqBind(user, role.Name)
		quinn := pqClient(user)

		quotaHook := map[string]string{"webhook": "/validate-customers-partnerops-io-v1alpha1-customerquota", "code": "200"}
		calls := func() float64 { return counter("controller_runtime_webhook_requests_total", quotaHook) }
		before := calls()
		q := &v1alpha1.CustomerQuota{}
		Expect(quinn.Get(ctx, types.NamespacedName{Name: customer}, q)).To(Succeed())
		patch := client.MergeFrom(q.DeepCopy())
		q.Spec.MaxProjects = ptr.To[int32](100)
		pqDenied(quinn.Patch(ctx, q, patch), `"quinn@pq-writers.test" is not a partner: only partners may update CustomerQuotas`)
		pqDenied(quinn.Delete(ctx, q), `only partners may delete CustomerQuotas`)
		pqDenied(quinn.Create(ctx, &v1alpha1.CustomerQuota{
			ObjectMeta: metav1.ObjectMeta{Name: "pq-writers-other"},
			Spec:       v1alpha1.CustomerQuotaSpec{Customer: "pq-writers-other", MaxProjects: ptr.To[int32](100)},
		}), `only partners may create CustomerQuotas`)
		Expect(calls()).To(Equal(before+3), "a non-partner's three requests went to the webhook")

		By("a partner may, and the API server does not call the webhook for it (matchConditions)")
		pqSetMax(customer, 3)
		Expect(calls()).To(Equal(before + 3))
	})
})
