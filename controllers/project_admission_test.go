package controllers_test

import (
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/quota"
)

// The suite's operator runs with ReservationGrace 5s (suite_test.go): an admitted
// create that never lands frees its slot after 5s (admission timeout) + 5s.
const pqReservationBound = quota.AdmissionTimeout + 5*time.Second

// pqPartner is a partner: a user bound to the shipped customer-operator-partner
// ClusterRole (not system:masters), impersonated.
const pqPartner = "pat@partner.pq.test"

var pqOnce sync.Once

// pqSetup creates, once, the RBAC the specs' users need: the partner binding, and
// a ClusterRole with cluster-wide create on namespaces, which the operator's
// access controller gives a customer's Admins (bound per user by pqAdmin, so that
// these specs do not depend on that controller).
func pqSetup() {
	GinkgoHelper()
	pqOnce.Do(func() {
		objs := []client.Object{
			&rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "pqtest-partner"},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "customer-operator-partner"},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: pqPartner}},
			},
			&rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: "pqtest-create-namespaces"},
				Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"create"}}},
			},
			// A namespace editor who is no partner: may update namespaces and their
			// status and finalize subresources, so that only admission stands in the way.
			&rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: "pqtest-namespace-editor"},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{""},
					Resources: []string{"namespaces", "namespaces/status", "namespaces/finalize"},
					Verbs:     []string{"get", "create", "update", "patch"}}},
			},
		}
		for _, o := range objs {
			Expect(admin.Create(ctx, o)).To(Succeed())
		}
	})
}

// pqClient is an uncached client impersonating user.
func pqClient(user string) client.Client {
	GinkgoHelper()
	c, err := env.ClientAs(user)
	Expect(err).NotTo(HaveOccurred())
	return c
}

func pqBind(user, clusterRole string) {
	GinkgoHelper()
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "pqtest-" + clusterRole + "-" + strings.NewReplacer("@", "-", ".", "-").Replace(user)},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	Expect(admin.Create(ctx, crb)).To(Succeed())
	DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, crb))).To(Succeed()) })
	waitBound(user, clusterRole)
}

// pqCustomer creates a Customer and, unless maxProjects is nil, its CustomerQuota,
// and waits until the operator has seen both (its cache is the webhook's).
// Customers and their projects are left in place after the spec: deleting
// hundreds of namespaces would only burn the shared CPU.
func pqCustomer(name string, maxProjects *int32) {
	GinkgoHelper()
	Expect(admin.Create(ctx, newCustomer(name, "PQ "+name))).To(Succeed())
	if maxProjects != nil {
		q := &v1alpha1.CustomerQuota{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       v1alpha1.CustomerQuotaSpec{Customer: v1alpha1.CustomerName(name), MaxProjects: maxProjects},
		}
		Expect(admin.Create(ctx, q)).To(Succeed())
		pqQuotaEventually(name, func(g Gomega, q *v1alpha1.CustomerQuota) {
			g.Expect(q.Status.ObservedGeneration).To(Equal(q.Generation))
			g.Expect(q.Status.Max).To(Equal(*maxProjects))
		})
	}
	pqCustomerEventually(name, func(g Gomega, c *v1alpha1.Customer) {
		g.Expect(c.Status.ObservedGeneration).To(Equal(c.Generation))
	})
}

// pqAdmin makes user an active Admin member of customer (invitation None, created
// by system:masters, a partner), gives them the right to create namespaces, and
// waits until the operator counts the member and has granted the Admin's rights
// (the namespace webhook's matchCondition sends an Admin's plain namespaces to it by
// the right to create memberships).
func pqAdmin(customer, user string) client.Client {
	GinkgoHelper()
	pqSetup()
	m := &v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: customer + "-" + strings.NewReplacer("@", "-", ".", "-").Replace(user)},
		Spec: v1alpha1.CustomerMembershipSpec{Customer: v1alpha1.CustomerName(customer), Email: user,
			Role: v1alpha1.RoleAdmin, Invitation: v1alpha1.InvitationNone},
	}
	Expect(admin.Create(ctx, m)).To(Succeed())
	pqBind(user, "pqtest-create-namespaces")
	pqCustomerEventually(customer, func(g Gomega, c *v1alpha1.Customer) {
		g.Expect(c.Status.Members).To(BeNumerically(">=", 1))
	})
	Eventually(func() bool { return canI(user, "create", v1alpha1.GroupName, "customermemberships", "", "") }).Should(BeTrue())
	return pqClient(user)
}

