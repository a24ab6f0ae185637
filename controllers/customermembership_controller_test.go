package controllers_test

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/mail/mailtest"
	"github.com/partnerops/customer-operator/internal/operator"
)

func newMembership(name, customer, email string, role v1alpha1.Role, mode v1alpha1.InvitationMode) *v1alpha1.CustomerMembership {
	return &v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.CustomerMembershipSpec{
			Customer: v1alpha1.CustomerName(customer), Email: email, Role: role, Invitation: mode,
		},
	}
}

// membershipCondition reads a membership fresh and returns one of its conditions.
func membershipCondition(g Gomega, name, conditionType string) *metav1.Condition {
	m := &v1alpha1.CustomerMembership{}
	g.Expect(admin.Get(ctx, types.NamespacedName{Name: name}, m)).To(Succeed())
	return apimeta.FindStatusCondition(m.Status.Conditions, conditionType)
}

// expectCondition asserts a membership's condition eventually has status and reason.
func expectCondition(name, conditionType string, want metav1.ConditionStatus, reason string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		c := membershipCondition(g, name, conditionType)
		g.Expect(c).NotTo(BeNil(), "condition %s", conditionType)
		g.Expect(c.Status).To(Equal(want), "%s: %s", c.Reason, c.Message)
		g.Expect(c.Reason).To(Equal(reason), c.Message)
	}).Should(Succeed())
}

// mailsTo is how many mails the test SMTP server received for rcpt.
func mailsTo(rcpt string) func() []mailtest.Message {
	return func() []mailtest.Message { return mailServer.MessagesTo(rcpt) }
}

// canI asks the API server whether user may do verb on a resource (SubjectAccessReview).
func canI(user, verb, group, resource, namespace, name string) bool {
	GinkgoHelper()
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: []string{"system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: verb, Group: group, Resource: resource, Namespace: namespace, Name: name,
		},
	}}
	Expect(admin.Create(ctx, review)).To(Succeed())
	return review.Status.Allowed
}

// bindPartner makes user a partner for the rest of the spec.
func bindPartner(user string) {
	GinkgoHelper()
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "test-partner-" + strings.NewReplacer("@", "-", ".", "-").Replace(user)},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "customer-operator-partner"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	Expect(admin.Create(ctx, crb)).To(Succeed())
	DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, crb))).To(Succeed()) })
	// As in msgBind: the authorizer's informer may not have seen the binding yet.
	Eventually(func() bool { return canI(user, "create", v1alpha1.GroupName, "customers", "", "") }).
		Should(BeTrue(), "the authorizer has seen %s bound as a partner", user)
}

// clientAs is an uncached client impersonating user.
func clientAs(user string) client.Client {
	GinkgoHelper()
	c, err := env.ClientAs(user)
	Expect(err).NotTo(HaveOccurred())
	return c
}

// createCustomer creates a Customer, deleted after the spec.
func createCustomer(name, displayName string) *v1alpha1.Customer {
	GinkgoHelper()
	c := newCustomer(name, displayName)
	Expect(admin.Create(ctx, c)).To(Succeed())
	DeferCleanup(func() {
		// Cleanups run in reverse: a project deleted just before may not show as being
		// deleted in the webhook's cache yet ("still has 1 project(s)"); ask again.
		Eventually(func() error {
			return client.IgnoreNotFound(admin.Delete(ctx, newCustomer(name, displayName)))
		}, "30s").Should(Succeed())
		// Gone before the next spec may use the name again (the finalizer runs first).
		Eventually(func() bool {
			return apierrors.IsNotFound(admin.Get(ctx, types.NamespacedName{Name: name}, &v1alpha1.Customer{}))
		}, "60s").Should(BeTrue())
	})
	return c
}

// createProject creates a project namespace, deleted after the spec.
func createProject(name, customer string) {
	GinkgoHelper()
	Expect(admin.Create(ctx, newProject(name, customer))).To(Succeed())
	DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, newProject(name, customer)))).To(Succeed()) })
}

// createMembership creates a membership as admin (a partner), deleted after the spec.
func createMembership(m *v1alpha1.CustomerMembership) *v1alpha1.CustomerMembership {
	GinkgoHelper()
	Expect(admin.Create(ctx, m)).To(Succeed())
	DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, m))).To(Succeed()) })
	return m
}

