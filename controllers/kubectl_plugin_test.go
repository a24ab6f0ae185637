package controllers_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gexec"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/plugin"
	"github.com/partnerops/customer-operator/internal/testenv"
)

// These specs run the plugin's commands against the envtest API server as real
// users: each has a client certificate of their own, in a kubeconfig file of their
// own, and the plugin learns who they are from the API server.

// pluginUser writes a kubeconfig for a new user and returns its path.
func pluginUser(name string) string {
	GinkgoHelper()
	user, err := env.Environment.AddUser(envtest.User{Name: name}, env.AdminConfig)
	Expect(err).NotTo(HaveOccurred())
	kubeconfig, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	path := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(path, kubeconfig, 0o600)).To(Succeed())
	return path
}

// pluginMemberGrants waits until the operator's access controller has given user,
// an active member of customer, what the plugin uses, and nothing of this test's
// own: get on the customer, its quota and the named messages, and create on
// acknowledgements. (The API server's authorizer reads new bindings a moment later.)
func pluginMemberGrants(user, customer string, messageNames ...string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		g.Expect(canI(user, "get", v1alpha1.GroupName, "customers", "", customer)).To(BeTrue(), "get customer")
		g.Expect(canI(user, "get", v1alpha1.GroupName, "customerquotas", "", customer)).To(BeTrue(), "get quota")
		for _, name := range messageNames {
			g.Expect(canI(user, "get", v1alpha1.GroupName, "customermessages", "", name)).To(BeTrue(), "get message %s", name)
		}
		g.Expect(canI(user, "create", v1alpha1.GroupName, "messageacknowledgements", "", "")).To(BeTrue(), "create acknowledgements")
	}, "10s").Should(Succeed())
}