func pqCustomerEventually(name string, check func(Gomega, *v1alpha1.Customer)) *v1alpha1.Customer {
	GinkgoHelper()
	c := &v1alpha1.Customer{}
	Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, types.NamespacedName{Name: name}, c)).To(Succeed())
		check(g, c)
	}).Should(Succeed())
	return c
}

func pqQuotaEventually(name string, check func(Gomega, *v1alpha1.CustomerQuota)) *v1alpha1.CustomerQuota {
	GinkgoHelper()
	q := &v1alpha1.CustomerQuota{}
	Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, types.NamespacedName{Name: name}, q)).To(Succeed())
		check(g, q)
	}).Should(Succeed())
	return q
}

// pqDenied asserts a 403 whose message contains every want.
func pqDenied(err error, want ...string) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred())
	Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want 403 Forbidden, got %v", err)
	for _, w := range want {
		Expect(err.Error()).To(ContainSubstring(w))
	}
}

func pqProjectNames(customer string) []string {
	GinkgoHelper()
	var list corev1.NamespaceList
	Expect(admin.List(ctx, &list, client.MatchingLabels{v1alpha1.CustomerLabel: customer})).To(Succeed())
	var names []string
	for _, ns := range list.Items {
		if ns.DeletionTimestamp.IsZero() {
			names = append(names, ns.Name)
		}
	}
	return names
}

// pqRace creates n projects of customer at once through c and returns which were
// admitted and the errors of the others.
func pqRace(c client.Client, customer string, n int) (admitted []string, refused []error) {
	GinkgoHelper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("%s-%03d", customer, i)
			<-start
			err := c.Create(ctx, newProject(name, customer))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				admitted = append(admitted, name)
			} else {
				refused = append(refused, err)
			}
		})
	}
	close(start)
	wg.Wait()
	return admitted, refused
}

// pqExpectRaceOutcome checks a finished race: exactly max admitted, every other
// request refused by quota, and, once the operator has caught up, every admitted
// namespace counted (none lost its slot) and no slot left over.
func pqExpectRaceOutcome(customer string, max int, admitted []string, refused []error) {
	GinkgoHelper()
	Expect(admitted).To(HaveLen(max), "exactly maxProjects creates are admitted")
	for _, err := range refused {
		pqDenied(err, fmt.Sprintf(`customer %q has %d of %d projects (CustomerQuota %q); ask your partner to raise spec.maxProjects`,
			customer, max, max, customer))
	}
	Expect(pqProjectNames(customer)).To(ConsistOf(admitted))
	c := pqCustomerEventually(customer, func(g Gomega, c *v1alpha1.Customer) {
		g.Expect(c.Status.Projects).To(Equal(int32(max)))
		g.Expect(c.Status.Reservations).To(BeEmpty(), "each reservation released once its namespace was counted")
	})
	Expect(c.Status.Projects).To(Equal(int32(max)))
	pqQuotaEventually(customer, func(g Gomega, q *v1alpha1.CustomerQuota) {
		g.Expect(q.Status.Used).To(Equal(int32(max)))
	})
	By("still refusing one more (dry-run), now that every slot is counted as a project")
	err := admin.Create(ctx, newProject(customer+"-one-more", customer), client.DryRunAll)
	pqDenied(err, fmt.Sprintf(`customer %q has %d of %d projects`, customer, max, max))
}