func getMembership(g Gomega, name string) *v1alpha1.CustomerMembership {
	m := &v1alpha1.CustomerMembership{}
	g.Expect(admin.Get(ctx, types.NamespacedName{Name: name}, m)).To(Succeed())
	return m
}

// warningEvents lists the Warning events about a membership with the given reason.
func warningEvents(g Gomega, membership, reason string) []eventsv1.Event {
	var list eventsv1.EventList
	g.Expect(admin.List(ctx, &list)).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Kind == "CustomerMembership" && e.Regarding.Name == membership && e.Type == "Warning" && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// counter reads a counter of the controller-runtime registry (what /metrics
// serves): the sum of its series with all of labels, 0 when none has counted yet.
func counter(name string, labels map[string]string) float64 {
	GinkgoHelper()
	return metricSum(name, labels)
}

var _ = Describe("CustomerMembership invitations", func() {
	It("sends one e-mail per membership, across re-applies and a manager restart", func() {
		createCustomer("mail-once", "Mail Once & Co")
		m := newMembership("mail-once-dana", "mail-once", "Dana@Example.COM", v1alpha1.RoleEditor, "")
		createMembership(m)

		By("storing the e-mail lower-case (mutating webhook)")
		Expect(m.Spec.Email).To(Equal("dana@example.com"))
		Expect(m.Spec.Invitation).To(Equal(v1alpha1.InvitationEmail), "CRD default")

		By("calling the defaulting webhook only when there is upper case to lower (matchConditions)")
		defaulted := map[string]string{"webhook": "/mutate-customers-partnerops-io-v1alpha1-customermembership", "code": "200"}
		calls := counter("controller_runtime_webhook_requests_total", defaulted)
		Expect(calls).To(BeNumerically(">=", 1), "the mixed-case address above went through it")
		createMembership(newMembership("mail-once-lower", "mail-once", "already.lower@mail-once.example", v1alpha1.RoleViewer, ""))
		Expect(counter("controller_runtime_webhook_requests_total", defaulted)).To(Equal(calls))

		By("sending the invitation once, with the customer's name, the role and a link")
		Eventually(mailsTo("dana@example.com")).Should(HaveLen(1))
		sent := mailsTo("dana@example.com")()[0]
		Expect(sent.Subject).To(ContainSubstring("Mail Once & Co"))
		Expect(sent.Text).To(ContainSubstring("Editor"))
		Expect(sent.Text).To(ContainSubstring(managerOptions.PortalURL + "/invitations/"))
		Expect(sent.HTML).To(ContainSubstring("Mail Once &amp; Co"))
		Expect(sent.MessageID).To(Equal(fmt.Sprintf("<%s.1@customer-operator>", m.UID)))

		expectCondition(m.Name, v1alpha1.InvitedCondition, metav1.ConditionTrue, v1alpha1.InvitationSentReason)
		expectCondition(m.Name, v1alpha1.AcceptedCondition, metav1.ConditionFalse, v1alpha1.AwaitingAcceptanceReason)
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)
		var recorded *v1alpha1.CustomerMembership
		Eventually(func(g Gomega) {
			recorded = getMembership(g, m.Name)
			g.Expect(recorded.Status.ObservedGeneration).To(Equal(recorded.Generation))
		}).Should(Succeed())
		Expect(kstatusOf(recorded)).To(Equal(status.CurrentStatus), "a pending acceptance does not hold Ready back")
		inv := recorded.Status.Invitation
		Expect(inv.Round).To(Equal(int32(1)))
		Expect(inv.Attempts).To(Equal(int32(1)))
		Expect(inv.LastError).To(BeEmpty())
		Expect(inv.ExpiryTime.Sub(inv.SentTime.Time)).To(Equal(managerOptions.InvitationTTL))
		Expect(recorded.Status.Username).To(Equal("dana@example.com"))
		token := linkIn(sent)[strings.Index(linkIn(sent), "/invitations/")+len("/invitations/"):]
		Expect(fmt.Sprintf("%+v", recorded.Status)).NotTo(ContainSubstring(token), "the token is never stored")

		By("sending nothing on a GitOps re-apply that spells the address in mixed case")
		reapply := &unstructuredObj{Object: map[string]any{
			"apiVersion": v1alpha1.GroupVersion.String(), "kind": "CustomerMembership",
			"metadata": map[string]any{"name": m.Name},
			"spec": map[string]any{
				"customer": "mail-once", "email": "DANA@example.com", "role": "Editor", "invitation": "Email",
			},
		}}
		Expect(admin.Apply(ctx, client.ApplyConfigurationFromUnstructured(reapply), client.FieldOwner("argocd"), client.ForceOwnership)).To(Succeed())
		Consistently(mailsTo("dana@example.com"), "2s").Should(HaveLen(1))

		By("sending nothing after a restart: the new manager reads what was sent from status")
		restartAndSettle("customermembership", &v1alpha1.CustomerMembershipList{}, nil)
		Consistently(mailsTo("dana@example.com"), "2s").Should(HaveLen(1))
		Expect(getMembership(Default, m.Name).Status.Invitation.Attempts).To(Equal(int32(1)), "no new attempt either")
	})

	It("retries through an SMTP outage with backoff and delivers once when the server is back", func() {
		createCustomer("outage", "Outage Inc")
		failedBefore := counter("customer_operator_mails_failed_total", map[string]string{"kind": "invitation"})
		sentBefore := counter("customer_operator_mails_sent_total", map[string]string{"kind": "invitation"})

		Expect(mailServer.Stop()).To(Succeed())
		DeferCleanup(func() { _ = mailServer.Start() })
		m := createMembership(newMembership("outage-erin", "outage", "erin@example.com", v1alpha1.RoleViewer, ""))

		By("saying why it is not invited yet, with Ready=False while it retries")
		expectCondition(m.Name, v1alpha1.InvitedCondition, metav1.ConditionFalse, v1alpha1.SendFailedReason)
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.SendFailedReason)
		expectCondition(m.Name, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, v1alpha1.SendFailedReason)
		Eventually(func(g Gomega) {
			inv := getMembership(g, m.Name).Status.Invitation
			g.Expect(inv.LastError).To(ContainSubstring("connection refused"))
			g.Expect(inv.SentTime).To(BeNil())
			g.Expect(warningEvents(g, m.Name, v1alpha1.SendFailedReason)).To(HaveLen(1))
		}).Should(Succeed())
		Expect(counter("customer_operator_mails_failed_total", map[string]string{"kind": "invitation"})).To(BeNumerically(">", failedBefore))

		By("retrying after the backoff, still failing, without a second Warning")
		// status.invitation.attempts counts attempts as they start (the claim is
		// written before the mail goes out), so wait for the second one's failure.
		Eventually(func(g Gomega) {
			invited := membershipCondition(g, m.Name, v1alpha1.InvitedCondition)
			g.Expect(invited).NotTo(BeNil())
			g.Expect(invited.Message).To(ContainSubstring("failed (attempt 2)"))
		}).Should(Succeed())

		By("delivering once the server is back, exactly once")
		Expect(mailServer.Start()).To(Succeed())
		Eventually(mailsTo("erin@example.com"), "60s").Should(HaveLen(1))
		expectCondition(m.Name, v1alpha1.InvitedCondition, metav1.ConditionTrue, v1alpha1.InvitationSentReason)
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)
		Eventually(func(g Gomega) {
			m := getMembership(g, m.Name)
			g.Expect(m.Status.Invitation.LastError).To(BeEmpty())
			g.Expect(m.Status.Invitation.Attempts).To(BeNumerically(">=", 3))
			g.Expect(apimeta.FindStatusCondition(m.Status.Conditions, v1alpha1.ReconcilingCondition)).To(BeNil())
		}).Should(Succeed())
		Consistently(mailsTo("erin@example.com"), "3s").Should(HaveLen(1))
		Expect(counter("customer_operator_mails_sent_total", map[string]string{"kind": "invitation"})).To(BeNumerically(">", sentBefore))
		Consistently(func(g Gomega) {
			warnings := warningEvents(g, m.Name, v1alpha1.SendFailedReason)
			g.Expect(warnings).To(HaveLen(1))
			// A repeated event would have become a series (the unit tests check the
			// rule itself: a Warning when the failure changes, not at every retry).
			g.Expect(warnings[0].Series).To(BeNil())
		}, "1s").Should(Succeed())
	})

	It("reports an expired invitation, and a resend round sends a new link", func() {
		fake := clocktesting.NewFakeClock(time.Now())
		restartManager(func(o *operator.Options) { o.Clock = fake })
		DeferCleanup(func() { restartManager(nil) })

		createCustomer("expiry", "Expiry GmbH")
		m := createMembership(newMembership("expiry-finn", "expiry", "finn@example.com", v1alpha1.RoleViewer, ""))
		Eventually(mailsTo("finn@example.com")).Should(HaveLen(1))
		expectCondition(m.Name, v1alpha1.AcceptedCondition, metav1.ConditionFalse, v1alpha1.AwaitingAcceptanceReason)
		first := mailsTo("finn@example.com")()[0]

		By("expiring after --invitation-ttl on the injected clock")
		fake.Step(managerOptions.InvitationTTL + time.Minute)
		// The requeue at expiry runs on the workqueue's real clock; any event makes the
		// controller look again, as a GitOps re-sync would.
		touch(m.Name)
		expectCondition(m.Name, v1alpha1.AcceptedCondition, metav1.ConditionFalse, v1alpha1.InvitationExpiredReason)
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)
		Eventually(func(g Gomega) {
			g.Expect(membershipCondition(g, m.Name, v1alpha1.AcceptedCondition).Message).To(ContainSubstring(v1alpha1.ResendInvitationAnnotation))
		}).Should(Succeed())
		code, body := httpGet(linkIn(first))
		Expect(code).To(Equal(http.StatusGone))
		Expect(body).To(ContainSubstring("This invitation has expired"))

		By("starting round 2 with a new link and Message-ID when the annotation changes")
		annotate(m.Name, v1alpha1.ResendInvitationAnnotation, "2026-01-01")
		Eventually(mailsTo("finn@example.com")).Should(HaveLen(2))
		second := mailsTo("finn@example.com")()[1]
		Expect(second.MessageID).To(Equal(fmt.Sprintf("<%s.2@customer-operator>", m.UID)))
		Expect(linkIn(second)).NotTo(Equal(linkIn(first)))
		expectCondition(m.Name, v1alpha1.AcceptedCondition, metav1.ConditionFalse, v1alpha1.AwaitingAcceptanceReason)
		Eventually(func(g Gomega) {
			inv := getMembership(g, m.Name).Status.Invitation
			g.Expect(inv.Round).To(Equal(int32(2)))
			g.Expect(inv.ResendRequest).To(Equal("2026-01-01"))
			g.Expect(inv.Attempts).To(Equal(int32(1)))
			g.Expect(inv.SentTime.Time).To(BeTemporally("~", fake.Now(), time.Second))
		}).Should(Succeed())

		By("not starting another round for the same annotation value")
		touch(m.Name)
		Consistently(mailsTo("finn@example.com"), "2s").Should(HaveLen(2))
	})

	It("mails one address at most once per --invitation-min-interval, however often it is re-sent or re-created", func() {
		fake := clocktesting.NewFakeClock(time.Now())
		restartManager(func(o *operator.Options) { o.Clock, o.InvitationMinInterval = fake, time.Hour })
		DeferCleanup(func() { restartManager(nil) })

		createCustomer("spaced", "Spaced Ltd")
		m := createMembership(newMembership("spaced-gil", "spaced", "gil@example.com", v1alpha1.RoleViewer, ""))
		Eventually(mailsTo("gil@example.com")).Should(HaveLen(1))

		first := mailsTo("gil@example.com")()[0]

		By("holding back a resend within the interval, visibly, with the first link still working")
		annotate(m.Name, v1alpha1.ResendInvitationAnnotation, "1")
		Eventually(func(g Gomega) {
			reconciling := membershipCondition(g, m.Name, v1alpha1.ReconcilingCondition)
			g.Expect(reconciling).NotTo(BeNil())
			g.Expect(reconciling.Reason).To(Equal(v1alpha1.InvitationPendingReason))
			g.Expect(reconciling.Message).To(HavePrefix("a new invitation (round 2) was requested; the link of round 1 works until then; held back until "))
			g.Expect(reconciling.Message).To(ContainSubstring(`an invitation to gil@example.com for customer "spaced" went out at`))
			g.Expect(reconciling.Message).To(ContainSubstring("one address gets at most one per 1h0m0s (--invitation-min-interval)"))
		}).Should(Succeed())
		Consistently(mailsTo("gil@example.com"), "1s").Should(HaveLen(1))
		Expect(getMembership(Default, m.Name).Status.Invitation.Round).To(Equal(int32(1)))
		code, _ := httpGet(linkIn(first))
		Expect(code).To(Equal(http.StatusOK), "round 1's link still opens")

		By("and a membership deleted and created again for the same address")
		Expect(admin.Delete(ctx, m)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(admin.Get(ctx, client.ObjectKeyFromObject(m), &v1alpha1.CustomerMembership{}))
		}).Should(BeTrue())
		again := createMembership(newMembership("spaced-gil", "spaced", "gil@example.com", v1alpha1.RoleViewer, ""))
		Eventually(func(g Gomega) {
			invited := membershipCondition(g, again.Name, v1alpha1.InvitedCondition)
			g.Expect(invited).NotTo(BeNil())
			g.Expect(invited.Reason).To(Equal(v1alpha1.InvitationPendingReason))
			g.Expect(invited.Message).To(HavePrefix("held back until "))
		}).Should(Succeed())
		Consistently(mailsTo("gil@example.com"), "1s").Should(HaveLen(1))

		By("while another address of the customer goes at once")
		createMembership(newMembership("spaced-hana", "spaced", "hana@example.com", v1alpha1.RoleViewer, ""))
		Eventually(mailsTo("hana@example.com")).Should(HaveLen(1))

		By("sending once the interval has passed")
		fake.Step(time.Hour)
		touch(again.Name)
		Eventually(mailsTo("gil@example.com")).Should(HaveLen(2))
		expectCondition(again.Name, v1alpha1.InvitedCondition, metav1.ConditionTrue, v1alpha1.InvitationSentReason)
	})

	It("mails a customer's invitations at most --max-invitations-per-customer-per-hour at once, holding back the rest visibly", func() {
		fake := clocktesting.NewFakeClock(time.Now())
		restartManager(func(o *operator.Options) { o.Clock, o.MaxInvitationsPerCustomerPerHour = fake, 2 })
		DeferCleanup(func() { restartManager(nil) })

		createCustomer("throttled", "Throttled Ltd")
		createMembership(newMembership("throttled-ida", "throttled", "throttled-ida@example.com", v1alpha1.RoleViewer, ""))
		createMembership(newMembership("throttled-jon", "throttled", "throttled-jon@example.com", v1alpha1.RoleViewer, ""))
		Eventually(mailsTo("throttled-ida@example.com")).Should(HaveLen(1))
		Eventually(mailsTo("throttled-jon@example.com")).Should(HaveLen(1))

		By("holding back the third, visibly, without an attempt")
		kim := createMembership(newMembership("throttled-kim", "throttled", "throttled-kim@example.com", v1alpha1.RoleViewer, ""))
		Eventually(func(g Gomega) {
			invited := membershipCondition(g, kim.Name, v1alpha1.InvitedCondition)
			g.Expect(invited).NotTo(BeNil())
			g.Expect(invited.Reason).To(Equal(v1alpha1.InvitationPendingReason))
			g.Expect(invited.Message).To(MatchRegexp(`^held back until \S+: invitations for customer "throttled" go out at most 2 at once and 2 an hour after that \(--max-invitations-per-customer-per-hour\)$`))
			reconciling := membershipCondition(g, kim.Name, v1alpha1.ReconcilingCondition)
			g.Expect(reconciling).NotTo(BeNil())
			g.Expect(reconciling.Message).To(Equal(invited.Message))
		}).Should(Succeed())
		Consistently(mailsTo("throttled-kim@example.com"), "1s").Should(BeEmpty())
		Expect(getMembership(Default, kim.Name).Status.Invitation.Attempts).To(BeZero(), "nothing was tried")
		kimHeld := membershipCondition(Default, kim.Name, v1alpha1.InvitedCondition).Message

		By("giving the fourth the slot after the third's")
		fourth := createMembership(newMembership("throttled-max", "throttled", "throttled-max@example.com", v1alpha1.RoleViewer, ""))
		Eventually(func(g Gomega) {
			invited := membershipCondition(g, fourth.Name, v1alpha1.InvitedCondition)
			g.Expect(invited).NotTo(BeNil())
			g.Expect(invited.Message).To(HavePrefix("held back until "))
			g.Expect(invited.Message).NotTo(Equal(kimHeld))
		}).Should(Succeed())
		Expect(membershipCondition(Default, kim.Name, v1alpha1.InvitedCondition).Message).To(Equal(kimHeld), "the third's slot did not move")

		By("holding the fifth without a slot: the next hour's are taken")
		fifth := createMembership(newMembership("throttled-ned", "throttled", "throttled-ned@example.com", v1alpha1.RoleViewer, ""))
		Eventually(func(g Gomega) {
			invited := membershipCondition(g, fifth.Name, v1alpha1.InvitedCondition)
			g.Expect(invited).NotTo(BeNil())
			g.Expect(invited.Message).To(Equal(`held back: invitations for customer "throttled" go out at most 2 at once and 2 an hour after that (--max-invitations-per-customer-per-hour), and every slot of the next hour is taken; this one gets a slot when one comes free`))
		}).Should(Succeed())

		By("while another customer's invitations go at once")
		createCustomer("unthrottled", "Unthrottled Ltd")
		createMembership(newMembership("unthrottled-lea", "unthrottled", "throttled-lea@example.com", v1alpha1.RoleViewer, ""))
		Eventually(mailsTo("throttled-lea@example.com")).Should(HaveLen(1))

		By("sending the third once half an hour has passed, the fourth not yet")
		fake.Step(30 * time.Minute)
		touch(kim.Name)
		touch(fourth.Name)
		Eventually(mailsTo("throttled-kim@example.com")).Should(HaveLen(1))
		expectCondition(kim.Name, v1alpha1.InvitedCondition, metav1.ConditionTrue, v1alpha1.InvitationSentReason)
		Consistently(mailsTo("throttled-max@example.com"), "1s").Should(BeEmpty())
		touch(fifth.Name)
		Eventually(func(g Gomega) {
			g.Expect(membershipCondition(g, fifth.Name, v1alpha1.InvitedCondition).Message).To(HavePrefix("held back until "))
		}).Should(Succeed(), "the fifth has a slot now")

		By("and the fourth half an hour later")
		fake.Step(30 * time.Minute)
		touch(fourth.Name)
		Eventually(mailsTo("throttled-max@example.com")).Should(HaveLen(1))
	})

	It("waits for its customer, sends nothing meanwhile, and resumes without a second mail", func() {
		m := createMembership(newMembership("late-gina", "late-customer", "gina@example.com", v1alpha1.RoleViewer, ""))
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.CustomerNotFoundReason)
		expectCondition(m.Name, v1alpha1.StalledCondition, metav1.ConditionTrue, v1alpha1.CustomerNotFoundReason)
		Eventually(func(g Gomega) {
			g.Expect(kstatusOf(getMembership(g, m.Name))).To(Equal(status.FailedStatus))
		}).Should(Succeed())
		Consistently(mailsTo("gina@example.com"), "2s").Should(BeEmpty())

		By("sending once the customer exists")
		createCustomer("late-customer", "Late Customer")
		Eventually(mailsTo("gina@example.com")).Should(HaveLen(1))
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)

		By("stalling again when the customer goes, and resuming without a new mail when it is back")
		Expect(admin.Delete(ctx, newCustomer("late-customer", ""))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(admin.Get(ctx, types.NamespacedName{Name: "late-customer"}, &v1alpha1.Customer{}))
		}).Should(BeTrue())
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.CustomerNotFoundReason)
		Expect(admin.Create(ctx, newCustomer("late-customer", "Late Customer"))).To(Succeed())
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)
		Consistently(mailsTo("gina@example.com"), "2s").Should(HaveLen(1))
	})
})

// touch changes a label of a membership: an event that makes the controller look again.
func touch(name string) {
	GinkgoHelper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"test.partnerops.io/touched":"%d"}}}`, time.Now().UnixNano())
	Expect(admin.Patch(ctx, &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: name}},
		client.RawPatch(types.MergePatchType, []byte(patch)))).To(Succeed())
}

func annotate(name, key, value string) {
	GinkgoHelper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	Expect(admin.Patch(ctx, &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: name}},
		client.RawPatch(types.MergePatchType, []byte(patch)))).To(Succeed())
}

// linkIn finds the invitation link in a mail's text.
func linkIn(m mailtest.Message) string {
	GinkgoHelper()
	for _, field := range strings.Fields(m.Text) {
		if strings.Contains(field, "/invitations/") {
			return field
		}
	}
	Fail("no invitation link in the mail:\n" + m.Text)
	return ""
}
