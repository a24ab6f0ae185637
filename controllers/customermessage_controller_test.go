package controllers_test

import (
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/mail/mailtest"
	"github.com/partnerops/customer-operator/internal/operator"
)

// The specs of this file act as real users: each request is impersonated, with the
// RBAC a member gets (create on MessageAcknowledgements) bound to them here, so that
// what is tested is admission and the controllers, not who granted the RBAC.

// msgMember is a membership with invitation None: active at once, as a partner makes it.
func msgMember(customer, email string, role v1alpha1.Role) *v1alpha1.CustomerMembership {
	return &v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: customer + "-" + strings.NewReplacer("@", "-at-").Replace(email)},
		Spec: v1alpha1.CustomerMembershipSpec{
			Customer: v1alpha1.CustomerName(customer), Email: email, Role: role,
			Invitation: v1alpha1.InvitationNone,
		},
	}
}

func msgMessage(name, customer string, policy v1alpha1.ReadPolicy, roles ...v1alpha1.Role) *v1alpha1.CustomerMessage {
	return &v1alpha1.CustomerMessage{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.CustomerMessageSpec{
			Customer: v1alpha1.CustomerName(customer), Title: "Maintenance on Saturday",
			Body: "The cluster is upgraded on Saturday between 06:00 and 08:00 UTC.", ReadPolicy: policy, Roles: roles,
		},
	}
}

func msgAck(name, message, user string) *v1alpha1.MessageAcknowledgement {
	return &v1alpha1.MessageAcknowledgement{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.MessageAcknowledgementSpec{Message: message, User: user},
	}
}

// msgAcknowledgeRole is bound to every user of these specs: members get the same
// right from the access controller.
const msgAcknowledgeRole = "msgtest-acknowledge"

// msgUser returns an impersonating client for user, who may create acknowledgements.
func msgUser(user string) client.Client {
	GinkgoHelper()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: msgAcknowledgeRole},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{v1alpha1.GroupName}, Resources: []string{"messageacknowledgements"}, Verbs: []string{"create"},
		}},
	}
	if err := admin.Create(ctx, role); err != nil && !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
	msgBind(user, msgAcknowledgeRole)
	c, err := env.ClientAs(user)
	Expect(err).NotTo(HaveOccurred())
	return c
}

// msgBind binds a ClusterRole to user, idempotently.
func msgBind(user, clusterRole string) {
	GinkgoHelper()
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "msgtest-" + clusterRole + "-" + strings.NewReplacer("@", "-at-", ":", "-").Replace(user)},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if err := admin.Create(ctx, binding); err != nil && !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
	waitBound(user, clusterRole)
}

// waitBound waits until the API server's authorizer grants user the first rule of
// clusterRole: it reads bindings from its own informer, so a request right after a
// binding's create could still be refused.
func waitBound(user, clusterRole string) {
	GinkgoHelper()
	role := &rbacv1.ClusterRole{}
	Expect(admin.Get(ctx, client.ObjectKey{Name: clusterRole}, role)).To(Succeed())
	Expect(role.Rules).NotTo(BeEmpty(), "ClusterRole %s has no rules to wait for", clusterRole)
	rule := role.Rules[0]
	name := ""
	if len(rule.ResourceNames) > 0 {
		name = rule.ResourceNames[0]
	}
	Eventually(func() bool {
		return canI(user, rule.Verbs[0], rule.APIGroups[0], rule.Resources[0], "", name)
	}).Should(BeTrue(), "the authorizer has seen %s bound to %s", user, clusterRole)
}

// msgCustomerWithMembers creates a customer and active members.
func msgCustomerWithMembers(customer string, members ...*v1alpha1.CustomerMembership) {
	GinkgoHelper()
	Expect(admin.Create(ctx, newCustomer(customer, customer))).To(Succeed())
	for _, m := range members {
		Expect(admin.Create(ctx, m)).To(Succeed())
	}
}

// msgEventually returns the message once check passes on a fresh read.
func msgEventually(name string, check func(g Gomega, m *v1alpha1.CustomerMessage)) *v1alpha1.CustomerMessage {
	GinkgoHelper()
	m := &v1alpha1.CustomerMessage{}
	Eventually(func(g Gomega) {
		g.Expect(admin.Get(ctx, client.ObjectKey{Name: name}, m)).To(Succeed())
		check(g, m)
	}).Should(Succeed())
	return m
}

func msgCondition(m *v1alpha1.CustomerMessage, conditionType string) *metav1.Condition {
	return apimeta.FindStatusCondition(m.Status.Conditions, conditionType)
}

func msgUsers(m *v1alpha1.CustomerMessage) []string {
	var users []string
	for _, a := range m.Status.AcknowledgedBy {
		users = append(users, a.User)
	}
	return users
}

// expectDenied checks that err is a 403 from admission whose message contains each
// of want.
func expectDenied(err error, want ...string) {
	GinkgoHelper()
	Expect(err).To(HaveOccurred())
	Expect(apierrors.IsForbidden(err)).To(BeTrue(), "want 403 Forbidden, got %v", err)
	for _, w := range want {
		Expect(err.Error()).To(ContainSubstring(w))
	}
}