var _ = Describe("Projects", func() {
	BeforeEach(pqSetup)

	Context("race-free quota", func() {
		It("admits exactly maxProjects of 100 concurrent creates by a partner, every time", func() {
			for run := range 3 {
				customer := fmt.Sprintf("pq-race-%d", run)
				By(fmt.Sprintf("run %d: 100 concurrent creates against maxProjects 10 for the fresh customer %q", run+1, customer))
				pqCustomer(customer, ptr.To[int32](10))
				started := time.Now()
				admitted, refused := pqRace(pqClient(pqPartner), customer, 100)
				GinkgoWriter.Printf("run %d: 100 concurrent creates answered in %s\n", run+1, time.Since(started))
				pqExpectRaceOutcome(customer, 10, admitted, refused)
			}
		})

		It("admits exactly maxProjects of 100 concurrent creates by a customer Admin", func() {
			const customer, user = "pq-race-admin", "ada@pq-race-admin.test"
			pqCustomer(customer, ptr.To[int32](10))
			adminClient := pqAdmin(customer, user)
			admitted, refused := pqRace(adminClient, customer, 100)
			pqExpectRaceOutcome(customer, 10, admitted, refused)
		})

		It("holds the slot of a create that was admitted and then failed, and frees it within the bound", func() {
			const customer = "pq-failed"
			pqCustomer(customer, ptr.To[int32](1))
			partner := pqClient(pqPartner)

			By("installing a second webhook that fails every create carrying a test label (called after ours admitted)")
			failing := &admissionregistrationv1.ValidatingWebhookConfiguration{
				ObjectMeta: metav1.ObjectMeta{Name: "pqtest-fail-after-admission"},
				Webhooks: []admissionregistrationv1.ValidatingWebhook{{
					Name:                    "fail.pqtest.partnerops.io",
					AdmissionReviewVersions: []string{"v1"},
					// Nothing listens on port 1: the call fails, and so does the create.
					ClientConfig:  admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:1/fail")},
					FailurePolicy: ptr.To(admissionregistrationv1.Fail),
					SideEffects:   ptr.To(admissionregistrationv1.SideEffectClassNone),
					Rules: []admissionregistrationv1.RuleWithOperations{{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"namespaces"}},
					}},
					MatchConditions: []admissionregistrationv1.MatchCondition{{
						Name:       "test-label",
						Expression: `has(object.metadata.labels) && 'pqtest.partnerops.io/fail' in object.metadata.labels`,
					}},
					TimeoutSeconds: ptr.To[int32](2),
				}},
			}
			Expect(admin.Create(ctx, failing)).To(Succeed())
			DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, failing))).To(Succeed()) })
			doomed := newProject("pq-failed-doomed", customer)
			doomed.Labels["pqtest.partnerops.io/fail"] = "true"
			// A dry-run tells when the API server calls it, and reserves nothing.
			Eventually(func() string {
				err := partner.Create(ctx, doomed.DeepCopy(), client.DryRunAll)
				if err == nil {
					return ""
				}
				return err.Error()
			}).Should(ContainSubstring("fail.pqtest.partnerops.io"))
			Expect(pqCustomerEventually(customer, func(Gomega, *v1alpha1.Customer) {}).Status.Reservations).To(BeEmpty(),
				"dry-runs reserve nothing")

			By("creating the doomed project: ours admits and reserves, the other webhook fails the request")
			before := time.Now()
			err := partner.Create(ctx, doomed.DeepCopy())
			// The ledger stamps its own clock during the request; expiresAt is that
			// time plus the TTL, rounded up to the second metav1.Time keeps.
			after := time.Now()
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring("fail.pqtest.partnerops.io"))
			Expect(apierrors.IsNotFound(admin.Get(ctx, client.ObjectKeyFromObject(doomed), &corev1.Namespace{}))).To(BeTrue())
			c := pqCustomerEventually(customer, func(g Gomega, c *v1alpha1.Customer) {
				g.Expect(c.Status.Reservations).To(HaveLen(1))
			})
			reservation := c.Status.Reservations[0]
			Expect(reservation.Namespace).To(Equal("pq-failed-doomed"))
			Expect(reservation.ExpiresAt.Time).To(BeTemporally("<=", after.Add(pqReservationBound+time.Second)),
				"expiresAt is at most the admission timeout plus the grace period away")

			By("holding the slot meanwhile: the create might still have landed")
			pqDenied(partner.Create(ctx, newProject("pq-failed-next", customer)),
				`customer "pq-failed" has 1 of 1 projects (CustomerQuota "pq-failed")`)

			By("releasing it when it lapses, after which the slot is free")
			Eventually(func(g Gomega) {
				g.Expect(admin.Get(ctx, types.NamespacedName{Name: customer}, c)).To(Succeed())
				g.Expect(c.Status.Reservations).To(BeEmpty())
			}, pqReservationBound+10*time.Second).Should(Succeed())
			released := time.Since(before)
			GinkgoWriter.Printf("a failed create's slot was released %s after the request (bound %s)\n", released, pqReservationBound)
			Expect(released).To(BeNumerically("<", pqReservationBound+5*time.Second))
			Expect(partner.Create(ctx, newProject("pq-failed-next", customer))).To(Succeed())
		})

		It("checks dry-run requests but reserves nothing for them", func() {
			const customer = "pq-dry"
			pqCustomer(customer, ptr.To[int32](1))
			partner := pqClient(pqPartner)

			Expect(partner.Create(ctx, newProject("pq-dry-a", customer), client.DryRunAll)).To(Succeed())
			Consistently(func(g Gomega) {
				c := &v1alpha1.Customer{}
				g.Expect(admin.Get(ctx, types.NamespacedName{Name: customer}, c)).To(Succeed())
				g.Expect(c.Status.Reservations).To(BeEmpty())
			}, "1s").Should(Succeed())

			By("leaving the only slot to a real create")
			Expect(partner.Create(ctx, newProject("pq-dry-b", customer))).To(Succeed())
			By("refusing a dry-run over quota like a real request")
			pqDenied(partner.Create(ctx, newProject("pq-dry-c", customer), client.DryRunAll),
				`customer "pq-dry" has 1 of 1 projects (CustomerQuota "pq-dry")`)
		})

		It("does not count a re-applied project against the quota", func() {
			const customer = "pq-reapply"
			pqCustomer(customer, ptr.To[int32](1))
			partner := pqClient(pqPartner)
			Expect(partner.Create(ctx, newProject("pq-reapply-web", customer))).To(Succeed())
			pqCustomerEventually(customer, func(g Gomega, c *v1alpha1.Customer) { g.Expect(c.Status.Projects).To(Equal(int32(1))) })

			By("creating it again, at full quota: the API server's AlreadyExists, not a quota error")
			err := partner.Create(ctx, newProject("pq-reapply-web", customer))
			Expect(apierrors.IsAlreadyExists(err)).To(BeTrue(), "got %v", err)

			By("updating it with its label unchanged (kubectl apply)")
			ns := &corev1.Namespace{}
			Expect(partner.Get(ctx, types.NamespacedName{Name: "pq-reapply-web"}, ns)).To(Succeed())
			ns.Labels["team"] = "web"
			Expect(partner.Update(ctx, ns)).To(Succeed())
		})

		It("uses --default-max-projects for a customer without a CustomerQuota", func() {
			const customer = "pq-default"
			pqCustomer(customer, nil)
			partner := pqClient(pqPartner)
			for i := range 10 {
				Expect(partner.Create(ctx, newProject(fmt.Sprintf("pq-default-%d", i), customer))).To(Succeed())
			}
			pqDenied(partner.Create(ctx, newProject("pq-default-10", customer)),
				`customer "pq-default" has 10 of 10 projects (default quota); ask your partner to raise spec.maxProjects`)
		})

		It("does not count a project once its deletion has started", func() {
			const customer = "pq-terminating"
			pqCustomer(customer, ptr.To[int32](1))
			partner := pqClient(pqPartner)
			old := newProject("pq-terminating-old", customer)
			Expect(partner.Create(ctx, old)).To(Succeed())
			pqDenied(partner.Create(ctx, newProject("pq-terminating-new", customer)), `has 1 of 1 projects`)

			By("holding the old one in Terminating with a finalizer, so the test sees that state")
			Expect(admin.Get(ctx, client.ObjectKeyFromObject(old), old)).To(Succeed())
			controllerutil.AddFinalizer(old, "pqtest.partnerops.io/hold")
			Expect(admin.Update(ctx, old)).To(Succeed())
			DeferCleanup(func() {
				Expect(admin.Get(ctx, client.ObjectKeyFromObject(old), old)).To(Succeed())
				controllerutil.RemoveFinalizer(old, "pqtest.partnerops.io/hold")
				Expect(admin.Update(ctx, old)).To(Succeed())
			})
			Expect(partner.Delete(ctx, old)).To(Succeed())
			Eventually(func() error {
				return partner.Create(ctx, newProject("pq-terminating-new", customer))
			}).Should(Succeed())
			Expect(admin.Get(ctx, client.ObjectKeyFromObject(old), old)).To(Succeed())
			Expect(old.DeletionTimestamp.IsZero()).To(BeFalse(), "the old project is still terminating")
		})
	})

	Context("who may create projects", func() {
		It("lets an Admin create projects up to the quota, and tells them why the third is refused (maxProjects 2)", func() {
			const customer, user = "pq-trial", "alice@pq-trial.test"
			pqCustomer(customer, ptr.To[int32](2))
			alice := pqAdmin(customer, user)
			Expect(alice.Create(ctx, newProject("pq-trial-web", customer))).To(Succeed())
			Expect(alice.Create(ctx, newProject("pq-trial-api", customer))).To(Succeed())
			err := alice.Create(ctx, newProject("pq-trial-db", customer))
			pqDenied(err)
			Expect(err.Error()).To(Equal(`admission webhook "vnamespace.customers.partnerops.io" denied the request: ` +
				`customer "pq-trial" has 2 of 2 projects (CustomerQuota "pq-trial"); ask your partner to raise spec.maxProjects`))
		})

		It("refuses an Admin anything but clean projects of their own customer", func() {
			const customer, user = "pq-admin", "bob@pq-admin.test"
			pqCustomer(customer, ptr.To[int32](10))
			pqCustomer("pq-admin-other", ptr.To[int32](10))
			bob := pqAdmin(customer, user)

			By("a namespace without the customer label")
			pqDenied(bob.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pq-admin-scratch"}}),
				`namespace "pq-admin-scratch" has no label customers.partnerops.io/customer: a customer's Admins may create only projects, so label it with the customer (pq-admin)`)

			By("a project of a customer they do not administer")
			pqDenied(bob.Create(ctx, newProject("pq-admin-other-web", "pq-admin-other")),
				`"bob@pq-admin.test" is not an Admin of customer "pq-admin-other"`)

			By("a privileged pod-security label")
			privileged := newProject("pq-admin-priv", customer)
			privileged.Labels["pod-security.kubernetes.io/enforce"] = "privileged"
			pqDenied(bob.Create(ctx, privileged),
				`metadata.labels[pod-security.kubernetes.io/enforce]: Forbidden: only partners may set pod-security.kubernetes.io/* labels`)

			By("a label outside the allow-list")
			labelled := newProject("pq-admin-mesh", customer)
			labelled.Labels["istio-injection"] = "enabled"
			pqDenied(bob.Create(ctx, labelled), `metadata.labels[istio-injection]: Forbidden: only partners may set labels other than`)

			By("a name that is not the customer's (--require-project-prefix, as config/manager runs it)")
			pqDenied(bob.Create(ctx, newProject("monitoring", customer)),
				`metadata.name: Invalid value: "monitoring": a customer's Admins may create only projects named pq-admin-<name> (--require-project-prefix)`)

			By("a system name, which the webhook never sees: the ValidatingAdmissionPolicy refuses it")
			Eventually(func() error {
				return bob.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-pq-escape"}})
			}).Should(MatchError(ContainSubstring(
				`namespace "kube-pq-escape" has a system name (kube-*, default, customer-operator-system): only partners may create it`)))

			By("but a clean project of their own customer, with the allowed metadata")
			ok := newProject("pq-admin-web", customer)
			ok.Annotations = map[string]string{"kubernetes.io/description": "the web shop"}
			Expect(bob.Create(ctx, ok)).To(Succeed())
		})

		It("refuses a user who is not an Admin of the customer", func() {
			const customer = "pq-stranger"
			pqCustomer(customer, ptr.To[int32](10))
			// An Editor of the customer, who also got create on namespaces somehow.
			Expect(admin.Create(ctx, &v1alpha1.CustomerMembership{
				ObjectMeta: metav1.ObjectMeta{Name: "pq-stranger-eve"},
				Spec: v1alpha1.CustomerMembershipSpec{Customer: customer, Email: "eve@pq-stranger.test",
					Role: v1alpha1.RoleEditor, Invitation: v1alpha1.InvitationNone},
			})).To(Succeed())
			pqBind("eve@pq-stranger.test", "pqtest-create-namespaces")
			pqCustomerEventually(customer, func(g Gomega, c *v1alpha1.Customer) { g.Expect(c.Status.Members).To(Equal(int32(1))) })
			pqDenied(pqClient("eve@pq-stranger.test").Create(ctx, newProject("pq-stranger-web", customer)),
				`"eve@pq-stranger.test" is not an Admin of customer "pq-stranger" (label customers.partnerops.io/customer): only partners and the customer's active Admin members may create its projects`)

			By("while a plain namespace of someone who administers no customer is not the webhook's business")
			plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pq-stranger-plain"}}
			pqBind("carl@pq-stranger.test", "pqtest-create-namespaces")
			Expect(pqClient("carl@pq-stranger.test").Create(ctx, plain)).To(Succeed())
		})

		It("is not called for a partner's plain namespace, which must not wait on the operator", func() {
			const customer = "pq-plain"
			pqCustomer(customer, ptr.To[int32](10))
			namespaceHook := map[string]string{"webhook": "/validate--v1-namespace", "code": "200"}
			calls := func() float64 { return counter("controller_runtime_webhook_requests_total", namespaceHook) }
			partner := pqClient(pqPartner)

			before := calls()
			Expect(partner.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pq-plain-tools"}})).To(Succeed())
			Expect(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pq-plain-infra"}})).To(Succeed())
			By("while a partner's project still goes to the webhook")
			Expect(partner.Create(ctx, newProject("pq-plain-web", customer))).To(Succeed())
			// The counter moves after the response is written: once the project's call
			// shows, the plain namespaces' would have too.
			Eventually(calls).Should(BeNumerically(">", before))
			Consistently(calls, "500ms").Should(Equal(before+1), "matchConditions leave partners' plain namespaces out")

			By("nor for the plain namespace of anyone else who could not be a customer's Admin (no right to create memberships)")
			pqBind("dora@pq-plain.test", "pqtest-create-namespaces")
			Expect(pqClient("dora@pq-plain.test").Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pq-plain-dora"}})).To(Succeed())
			Expect(partner.Create(ctx, newProject("pq-plain-api", customer))).To(Succeed())
			Eventually(calls).Should(BeNumerically(">", before+1))
			Consistently(calls, "500ms").Should(Equal(before+2), "only the two projects called the webhook")
		})

		It("refuses projects of an unknown customer and of a customer being deleted", func() {
			partner := pqClient(pqPartner)
			pqDenied(partner.Create(ctx, newProject("pq-nobody-web", "pq-nobody")),
				`customer "pq-nobody" does not exist (label customers.partnerops.io/customer): create the Customer first`)

			const customer = "pq-leaving"
			pqCustomer(customer, nil)
			c := &v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: customer}}
			Expect(updateFresh(c, func() { controllerutil.AddFinalizer(c, "pqtest.partnerops.io/hold") })).To(Succeed())
			DeferCleanup(func() {
				// The operator removes its own finalizer meanwhile: retry on conflict.
				Eventually(func() error {
					if err := admin.Get(ctx, types.NamespacedName{Name: customer}, c); err != nil {
						return err
					}
					controllerutil.RemoveFinalizer(c, "pqtest.partnerops.io/hold")
					return admin.Update(ctx, c)
				}).Should(Succeed())
			})
			Expect(admin.Delete(ctx, c)).To(Succeed())
			pqDenied(partner.Create(ctx, newProject("pq-leaving-web", customer)),
				`customer "pq-leaving" is being deleted and takes no new projects`)
		})
	})

	Context("the customer label on existing namespaces", func() {
		const editor = "lena@pq-label.test"

		var (
			cs      *kubernetes.Clientset
			partner client.Client
		)
		BeforeEach(func() {
			pqBind(editor, "pqtest-namespace-editor")
			var err error
			cs, err = kubernetes.NewForConfig(env.ConfigAs(editor))
			Expect(err).NotTo(HaveOccurred())
			partner = pqClient(pqPartner)
		})

		It("refuses a non-partner adding, moving or removing it, through namespaces, namespaces/status and namespaces/finalize", func() {
			pqCustomer("pq-label-a", ptr.To[int32](5))
			pqCustomer("pq-label-b", ptr.To[int32](5))
			Expect(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pq-label-team"}})).To(Succeed())
			Expect(admin.Create(ctx, newProject("pq-label-proj", "pq-label-a"))).To(Succeed())

			labelled := func(name, customer string) *corev1.Namespace {
				ns, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
				Expect(err).NotTo(HaveOccurred())
				if customer == "" {
					delete(ns.Labels, v1alpha1.CustomerLabel)
				} else {
					ns.Labels[v1alpha1.CustomerLabel] = customer
				}
				return ns
			}
			const hijack = `only a partner may make the existing namespace "pq-label-team" a project of customer "pq-label-a" (label customers.partnerops.io/customer)`

			By("labelling another team's namespace into a customer")
			_, err := cs.CoreV1().Namespaces().Update(ctx, labelled("pq-label-team", "pq-label-a"), metav1.UpdateOptions{})
			pqDenied(err, hijack)
			By("the same through namespaces/status (a PUT to /api/v1/namespaces/pq-label-team/status)")
			_, err = cs.CoreV1().Namespaces().UpdateStatus(ctx, labelled("pq-label-team", "pq-label-a"), metav1.UpdateOptions{})
			pqDenied(err, hijack)
			By("the same through namespaces/finalize")
			_, err = cs.CoreV1().Namespaces().Finalize(ctx, labelled("pq-label-team", "pq-label-a"), metav1.UpdateOptions{})
			pqDenied(err, hijack)

			By("moving a project to another customer")
			_, err = cs.CoreV1().Namespaces().UpdateStatus(ctx, labelled("pq-label-proj", "pq-label-b"), metav1.UpdateOptions{})
			pqDenied(err, `only a partner may move namespace "pq-label-proj" from customer "pq-label-a" to customer "pq-label-b"`)

			By("removing the label")
			_, err = cs.CoreV1().Namespaces().Update(ctx, labelled("pq-label-proj", ""), metav1.UpdateOptions{})
			pqDenied(err, `only a partner may remove label customers.partnerops.io/customer from namespace "pq-label-proj" (a project of customer "pq-label-a")`)

			By("while updates that leave the label alone pass, without calling the webhook (matchConditions)")
			namespaceHook := map[string]string{"webhook": "/validate--v1-namespace", "code": "200"}
			calls := counter("controller_runtime_webhook_requests_total", namespaceHook)
			ns := labelled("pq-label-proj", "pq-label-a")
			ns.Labels["team"] = "web"
			_, err = cs.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
			Expect(err).NotTo(HaveOccurred())
			team := labelled("pq-label-team", "")
			team.Labels["owner"] = "team-x"
			_, err = cs.CoreV1().Namespaces().Update(ctx, team, metav1.UpdateOptions{})
			Expect(err).NotTo(HaveOccurred())
			_, err = cs.CoreV1().Namespaces().UpdateStatus(ctx, labelled("pq-label-team", ""), metav1.UpdateOptions{})
			Expect(err).NotTo(HaveOccurred())
			Expect(counter("controller_runtime_webhook_requests_total", namespaceHook)).To(Equal(calls),
				"with the operator down, such writes (the namespace controller's finalize among them) must not fail")

			Expect(pqProjectNames("pq-label-a")).To(ConsistOf("pq-label-proj"))
			Expect(pqProjectNames("pq-label-b")).To(BeEmpty())
		})

		It("lets a partner move a project, counting it for the new customer only, within its quota", func() {
			pqCustomer("pq-move-a", ptr.To[int32](5))
			pqCustomer("pq-move-b", ptr.To[int32](1))
			Expect(partner.Create(ctx, newProject("pq-move-web", "pq-move-a"))).To(Succeed())
			Expect(partner.Create(ctx, newProject("pq-move-api", "pq-move-a"))).To(Succeed())
			pqCustomerEventually("pq-move-a", func(g Gomega, c *v1alpha1.Customer) { g.Expect(c.Status.Projects).To(Equal(int32(2))) })

			ns := &corev1.Namespace{}
			Expect(partner.Get(ctx, types.NamespacedName{Name: "pq-move-web"}, ns)).To(Succeed())
			ns.Labels[v1alpha1.CustomerLabel] = "pq-move-b"
			moved := time.Now()
			Expect(partner.Update(ctx, ns)).To(Succeed())
			By("counting it out of the old customer and into the new one")
			pqCustomerEventually("pq-move-a", func(g Gomega, c *v1alpha1.Customer) { g.Expect(c.Status.Projects).To(Equal(int32(1))) })
			// The move's reservation records the namespace's version before the move;
			// the controller hands it over once it sees a newer one. Before the
			// reservation could have lapsed (admission timeout + the suite's grace), so
			// that it was released by that comparison, not by time.
			Eventually(func(g Gomega) {
				c := &v1alpha1.Customer{}
				g.Expect(admin.Get(ctx, types.NamespacedName{Name: "pq-move-b"}, c)).To(Succeed())
				g.Expect(c.Status.Projects).To(Equal(int32(1)))
				g.Expect(c.Status.Reservations).To(BeEmpty())
			}).WithTimeout(time.Until(moved.Add(quota.AdmissionTimeout + 5*time.Second - time.Second))).Should(Succeed())
			pqQuotaEventually("pq-move-a", func(g Gomega, q *v1alpha1.CustomerQuota) { g.Expect(q.Status.Used).To(Equal(int32(1))) })

			By("refusing to move another into the now full customer")
			Expect(partner.Get(ctx, types.NamespacedName{Name: "pq-move-api"}, ns)).To(Succeed())
			ns.Labels[v1alpha1.CustomerLabel] = "pq-move-b"
			pqDenied(partner.Update(ctx, ns), `customer "pq-move-b" has 1 of 1 projects (CustomerQuota "pq-move-b")`)

			By("letting a partner remove the label: the namespace stops being a project")
			Expect(partner.Get(ctx, types.NamespacedName{Name: "pq-move-api"}, ns)).To(Succeed())
			delete(ns.Labels, v1alpha1.CustomerLabel)
			Expect(partner.Update(ctx, ns)).To(Succeed())
			pqCustomerEventually("pq-move-a", func(g Gomega, c *v1alpha1.Customer) { g.Expect(c.Status.Projects).To(Equal(int32(0))) })
		})
	})

	Context("system namespaces", func() {
		It("can never be given the customer label, by anyone (ValidatingAdmissionPolicy)", func() {
			pqCustomer("pq-system", nil)
			for _, name := range []string{"kube-system", "default"} {
				By(name)
				Eventually(func(g Gomega) {
					ns := &corev1.Namespace{}
					g.Expect(admin.Get(ctx, types.NamespacedName{Name: name}, ns)).To(Succeed())
					if ns.Labels == nil {
						ns.Labels = map[string]string{}
					}
					ns.Labels[v1alpha1.CustomerLabel] = "pq-system"
					err := admin.Update(ctx, ns)
					g.Expect(err).To(HaveOccurred())
					g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "got %v", err)
					g.Expect(err.Error()).To(ContainSubstring(fmt.Sprintf(
						`namespace "%s" is a system namespace and cannot be a project: metadata.labels must not contain customers.partnerops.io/customer`, name)))
				}).Should(Succeed())
			}
			By("a new kube-* namespace")
			pqDenied(admin.Create(ctx, newProject("kube-pq", "pq-system")), `namespace "kube-pq" is a system namespace`)
			Expect(pqCustomerEventually("pq-system", func(Gomega, *v1alpha1.Customer) {}).Status.Projects).To(BeZero())
		})
	})
})