// runPlugin runs `kubectl customer args...` in-process with a user's kubeconfig.
func runPlugin(kubeconfig string, args ...string) (string, string, error) {
	streams, _, out, errOut := genericiooptions.NewTestIOStreams()
	cmd := plugin.NewCommand(streams)
	cmd.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
	err := cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// pluginOutput runs the plugin and expects it to succeed.
func pluginOutput(kubeconfig string, args ...string) string {
	GinkgoHelper()
	out, errOut, err := runPlugin(kubeconfig, args...)
	Expect(err).NotTo(HaveOccurred(), "kubectl customer %v: %s", args, errOut)
	return out
}

var _ = Describe("kubectl customer plugin", func() {
	It("takes a partner's AllMustRead message through its members' inboxes until it is resolved", func() {
		partner, alice, bob, mallory := "partner@ops.example", "alice@plug.example", "bob@plug.example", "mallory@plug.example"
		asPartner := pluginUser(partner)
		msgBind(partner, testenv.PartnerClusterRole)
		asAlice, asBob, asMallory := pluginUser(alice), pluginUser(bob), pluginUser(mallory)

		By("adding the partner to the customer with add-myself (invitation None)")
		Expect(admin.Create(ctx, newCustomer("plug-co", "Plug Company"))).To(Succeed())
		Expect(pluginOutput(asPartner, "add-myself", "plug-co")).To(Equal(
			`You (partner@ops.example) are now a member of customer "plug-co" as Admin (CustomerMembership "plug-co-partner-at-ops.example").` + "\n"))
		own := &v1alpha1.CustomerMembership{}
		Expect(admin.Get(ctx, client.ObjectKey{Name: "plug-co-partner-at-ops.example"}, own)).To(Succeed())
		Expect(own.Spec.Invitation).To(Equal(v1alpha1.InvitationNone))
		Expect(own.Spec.Username).To(Equal(partner))
		Expect(own.Spec.Role).To(Equal(v1alpha1.RoleAdmin))

		By("inviting a colleague by e-mail")
		Expect(pluginOutput(asPartner, "invite", "plug-co", "Carol@Plug.Example", "--role", "Viewer")).To(ContainSubstring(
			`Invited carol@plug.example to customer "plug-co" as Viewer (CustomerMembership "plug-co-carol-at-plug.example")`))
		invited := &v1alpha1.CustomerMembership{}
		Expect(admin.Get(ctx, client.ObjectKey{Name: "plug-co-carol-at-plug.example"}, invited)).To(Succeed())
		Expect(invited.Spec.Email).To(Equal("carol@plug.example"))
		Expect(invited.Spec.Invitation).To(Equal(v1alpha1.InvitationEmail))
		_, _, err := runPlugin(asPartner, "invite", "plug-co", "dave@plug.example")
		Expect(err).To(MatchError(ContainSubstring(`required flag(s) "role" not set`)))
		_, _, err = runPlugin(asPartner, "invite", "plug-co", "carol@plug.example", "--role", "Editor")
		Expect(err).To(MatchError(ContainSubstring(`cannot invite "carol@plug.example" to customer "plug-co": ` +
			`the address has CustomerMembership "plug-co-carol-at-plug.example" already`)))
		Expect(err).To(MatchError(ContainSubstring(v1alpha1.ResendInvitationAnnotation)))
		_, _, err = runPlugin(asPartner, "add-myself", "plug-co", "--role", "Admin")
		Expect(err).To(MatchError(ContainSubstring(`has CustomerMembership`)))

		By("sending an AllMustRead message to the Editors and Viewers: alice and bob")
		Expect(admin.Create(ctx, msgMember("plug-co", alice, v1alpha1.RoleEditor))).To(Succeed())
		Expect(admin.Create(ctx, msgMember("plug-co", bob, v1alpha1.RoleViewer))).To(Succeed())
		partnerClient, err := client.New(env.ConfigAs(partner), client.Options{Scheme: admin.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		notice := msgMessage("plug-co-notice", "plug-co", v1alpha1.AllMustRead, v1alpha1.RoleEditor, v1alpha1.RoleViewer)
		notice.Spec.Body = "Please check your stateful services before Friday."
		Expect(partnerClient.Create(ctx, notice)).To(Succeed())
		pluginMemberGrants(alice, "plug-co", "plug-co-notice")
		pluginMemberGrants(bob, "plug-co", "plug-co-notice")
		msgEventually("plug-co-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(2)))
		})

		By("showing it in alice's and bob's inboxes, found without list rights, and not in the partner's")
		out := pluginOutput(asAlice, "inbox")
		Expect(out).To(MatchRegexp(`(?m)^NAME +CUSTOMER +TITLE +POLICY +AGE$`))
		Expect(out).To(MatchRegexp(`(?m)^plug-co-notice +plug-co +Maintenance on Saturday +AllMustRead +\S+$`))
		Expect(pluginOutput(asBob, "inbox", "--body")).To(And(
			ContainSubstring("plug-co-notice"), ContainSubstring("Please check your stateful services before Friday.")))
		Expect(pluginOutput(asPartner, "inbox")).To(Equal("No open messages for partner@ops.example.\n"))
		Expect(pluginOutput(asMallory, "inbox")).To(Equal("No open messages for mallory@plug.example.\n"))

		By("acknowledging as alice, once")
		Expect(pluginOutput(asAlice, "ack", "plug-co-notice")).To(MatchRegexp(
			`^Acknowledged CustomerMessage "plug-co-notice" as alice@plug\.example \(MessageAcknowledgement "plug-co-notice-[0-9a-f]{10}"\)\.\n$`))
		Eventually(func() string { return pluginOutput(asAlice, "inbox") }).Should(Equal("No open messages for alice@plug.example.\n"))
		Expect(pluginOutput(asAlice, "ack", "plug-co-notice")).To(Equal(`You already acknowledged CustomerMessage "plug-co-notice".` + "\n"))
		m := msgEventually("plug-co-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Pending).To(Equal(int32(1)))
		})
		Expect(msgUsers(m)).To(Equal([]string{alice}))

		By("telling mallory, who is nobody's member, why not")
		_, _, err = runPlugin(asMallory, "ack", "plug-co-notice")
		Expect(err).To(MatchError(`cannot acknowledge CustomerMessage "plug-co-notice": "mallory@plug.example" may not do that (RBAC); ` +
			`only members of the message's customer may acknowledge; ask your partner or a customer admin to add you`))
		_, _, err = runPlugin(asMallory, "status", "plug-co")
		Expect(err).To(MatchError(ContainSubstring(`cannot read customer "plug-co": "mallory@plug.example" may not do that (RBAC)`)))

		By("resolving it when bob acknowledges")
		Expect(pluginOutput(asBob, "ack", "plug-co-notice")).To(HavePrefix(`Acknowledged CustomerMessage "plug-co-notice" as bob@plug.example`))
		msgEventually("plug-co-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(msgCondition(m, v1alpha1.ResolvedCondition).Status).To(Equal(metav1.ConditionTrue))
		})

		By("creating a project as the partner, and refusing one to alice")
		Expect(pluginOutput(asPartner, "project", "create", "plug-co", "plug-co-web")).To(Equal(
			`Created project "plug-co-web" for customer "plug-co".` + "\n"))
		ns := &corev1.Namespace{}
		Expect(admin.Get(ctx, client.ObjectKey{Name: "plug-co-web"}, ns)).To(Succeed())
		Expect(ns.Labels).To(HaveKeyWithValue(v1alpha1.CustomerLabel, "plug-co"))
		_, _, err = runPlugin(asAlice, "project", "create", "plug-co", "plug-co-api")
		Expect(err).To(MatchError(ContainSubstring(`cannot create project "plug-co-api" for customer "plug-co"`)))

		By("showing the customer's state to the partner, with names, and to alice, with counts")
		Eventually(func(g Gomega) {
			out := pluginOutput(asPartner, "status", "plug-co")
			g.Expect(out).To(MatchRegexp(`(?m)^Customer: +plug-co \(Plug Company\)$`))
			g.Expect(out).To(MatchRegexp(`(?m)^Projects: +1 of \d+ used \(default quota: no CustomerQuota\): plug-co-web$`))
		}).Should(Succeed())
		quota := &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "plug-co"},
			Spec: v1alpha1.CustomerQuotaSpec{Customer: "plug-co", MaxProjects: ptr.To[int32](3)}}
		Expect(admin.Create(ctx, quota)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, quota))).To(Succeed()) })
		Eventually(func(g Gomega) {
			out := pluginOutput(asPartner, "status", "plug-co")
			g.Expect(out).To(MatchRegexp(`(?m)^Projects: +1 of 3 used \(CustomerQuota "plug-co"\): plug-co-web$`))
			g.Expect(out).To(MatchRegexp(`(?m)^Members: +.*alice@plug\.example \(Editor, active\)`))
			g.Expect(out).To(MatchRegexp(`(?m)^Open messages:\s+none$`))
		}).Should(Succeed())

		By("showing alice, an Editor who may list nothing, the project by name and the members by count")
		Eventually(func(g Gomega) {
			out := pluginOutput(asAlice, "status", "plug-co")
			g.Expect(out).To(MatchRegexp(`(?m)^Projects: +1 of 3 used \(CustomerQuota "plug-co"\): plug-co-web$`))
			g.Expect(out).To(MatchRegexp(`(?m)^Members: +\d+ active$`))
		}).Should(Succeed())
		aliceClient, err := client.New(env.ConfigAs(alice), client.Options{Scheme: admin.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		Expect(apierrors.IsForbidden(aliceClient.List(ctx, &corev1.NamespaceList{}))).To(BeTrue(),
			"the names come from get by name, not from a list")

		By("showing dora, an Admin who is no partner, who the members are")
		dora := "dora@plug.example"
		asDora := pluginUser(dora)
		Expect(admin.Create(ctx, msgMember("plug-co", dora, v1alpha1.RoleAdmin))).To(Succeed())
		Eventually(func(g Gomega) {
			out, _, err := runPlugin(asDora, "status", "plug-co")
			g.Expect(err).NotTo(HaveOccurred(), "until the access controller has granted dora hers")
			g.Expect(out).To(MatchRegexp(`(?m)^Projects: +1 of 3 used \(CustomerQuota "plug-co"\): plug-co-web$`))
			g.Expect(out).To(MatchRegexp(`(?m)^Members: +\d+ active: .*alice@plug\.example \(Editor, active\).*` +
				`carol@plug\.example \(Viewer, invited\).*dora@plug\.example \(Admin, active\)`))
		}).Should(Succeed())

		By("listing each one's customers: alice's one, all of them for the partner, none for mallory")
		out = pluginOutput(asAlice, "list")
		Expect(out).To(MatchRegexp(`^NAME +DISPLAY NAME +PROJECTS +MEMBERS +READY +AGE\nplug-co +Plug Company +1/3 +\d+ +True +\S+\n$`))
		Expect(pluginOutput(asPartner, "list")).To(MatchRegexp(`(?m)^plug-co +Plug Company +1/3 `))
		Expect(pluginOutput(asMallory, "list")).To(Equal("mallory@plug.example is a member of no customer.\n"))

		By("finding alice's projects when a RoleBinding to view in default makes the rules review offer a namespace list that RBAC refuses")
		inDefault := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "plugintest-alice-view"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: alice}},
		}
		Expect(admin.Create(ctx, inDefault)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, inDefault))).To(Succeed()) })
		Eventually(func() bool { return canI(alice, "list", "", "namespaces", "default", "") }).Should(BeTrue())
		Expect(apierrors.IsForbidden(aliceClient.List(ctx, &corev1.NamespaceList{}))).To(BeTrue())
		out = pluginOutput(asAlice, "status", "plug-co")
		Expect(out).To(MatchRegexp(`(?m)^Projects: +1 of 3 used \(CustomerQuota "plug-co"\): plug-co-web$`))

		By("showing alice a message whose acknowledgement name dora took first, and acknowledging it under another name")
		second := msgMessage("plug-co-notice-2", "plug-co", v1alpha1.AllMustRead, v1alpha1.RoleEditor, v1alpha1.RoleAdmin)
		Expect(partnerClient.Create(ctx, second)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, second))).To(Succeed()) })
		msgEventually(second.Name, func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(BeNumerically(">=", 2))
		})
		sum := sha256.Sum256([]byte(alice))
		squatted := msgAck(second.Name+"-"+hex.EncodeToString(sum[:])[:10], second.Name, dora)
		asDoraClient := clientAs(dora)
		Eventually(func() error { return asDoraClient.Create(ctx, squatted) }).Should(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, squatted))).To(Succeed()) })
		Eventually(func() string { return pluginOutput(asAlice, "inbox") }).Should(MatchRegexp(`(?m)^plug-co-notice-2 +plug-co `))
		Expect(pluginOutput(asAlice, "ack", second.Name)).To(HavePrefix(
			`Acknowledged CustomerMessage "plug-co-notice-2" as alice@plug.example (MessageAcknowledgement "plug-co-notice-2-`))

		By("inviting under a hashed name when the readable one is another customer's: plug + co-carol@ spells plug-co + carol@")
		createCustomer("plug", "Plug")
		DeferCleanup(func() {
			var list v1alpha1.CustomerMembershipList
			Expect(admin.List(ctx, &list)).To(Succeed())
			for i := range list.Items {
				if list.Items[i].Spec.Customer == "plug" {
					Expect(client.IgnoreNotFound(admin.Delete(ctx, &list.Items[i]))).To(Succeed())
				}
			}
		})
		Expect(pluginOutput(asPartner, "invite", "plug", "co-carol@plug.example", "--role", "Viewer")).To(MatchRegexp(
			`^Invited co-carol@plug\.example to customer "plug" as Viewer \(CustomerMembership "plug-[0-9a-f]{16}"\)`))
		_, _, err = runPlugin(asPartner, "invite", "plug", "co-carol@plug.example", "--role", "Viewer")
		Expect(err).To(MatchError(ContainSubstring(`already has a membership for this e-mail`)), "the same person twice is still refused")
		Expect(err).To(MatchError(ContainSubstring(`give its annotation customers.partnerops.io/resend-invitation a new value to send its invitation again`)),
			"and told how to send the invitation again (docs/kubectl-plugin.md)")
	})

	It("runs as `kubectl customer` from PATH, and tells the second SingleRead reader who resolved it", func() {
		pluginDir, err := gexec.Build("github.com/partnerops/customer-operator/cmd/kubectl-customer")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(gexec.CleanupBuildArtifacts)

		dan, erin := "dan@exec.example", "erin@exec.example"
		msgCustomerWithMembers("plug-exec",
			msgMember("plug-exec", dan, v1alpha1.RoleViewer), msgMember("plug-exec", erin, v1alpha1.RoleViewer))
		Expect(admin.Create(ctx, msgMessage("plug-exec-notice", "plug-exec", v1alpha1.SingleRead))).To(Succeed())
		pluginMemberGrants(dan, "plug-exec", "plug-exec-notice")
		pluginMemberGrants(erin, "plug-exec", "plug-exec-notice")
		msgEventually("plug-exec-notice", func(g Gomega, m *v1alpha1.CustomerMessage) {
			g.Expect(m.Status.Recipients).To(Equal(int32(2)))
		})

		kubectl := func(kubeconfig string, args ...string) (string, string, error) {
			cmd := exec.CommandContext(ctx, filepath.Join(env.BinDir, "kubectl"), args...)
			cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "PATH="+filepath.Dir(pluginDir)+string(os.PathListSeparator)+os.Getenv("PATH"))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			return stdout.String(), stderr.String(), err
		}
		asDan, asErin := pluginUser(dan), pluginUser(erin)

		out, errOut, err := kubectl(asDan, "customer", "inbox")
		Expect(err).NotTo(HaveOccurred(), errOut)
		Expect(out).To(MatchRegexp(`(?m)^plug-exec-notice +plug-exec +Maintenance on Saturday +SingleRead `))

		out, errOut, err = kubectl(asDan, "customer", "ack", "plug-exec-notice")
		Expect(err).NotTo(HaveOccurred(), errOut)
		Expect(out).To(HavePrefix(`Acknowledged CustomerMessage "plug-exec-notice" as dan@exec.example`))

		_, errOut, err = kubectl(asErin, "customer", "ack", "plug-exec-notice")
		Expect(err).To(HaveOccurred())
		Expect(strings.TrimSpace(errOut)).To(Equal(`error: cannot acknowledge CustomerMessage "plug-exec-notice": ` +
			`CustomerMessage "plug-exec-notice" is already resolved for everyone by "dan@exec.example" (SingleRead); there is nothing left to acknowledge`))
		Eventually(func(g Gomega) {
			out, errOut, err := kubectl(asErin, "customer", "inbox")
			g.Expect(err).NotTo(HaveOccurred(), errOut)
			g.Expect(out).To(Equal("No open messages for erin@exec.example.\n"))
		}).Should(Succeed())

		out, _, err = kubectl(asErin, "customer", "--help")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("kubectl customer inbox"))
	})
})