var _ = Describe("CustomerMessage", func() {
	It("resolves an AllMustRead message once every recipient acknowledged, and garbage-collects the acknowledgements with it", func() {
		alice, bob := "alice@all.example", "bob@all.example"
		msgCustomerWithMembers("msg-all",
			msgMember("msg-all", alice, v1alpha1.RoleAdmin), msgMember("msg-all", bob, v1alpha1.RoleViewer))
		Expect(admin.Create(ctx, msgMessage("msg-all-notice", "msg-all", v1alpha1.AllMustRead))).To(Succeed())

		By("addressing both active members, holding nothing back from Ready")
		m := msgEventually("msg-all-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.ObservedGeneration).To(Equal(m.Generation))
			g.Expect(m.Status.Recipients).To(Equal(int32(2)))
			g.Expect(m.Status.Pending).To(Equal(int32(2)))
			g.Expect(readyCondition(m).Status).To(Equal(metav1.ConditionTrue))
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Reason).To(Equal(v1alpha1.AwaitingAcknowledgementReason))
			g.Expect(m.Status.PublishedTime).NotTo(BeNil())
		})
		Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionFalse))
		Expect(kstatusOf(m)).To(Equal(status.CurrentStatus))

		By("acknowledging as alice")
		asAlice := msgUser(alice)
		Expect(asAlice.Create(ctx, msgAck("msg-all-notice-alice", "msg-all-notice", alice))).To(Succeed())
		ack := &v1alpha1.MessageAcknowledgement{}
		Eventually(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: "msg-all-notice-alice"}, ack)).To(Succeed())
			g.Expect(ack.OwnerReferences).To(ConsistOf(HaveField("UID", m.UID)))
			g.Expect(*ack.OwnerReferences[0].BlockOwnerDeletion).To(BeFalse())
			g.Expect(readyCondition(ack)).NotTo(BeNil())
			g.Expect(readyCondition(ack).Status).To(Equal(metav1.ConditionTrue))
		}).Should(Succeed())
		Expect(kstatusOf(ack)).To(Equal(status.CurrentStatus))
		msgEventually("msg-all-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgUsers(m)).To(Equal([]string{alice}))
			g.Expect(m.Status.Pending).To(Equal(int32(1)))
			g.Expect(m.Status.Reservations).To(BeEmpty(), "released once the acknowledgement is listed")
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Message).To(Equal("1 of 2 recipient(s) have not acknowledged yet"))
		})

		By("refusing alice's second acknowledgement")
		expectDenied(asAlice.Create(ctx, msgAck("msg-all-notice-alice-again", "msg-all-notice", alice)),
			`"alice@all.example" already acknowledged CustomerMessage "msg-all-notice"`, "one acknowledgement per user and message")

		By("resolving it when bob acknowledges too")
		Expect(msgUser(bob).Create(ctx, msgAck("msg-all-notice-bob", "msg-all-notice", bob))).To(Succeed())
		m = msgEventually("msg-all-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionTrue))
		})
		Expect(msgUsers(m)).To(Equal([]string{alice, bob}))
		Expect(m.Status.Pending).To(BeZero())
		Expect(m.Status.Recipients).To(Equal(int32(2)))
		Expect(msgCondition(m, v1alpha1.ResolvedCondition).Reason).To(Equal(v1alpha1.AcknowledgedReason))
		Expect(msgCondition(m, v1alpha1.ResolvedCondition).Message).To(Equal("acknowledged by all 2 recipient(s) (AllMustRead)"))
		Eventually(func(g Gomega) {
			var events eventsv1.EventList
			g.Expect(admin.List(ctx, &events)).To(Succeed())
			var resolved []string
			for _, e := range events.Items {
				if e.Regarding.Name == "msg-all-notice" && e.Reason == "Resolved" {
					resolved = append(resolved, e.Note)
				}
			}
			g.Expect(resolved).To(ConsistOf("acknowledged by all 2 recipient(s) (AllMustRead)"))
		}).Should(Succeed())

		By("staying resolved when a member joins later, who then has nothing to acknowledge")
		carol := "carol@all.example"
		Expect(admin.Create(ctx, msgMember("msg-all", carol, v1alpha1.RoleEditor))).To(Succeed())
		msgEventually("msg-all-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(3)))
		})
		Consistently(func(g Gomega) {
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: "msg-all-notice"}, m)).To(Succeed())
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionTrue))
			g.Expect(m.Status.Pending).To(BeZero())
		}, "1s").Should(Succeed())
		expectDenied(msgUser(carol).Create(ctx, msgAck("msg-all-notice-carol", "msg-all-notice", carol)),
			`CustomerMessage "msg-all-notice" is already resolved`, "nothing left to acknowledge")

		By("deleting the acknowledgements with the message (kube-controller-manager's garbage collector)")
		Expect(admin.Delete(ctx, m)).To(Succeed())
		Eventually(func(g Gomega) {
			var acks v1alpha1.MessageAcknowledgementList
			g.Expect(admin.List(ctx, &acks)).To(Succeed())
			for _, a := range acks.Items {
				g.Expect(a.Spec.Message).NotTo(Equal("msg-all-notice"))
			}
		}, "60s").Should(Succeed())
	})

	It("refuses a forged user, a non-member, a member of another role and an unknown message, naming the rule", func() {
		alice, bob, mallory := "alice@forge.example", "bob@forge.example", "mallory@forge.example"
		msgCustomerWithMembers("msg-forge",
			msgMember("msg-forge", alice, v1alpha1.RoleAdmin), msgMember("msg-forge", bob, v1alpha1.RoleViewer))
		Expect(admin.Create(ctx, msgMessage("msg-forge-admins", "msg-forge", v1alpha1.AllMustRead, v1alpha1.RoleAdmin))).To(Succeed())
		msgEventually("msg-forge-admins", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(1)))
		})

		By("refusing alice acknowledging in bob's name")
		expectDenied(msgUser(alice).Create(ctx, msgAck("forged", "msg-forge-admins", bob)),
			`spec.user "bob@forge.example" must be your own username "alice@forge.example"`)

		By("refusing a partner acknowledging in someone else's name too")
		expectDenied(admin.Create(ctx, msgAck("forged-by-admin", "msg-forge-admins", alice)), "must be your own username")

		By("refusing someone who is no member, in the words for a missing message (nothing about the customer)")
		expectDenied(msgUser(mallory).Create(ctx, msgAck("by-mallory", "msg-forge-admins", mallory)),
			`spec.message: CustomerMessage "msg-forge-admins" does not exist, or its customer has no active member "mallory@forge.example"`)

		By("refusing a member of a role the message does not address, saying whom it addresses")
		expectDenied(msgUser(bob).Create(ctx, msgAck("by-bob", "msg-forge-admins", bob)),
			`"bob@forge.example" is not a recipient of CustomerMessage "msg-forge-admins"`,
			`addressed to the active members in role(s) [Admin] of customer "msg-forge"`)

		By("refusing an unknown message")
		expectDenied(msgUser(alice).Create(ctx, msgAck("of-nothing", "msg-forge-nothing", alice)),
			`spec.message: CustomerMessage "msg-forge-nothing" does not exist, or its customer has no active member "alice@forge.example"`)

		By("reserving nothing for a dry-run that is admitted")
		Expect(msgUser(alice).Create(ctx, msgAck("dry", "msg-forge-admins", alice), client.DryRunAll)).To(Succeed())
		Consistently(func(g Gomega) {
			m := &v1alpha1.CustomerMessage{}
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: "msg-forge-admins"}, m)).To(Succeed())
			g.Expect(m.Status.Reservations).To(BeEmpty())
			g.Expect(m.Status.AcknowledgedBy).To(BeEmpty())
		}, "1s").Should(Succeed())
		Expect(msgUser(alice).Create(ctx, msgAck("real", "msg-forge-admins", alice))).To(Succeed())
	})

	It("keeps a SingleRead message for the members of its publication, and counts later members under AllMustRead", func() {
		const customer = "msg-later"
		gus, hal := "gus@later.example", "hal@later.example"
		msgCustomerWithMembers(customer, msgMember(customer, gus, v1alpha1.RoleEditor))
		single := msgMessage("msg-later-single", customer, v1alpha1.SingleRead)
		all := msgMessage("msg-later-all", customer, v1alpha1.AllMustRead)
		Expect(admin.Create(ctx, single)).To(Succeed())
		Expect(admin.Create(ctx, all)).To(Succeed())
		var published time.Time
		for _, name := range []string{single.Name, all.Name} {
			m := msgEventually(name, func(g Gomega, m *v1alpha1.CustomerMessage) {
				g.Expect(m.Status.Recipients).To(Equal(int32(1)))
				g.Expect(m.Status.PublishedTime).NotTo(BeNil())
			})
			if m.Status.PublishedTime.After(published) {
				published = m.Status.PublishedTime.Time
			}
		}

		By("a member who joins after the publication (times have whole seconds)")
		Eventually(func() bool { return time.Now().After(published.Add(1100 * time.Millisecond)) }, "3s").Should(BeTrue())
		Expect(admin.Create(ctx, msgMember(customer, hal, v1alpha1.RoleEditor))).To(Succeed())
		msgEventually(all.Name, func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(2)), "AllMustRead: from then on")
		})
		Consistently(func(g Gomega) {
			m := msgEventually(single.Name, func(Gomega, *v1alpha1.CustomerMessage) {})
			g.Expect(m.Status.Recipients).To(Equal(int32(1)), "SingleRead: the members of its publication")
		}, "1s").Should(Succeed())
		err := msgUser(hal).Create(ctx, msgAck("msg-later-single-hal", single.Name, hal))
		expectDenied(err, `"hal@later.example" is not a recipient of CustomerMessage "msg-later-single": it is a SingleRead message for the active members of customer "msg-later" when it was published`)
		Expect(msgUser(hal).Create(ctx, msgAck("msg-later-all-hal", all.Name, hal))).To(Succeed())

		By("an update of an acknowledgement's metadata alone does not call its webhook (matchConditions)")
		ackHook := map[string]string{"webhook": "/validate-customers-partnerops-io-v1alpha1-messageacknowledgement", "code": "200"}
		calls := func() float64 { return counter("controller_runtime_webhook_requests_total", ackHook) }
		Eventually(func(g Gomega) {
			ack := &v1alpha1.MessageAcknowledgement{}
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: "msg-later-all-hal"}, ack)).To(Succeed())
			g.Expect(ack.OwnerReferences).NotTo(BeEmpty(), "the operator's owner reference, an UPDATE of its own")
		}).Should(Succeed())
		before := calls()
		Expect(updateFresh(&v1alpha1.MessageAcknowledgement{ObjectMeta: metav1.ObjectMeta{Name: "msg-later-all-hal"}}, func() {})).To(Succeed())
		Expect(admin.Patch(ctx, &v1alpha1.MessageAcknowledgement{ObjectMeta: metav1.ObjectMeta{Name: "msg-later-all-hal"}},
			client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"team":"ops"}}}`)))).To(Succeed())
		// A create must call it: once that call shows, the updates' would have too.
		Expect(msgUser(gus).Create(ctx, msgAck("msg-later-single-gus", single.Name, gus))).To(Succeed())
		Eventually(calls).Should(BeNumerically(">", before))
		Consistently(calls, "500ms").Should(Equal(before + 1))
		msgEventually(single.Name, func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionTrue))
		})
	})

	It("publishes a SingleRead message again when every member of its publication has left", func() {
		const customer = "msg-left"
		ivy, jon := "ivy@left.example", "jon@left.example"
		ivyMember := msgMember(customer, ivy, v1alpha1.RoleEditor)
		msgCustomerWithMembers(customer, ivyMember)
		single := msgMessage("msg-left-single", customer, v1alpha1.SingleRead)
		Expect(admin.Create(ctx, single)).To(Succeed())
		first := msgEventually(single.Name, func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(1)))
		}).Status.PublishedTime.Time

		Expect(admin.Delete(ctx, ivyMember)).To(Succeed())
		Eventually(func() bool { return time.Now().After(first.Add(1100 * time.Millisecond)) }, "3s").Should(BeTrue())
		Expect(admin.Create(ctx, msgMember(customer, jon, v1alpha1.RoleEditor))).To(Succeed())
		msgEventually(single.Name, func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(1)))
			g.Expect(m.Status.PublishedTime.Time).To(BeTemporally(">", first), "published again, to jon")
		})
		Expect(msgUser(jon).Create(ctx, msgAck("msg-left-single-jon", single.Name, jon))).To(Succeed())
		msgEventually(single.Name, func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionTrue))
		})
	})

	It("lets exactly one of several concurrent acknowledgements resolve a SingleRead message, and tells the others who did", func() {
		const n = 6
		var users []string
		var members []*v1alpha1.CustomerMembership
		for i := range n {
			users = append(users, fmt.Sprintf("user%d@single.example", i))
			members = append(members, msgMember("msg-single", users[i], v1alpha1.RoleEditor))
		}
		msgCustomerWithMembers("msg-single", members...)
		Expect(admin.Create(ctx, msgMessage("msg-single-notice", "msg-single", v1alpha1.SingleRead))).To(Succeed())
		msgEventually("msg-single-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(n)))
		})
		clients := make([]client.Client, n)
		for i := range n {
			clients[i] = msgUser(users[i])
		}

		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer GinkgoRecover()
				<-start
				errs[i] = clients[i].Create(ctx, msgAck(fmt.Sprintf("msg-single-notice-%d", i), "msg-single-notice", users[i]))
			}()
		}
		close(start)
		wg.Wait()

		winner := -1
		for i, err := range errs {
			if err == nil {
				Expect(winner).To(Equal(-1), "a second acknowledgement was admitted: users %d and %d", winner, i)
				winner = i
			}
		}
		Expect(winner).NotTo(Equal(-1), "no acknowledgement was admitted: %v", errs)
		for i, err := range errs {
			if i != winner {
				expectDenied(err, `CustomerMessage "msg-single-notice" is already resolved for everyone by "`+users[winner]+`" (SingleRead)`)
			}
		}

		m := msgEventually("msg-single-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionTrue))
		})
		Expect(msgUsers(m)).To(Equal([]string{users[winner]}))
		Expect(m.Status.Pending).To(BeZero())
		Expect(msgCondition(m, v1alpha1.ResolvedCondition).Message).To(Equal(`resolved for everyone by "` + users[winner] + `" (SingleRead)`))
		var acks v1alpha1.MessageAcknowledgementList
		Expect(admin.List(ctx, &acks)).To(Succeed())
		count := 0
		for _, a := range acks.Items {
			if a.Spec.Message == "msg-single-notice" {
				count++
			}
		}
		Expect(count).To(Equal(1))
	})

	It("admits one of several concurrent acknowledgements by the same user", func() {
		alice := "alice@twice.example"
		msgCustomerWithMembers("msg-twice", msgMember("msg-twice", alice, v1alpha1.RoleAdmin))
		Expect(admin.Create(ctx, msgMessage("msg-twice-notice", "msg-twice", v1alpha1.AllMustRead))).To(Succeed())
		msgEventually("msg-twice-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(1)))
		})
		asAlice := msgUser(alice)

		const n = 5
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer GinkgoRecover()
				<-start
				errs[i] = asAlice.Create(ctx, msgAck(fmt.Sprintf("msg-twice-notice-%d", i), "msg-twice-notice", alice))
			}()
		}
		close(start)
		wg.Wait()
		admitted := 0
		for _, err := range errs {
			if err == nil {
				admitted++
			} else {
				expectDenied(err, `"alice@twice.example"`, "msg-twice-notice")
			}
		}
		Expect(admitted).To(Equal(1), "errors: %v", errs)
		msgEventually("msg-twice-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgUsers(m)).To(Equal([]string{alice}))
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionTrue))
		})
	})

	It("counts a duplicate that raced past admission once, and marks it Duplicate", func() {
		alice, bob := "alice@race.example", "bob@race.example"
		msgCustomerWithMembers("msg-race",
			msgMember("msg-race", alice, v1alpha1.RoleAdmin), msgMember("msg-race", bob, v1alpha1.RoleAdmin))
		Expect(admin.Create(ctx, msgMessage("msg-race-notice", "msg-race", v1alpha1.AllMustRead))).To(Succeed())
		msgEventually("msg-race-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(2)))
		})

		withoutWebhook("vmessageacknowledgement.customers.partnerops.io", func() {
			// The API server drops the webhook a moment after the configuration changes.
			Eventually(func() error {
				return admin.Create(ctx, msgAck("msg-race-notice-a", "msg-race-notice", alice))
			}).Should(Succeed())
			Eventually(func(g Gomega) {
				a := &v1alpha1.MessageAcknowledgement{}
				g.Expect(admin.Get(ctx, client.ObjectKey{Name: "msg-race-notice-a"}, a)).To(Succeed())
				g.Expect(readyCondition(a)).NotTo(BeNil())
			}).Should(Succeed())
			Expect(admin.Create(ctx, msgAck("msg-race-notice-b", "msg-race-notice", alice))).To(Succeed())
		})
		By("having the webhook back before going on")
		Eventually(func() error {
			return admin.Create(ctx, msgAck("msg-race-probe", "msg-race-notice", bob), client.DryRunAll)
		}).Should(MatchError(ContainSubstring("must be your own username")))

		Eventually(func(g Gomega) {
			dup := &v1alpha1.MessageAcknowledgement{}
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: "msg-race-notice-b"}, dup)).To(Succeed())
			g.Expect(readyCondition(dup)).NotTo(BeNil())
			g.Expect(readyCondition(dup).Status).To(Equal(metav1.ConditionFalse))
			g.Expect(readyCondition(dup).Reason).To(Equal(v1alpha1.DuplicateReason))
			g.Expect(readyCondition(dup).Message).To(ContainSubstring(`MessageAcknowledgement "msg-race-notice-a"`))
		}).Should(Succeed())
		m := msgEventually("msg-race-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgUsers(m)).To(Equal([]string{alice}))
		})
		Expect(m.Status.Pending).To(Equal(int32(1)))
		Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionFalse))

		By("marking the earlier one a duplicate when the later one wins the tie-break (the same second, an earlier name)")
		withoutWebhook("vmessageacknowledgement.customers.partnerops.io", func() {
			for attempt := 0; ; attempt++ {
				Expect(attempt).To(BeNumerically("<", 20), "two creates within one second, z reconciled between them")
				// Start just after a second begins, so that z's create, its reconcile and
				// y's create have the whole second (timestamps have whole seconds).
				time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
				Eventually(func() error {
					return admin.Create(ctx, msgAck("msg-race-notice-z", "msg-race-notice", bob))
				}).Should(Succeed())
				z := &v1alpha1.MessageAcknowledgement{}
				zReady := func() bool {
					return admin.Get(ctx, client.ObjectKey{Name: "msg-race-notice-z"}, z) == nil &&
						readyCondition(z) != nil && readyCondition(z).Status == metav1.ConditionTrue
				}
				for end := time.Now().Truncate(time.Second).Add(950 * time.Millisecond); !zReady() && time.Now().Before(end); {
					time.Sleep(20 * time.Millisecond)
				}
				if zReady() {
					y := msgAck("msg-race-notice-y", "msg-race-notice", bob)
					Expect(admin.Create(ctx, y)).To(Succeed())
					if y.CreationTimestamp.Equal(&z.CreationTimestamp) {
						break
					}
					// Not the same second: z is older and stays the one that counts. Again.
					Expect(admin.Delete(ctx, y)).To(Succeed())
				}
				Expect(admin.Delete(ctx, msgAck("msg-race-notice-z", "", ""))).To(Succeed())
				Eventually(func() bool {
					return apierrors.IsNotFound(admin.Get(ctx, client.ObjectKey{Name: "msg-race-notice-z"}, z))
				}).Should(BeTrue())
			}
		})
		Eventually(func(g Gomega) {
			z := &v1alpha1.MessageAcknowledgement{}
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: "msg-race-notice-z"}, z)).To(Succeed())
			g.Expect(readyCondition(z).Reason).To(Equal(v1alpha1.DuplicateReason))
			g.Expect(readyCondition(z).Message).To(ContainSubstring(`MessageAcknowledgement "msg-race-notice-y"`))
		}).Should(Succeed())

		By("letting the duplicate count once the original is gone")
		Expect(admin.Delete(ctx, msgAck("msg-race-notice-a", "", ""))).To(Succeed())
		Eventually(func(g Gomega) {
			dup := &v1alpha1.MessageAcknowledgement{}
			g.Expect(admin.Get(ctx, client.ObjectKey{Name: "msg-race-notice-b"}, dup)).To(Succeed())
			g.Expect(readyCondition(dup).Status).To(Equal(metav1.ConditionTrue))
		}).Should(Succeed())
	})

	It("follows the membership while open: later members become recipients, members who leave stop blocking", func() {
		alice, bob, carol := "alice@follow.example", "bob@follow.example", "carol@follow.example"
		msgCustomerWithMembers("msg-follow", msgMember("msg-follow", alice, v1alpha1.RoleAdmin))
		Expect(admin.Create(ctx, msgMessage("msg-follow-notice", "msg-follow", v1alpha1.AllMustRead))).To(Succeed())
		msgEventually("msg-follow-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(1)))
		})

		By("counting bob and carol, who join before it is resolved")
		bobMembership := msgMember("msg-follow", bob, v1alpha1.RoleEditor)
		Expect(admin.Create(ctx, bobMembership)).To(Succeed())
		Expect(admin.Create(ctx, msgMember("msg-follow", carol, v1alpha1.RoleViewer))).To(Succeed())
		msgEventually("msg-follow-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(3)))
			g.Expect(m.Status.Pending).To(Equal(int32(3)))
		})
		Expect(msgUser(alice).Create(ctx, msgAck("msg-follow-notice-alice", "msg-follow-notice", alice))).To(Succeed())
		Expect(msgUser(carol).Create(ctx, msgAck("msg-follow-notice-carol", "msg-follow-notice", carol))).To(Succeed())
		msgEventually("msg-follow-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Pending).To(Equal(int32(1)))
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionFalse))
		})

		By("resolving it when bob, the last one pending, leaves")
		Expect(admin.Delete(ctx, bobMembership)).To(Succeed())
		m := msgEventually("msg-follow-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionTrue))
		})
		Expect(m.Status.Recipients).To(Equal(int32(2)))
		Expect(m.Status.Pending).To(BeZero())
	})

	It("stalls with CustomerNotFound while its customer is missing, and resumes when it appears", func() {
		Expect(admin.Create(ctx, msgMessage("msg-orphan-notice", "msg-orphan", v1alpha1.SingleRead))).To(Succeed())
		m := msgEventually("msg-orphan-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(readyCondition(m)).NotTo(BeNil())
			g.Expect(readyCondition(m).Reason).To(Equal(v1alpha1.CustomerNotFoundReason))
		})
		Expect(readyCondition(m).Status).To(Equal(metav1.ConditionFalse))
		Expect(msgCondition(m, v1alpha1.StalledCondition).Status).To(Equal(metav1.ConditionTrue))
		Expect(msgCondition(m, v1alpha1.ResolvedCondition).Reason).To(Equal(v1alpha1.CustomerNotFoundReason))
		Expect(kstatusOf(m)).To(Equal(status.FailedStatus))

		msgCustomerWithMembers("msg-orphan", msgMember("msg-orphan", "dora@orphan.example", v1alpha1.RoleViewer))
		m = msgEventually("msg-orphan-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(readyCondition(m).Status).To(Equal(metav1.ConditionTrue))
			g.Expect(m.Status.Recipients).To(Equal(int32(1)))
		})
		Expect(msgCondition(m, v1alpha1.StalledCondition)).To(BeNil())
		Expect(kstatusOf(m)).To(Equal(status.CurrentStatus))
	})

	It("keeps an AllMustRead message open while its customer is deleted and created again", func() {
		alice, bob := "alice@gone.example", "bob@gone.example"
		msgCustomerWithMembers("msg-gone", msgMember("msg-gone", alice, v1alpha1.RoleAdmin), msgMember("msg-gone", bob, v1alpha1.RoleViewer))
		Expect(admin.Create(ctx, msgMessage("msg-gone-notice", "msg-gone", v1alpha1.AllMustRead))).To(Succeed())
		msgEventually("msg-gone-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(2)))
		})
		Expect(msgUser(alice).Create(ctx, msgAck("msg-gone-notice-alice", "msg-gone-notice", alice))).To(Succeed())
		msgEventually("msg-gone-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Pending).To(Equal(int32(1)))
		})

		By("deleting the customer: no recipients, but not acknowledged by all of them")
		Expect(admin.Delete(ctx, newCustomer("msg-gone", "msg-gone"))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(admin.Get(ctx, client.ObjectKey{Name: "msg-gone"}, &v1alpha1.Customer{}))
		}).Should(BeTrue())
		m := msgEventually("msg-gone-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(readyCondition(m).Reason).To(Equal(v1alpha1.CustomerNotFoundReason))
		})
		Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionFalse))
		Expect(msgCondition(m, v1alpha1.ResolvedCondition).Reason).To(Equal(v1alpha1.CustomerNotFoundReason))

		By("waiting for bob again once the customer is back")
		Expect(admin.Create(ctx, newCustomer("msg-gone", "msg-gone"))).To(Succeed())
		m = msgEventually("msg-gone-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(readyCondition(m).Status).To(Equal(metav1.ConditionTrue))
		})
		Expect(m.Status.Pending).To(Equal(int32(1)))
		Expect(msgCondition(m, v1alpha1.ResolvedCondition).Message).To(Equal("1 of 2 recipient(s) have not acknowledged yet"))
	})

	It("releases a reservation whose acknowledgement never appeared once it expires", func() {
		msgCustomerWithMembers("msg-lapse", msgMember("msg-lapse", "erin@lapse.example", v1alpha1.RoleAdmin))
		Expect(admin.Create(ctx, msgMessage("msg-lapse-notice", "msg-lapse", v1alpha1.SingleRead))).To(Succeed())
		m := msgEventually("msg-lapse-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(1)))
		})

		By("writing a reservation that expired, as if an admitted create had failed")
		expired := metav1.NewTime(m.CreationTimestamp.Add(-time.Minute))
		Expect(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			Expect(admin.Get(ctx, client.ObjectKeyFromObject(m), m)).To(Succeed())
			base := m.DeepCopy()
			m.Status.Reservations = []v1alpha1.AcknowledgementReservation{{User: "erin@lapse.example", ExpiresAt: expired}}
			return admin.Status().Patch(ctx, m, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		})).To(Succeed())
		msgEventually("msg-lapse-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Reservations).To(BeEmpty())
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionFalse))
		})
		Expect(msgUser("erin@lapse.example").Create(ctx, msgAck("msg-lapse-notice-erin", "msg-lapse-notice", "erin@lapse.example"))).To(Succeed())
	})

	It("lets only partners write messages, and holds the field rules end to end", func() {
		Expect(admin.Create(ctx, newCustomer("msg-rules", "Rules"))).To(Succeed())
		writer := "eve@rules.example"
		role := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "msgtest-message-writer"},
			Rules: []rbacv1.PolicyRule{{
				APIGroups: []string{v1alpha1.GroupName}, Resources: []string{"customermessages"},
				Verbs: []string{"get", "create", "update", "delete"},
			}},
		}
		Expect(admin.Create(ctx, role)).To(Succeed())
		msgBind(writer, role.Name)
		asWriter, err := env.ClientAs(writer)
		Expect(err).NotTo(HaveOccurred())

		By("refusing a non-partner whom RBAC lets write messages")
		expectDenied(asWriter.Create(ctx, msgMessage("msg-rules-by-eve", "msg-rules", v1alpha1.AllMustRead)),
			`only partners may create CustomerMessages`, `"eve@rules.example" may not`)
		m := msgMessage("msg-rules-notice", "msg-rules", v1alpha1.AllMustRead)
		Expect(admin.Create(ctx, m)).To(Succeed())
		expectDenied(asWriter.Delete(ctx, m), "only partners may delete CustomerMessages")

		By("refusing a body over 16 KiB and changes of the customer or the read policy")
		big := msgMessage("msg-rules-big", "msg-rules", v1alpha1.AllMustRead)
		big.Spec.Body = strings.Repeat("é", 8193) // 16386 bytes in 8193 characters
		err = admin.Create(ctx, big)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.body must be at most 16384 bytes"))

		err = msgUpdate("msg-rules-notice", func(m *v1alpha1.CustomerMessage) { m.Spec.ReadPolicy = v1alpha1.SingleRead })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.readPolicy is immutable"))
		err = msgUpdate("msg-rules-notice", func(m *v1alpha1.CustomerMessage) { m.Spec.Customer = "msg-elsewhere" })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.customer is immutable"))

		By("refusing a blank title in the schema too (CEL), with the webhook out of the way")
		probe := msgMessage("msg-rules-probe", "msg-rules", v1alpha1.AllMustRead)
		withoutWebhook("vcustomermessage.customers.partnerops.io", func() {
			// The API server reloads webhook configurations asynchronously: once eve
			// may create a message, the webhook is no longer called.
			Eventually(func() error { return asWriter.Create(ctx, probe.DeepCopy(), client.DryRunAll) }).Should(Succeed())
			blank := msgMessage("msg-rules-blank", "msg-rules", v1alpha1.AllMustRead)
			blank.Spec.Title = " \t "
			err := admin.Create(ctx, blank)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
			Expect(err.Error()).To(ContainSubstring("spec.title: Required value: must not be empty"))
		})
		// And back: later specs count on the webhook.
		Eventually(func() error { return asWriter.Create(ctx, probe.DeepCopy(), client.DryRunAll) }).
			Should(MatchError(ContainSubstring("only partners may create CustomerMessages")))

		By("letting a partner fix the title")
		Expect(msgUpdate("msg-rules-notice", func(m *v1alpha1.CustomerMessage) {
			m.Spec.Title = "Maintenance moved to Sunday"
		})).To(Succeed())
	})
})

var _ = Describe("CustomerMessage e-mail notice", func() {
	It("mails each recipient once, retries a failing server, and sends nothing twice across a restart", func() {
		fake := clocktesting.NewFakeClock(time.Now())
		restartManager(func(o *operator.Options) { o.Clock = fake })
		DeferCleanup(func() { restartManager(nil) })
		DeferCleanup(mailServer.ClearFailures)

		ann, ben := "ann@notice.example", "ben@notice.example"
		msgCustomerWithMembers("msg-notice",
			msgMember("msg-notice", ann, v1alpha1.RoleEditor), msgMember("msg-notice", ben, v1alpha1.RoleViewer))
		Expect(msgUpdateCustomer("msg-notice", "Notice Company")).To(Succeed())

		By("reporting a failing SMTP server, without trying the other recipients after it refused the sender")
		mailServer.FailNext(mailtest.StageMail, 451, 1)
		notice := msgMessage("msg-notice-notice", "msg-notice", v1alpha1.AllMustRead)
		notice.Spec.Notify = v1alpha1.NotifyEmail
		Expect(admin.Create(ctx, notice)).To(Succeed())
		m := msgEventually("msg-notice-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.NotifiedCondition)).NotTo(BeNil())
			g.Expect(msgCondition(m, v1alpha1.NotifiedCondition).Reason).To(Equal(v1alpha1.SendFailedReason))
		})
		Expect(msgCondition(m, v1alpha1.NotifiedCondition).Message).To(ContainSubstring("451"))
		Expect(readyCondition(m).Status).To(Equal(metav1.ConditionFalse))
		Expect(readyCondition(m).Reason).To(Equal(v1alpha1.SendFailedReason))
		Expect(m.Status.Notice.Sent).To(BeEmpty())
		Expect(mailServer.MessagesTo(ann)).To(BeEmpty())

		By("sending once the server is back and the backoff has passed")
		mailServer.ClearFailures()
		fake.Step(time.Minute)
		Expect(msgUpdate("msg-notice-notice", func(m *v1alpha1.CustomerMessage) {
			m.Annotations = map[string]string{"test.partnerops.io/poke": "1"} // an event, so the backoff is re-checked now
		})).To(Succeed())
		Eventually(func() int { return len(mailServer.MessagesTo(ann)) + len(mailServer.MessagesTo(ben)) }).Should(Equal(2))
		m = msgEventually("msg-notice-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.NotifiedCondition).Status).To(Equal(metav1.ConditionTrue))
			g.Expect(readyCondition(m).Status).To(Equal(metav1.ConditionTrue))
		})
		Expect(m.Status.Notice.Sent).To(ConsistOf(ann, ben))
		Expect(m.Status.Notice.LastError).To(BeEmpty())
		mail := mailServer.MessagesTo(ann)[0]
		Expect(mail.Subject).To(Equal("[Notice Company] Maintenance on Saturday"))
		Expect(mail.Text).To(ContainSubstring("kubectl customer ack msg-notice-notice"))
		Expect(mail.MessageID).To(HavePrefix("<" + string(m.UID) + "."))

		By("sending nothing again after a restart")
		restartAndSettle("customermessage", &v1alpha1.CustomerMessageList{}, func(o *operator.Options) { o.Clock = fake })
		Consistently(func() int { return len(mailServer.MessagesTo(ann)) + len(mailServer.MessagesTo(ben)) }, "2s").Should(Equal(2))

		By("mailing a member who joins while it is open, and nobody after it is resolved")
		cid := "cid@notice.example"
		Expect(admin.Create(ctx, msgMember("msg-notice", cid, v1alpha1.RoleAdmin))).To(Succeed())
		Eventually(func() int { return len(mailServer.MessagesTo(cid)) }).Should(Equal(1))
		for _, u := range []string{ann, ben, cid} {
			Expect(msgUser(u).Create(ctx, msgAck("msg-notice-notice-"+strings.Split(u, "@")[0], "msg-notice-notice", u))).To(Succeed())
		}
		msgEventually("msg-notice-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionTrue))
		})
		dot := "dot@notice.example"
		Expect(admin.Create(ctx, msgMember("msg-notice", dot, v1alpha1.RoleAdmin))).To(Succeed())
		msgEventually("msg-notice-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(4)))
		})
		Consistently(func() []mailtest.Message { return mailServer.MessagesTo(dot) }, "1s").Should(BeEmpty())
	})
})

// msgUpdateCustomer sets a customer's display name.
func msgUpdateCustomer(name, displayName string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		c := &v1alpha1.Customer{}
		if err := admin.Get(ctx, client.ObjectKey{Name: name}, c); err != nil {
			return err
		}
		c.Spec.DisplayName = displayName
		return admin.Update(ctx, c)
	})
}

// msgUpdate updates a message as the admin, on a fresh read, retrying conflicts with
// the controller's status writes.
func msgUpdate(name string, mutate func(*v1alpha1.CustomerMessage)) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		m := &v1alpha1.CustomerMessage{}
		if err := admin.Get(ctx, client.ObjectKey{Name: name}, m); err != nil {
			return err
		}
		mutate(m)
		return admin.Update(ctx, m)
	})
}
