package controllers_test

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/localcluster"
)

// Bad input through the real kubectl (issue 8, item 8): what a platform engineer
// sees when a manifest is wrong. kubectl --validate=strict is what `kubectl apply`
// does by default since 1.25 (server-side field validation); each manifest must be
// refused by the API server with a message that names the field and the rule, and
// nothing may be created.
var _ = Describe("Bad input via kubectl", func() {
	It("refuses each bad manifest with a message that names the field", func() {
		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(localcluster.WriteKubeconfig(kubeconfig, env.AdminConfig, "envtest")).To(Succeed())
		createCustomer("bad-acme", "Bad Input Acme")

		customer := func(name, identifier, displayName string) string {
			return fmt.Sprintf("apiVersion: customers.partnerops.io/v1alpha1\nkind: Customer\nmetadata:\n  name: %q\nspec:\n  identifier: %q\n  displayName: %q\n",
				name, identifier, displayName)
		}
		membership := func(name, customer, email, role string) string {
			return fmt.Sprintf("apiVersion: customers.partnerops.io/v1alpha1\nkind: CustomerMembership\nmetadata:\n  name: %s\nspec:\n  customer: %q\n  email: %q\n  role: %s\n",
				name, customer, email, role)
		}
		message := func(name, title, body string) string {
			return fmt.Sprintf("apiVersion: customers.partnerops.io/v1alpha1\nkind: CustomerMessage\nmetadata:\n  name: %s\nspec:\n  customer: bad-acme\n  title: %q\n  body: %q\n",
				name, title, body)
		}
		cases := []struct {
			what     string
			manifest string
			want     []string
		}{
			{"an over-long display name (257 characters)", customer("bad-long", "bad-long", strings.Repeat("x", 257)),
				[]string{"spec.displayName", "Too long", "256"}},
			{"a blank display name", customer("bad-blank", "bad-blank", "   "),
				[]string{"spec.displayName", "Required value", "must not be empty"}},
			{"an over-long identifier (64 characters)", customer(strings.Repeat("a", 64), strings.Repeat("a", 64), "Long"),
				[]string{"spec.identifier", "Too long", "63"}},
			{"a unicode look-alike identifier (Cyrillic а)", customer("bad-аcme", "bad-аcme", "Look-alike"),
				[]string{"metadata.name", "Invalid value", "RFC 1123"}},
			{"an identifier that differs from the name", customer("bad-one", "bad-other", "Mismatch"),
				[]string{"spec.identifier must equal metadata.name"}},
			{"an invalid e-mail address", membership("bad-mail", "bad-acme", "dana at example.com", "Viewer"),
				[]string{`spec.email: Invalid value: "dana at example.com": spec.email must be an e-mail address of ASCII characters, such as name@example.com`}},
			{"an e-mail with a look-alike domain", membership("bad-mail2", "bad-acme", "dana@exаmple.com", "Viewer"),
				[]string{`spec.email: Invalid value: "dana@exаmple.com": spec.email must be an e-mail address of ASCII characters`}},
			// Upper case sends it through the lower-casing webhook first, which must
			// not make "İ" an "i" (and the address another, valid one).
			{"a mixed-case e-mail with a dotted capital I in its domain", membership("bad-mail3", "bad-acme", "Dana@Exİmple.com", "Viewer"),
				[]string{"spec.email must be an e-mail address of ASCII characters", "exİmple.com"}},
			{"a look-alike customer reference", membership("bad-ref", "bad-аcme", "dana@example.com", "Viewer"),
				[]string{`spec.customer: Invalid value: "bad-аcme": must be a customer identifier: lower-case letters, digits and '-'`}},
			{"an e-mail that is not a string", strings.Replace(membership("bad-type", "bad-acme", "x", "Viewer"), `email: "x"`, "email: 42", 1),
				[]string{"spec.email", "must be of type string"}},
			{"an unknown role", membership("bad-role", "bad-acme", "dana@example.com", "Owner"),
				[]string{"spec.role", "Unsupported value", `"Owner"`}},
			{"an unknown field (--validate=strict)",
				"apiVersion: customers.partnerops.io/v1alpha1\nkind: Customer\nmetadata:\n  name: bad-field\nspec:\n  identifier: bad-field\n  displayName: Field\n  colour: red\n",
				[]string{`unknown field "spec.colour"`}},
			{"a wrong type (string for an integer)",
				"apiVersion: customers.partnerops.io/v1alpha1\nkind: CustomerQuota\nmetadata:\n  name: bad-acme\nspec:\n  customer: bad-acme\n  maxProjects: ten\n",
				[]string{"spec.maxProjects", "must be of type integer"}},
			{"a negative quota",
				"apiVersion: customers.partnerops.io/v1alpha1\nkind: CustomerQuota\nmetadata:\n  name: bad-acme\nspec:\n  customer: bad-acme\n  maxProjects: -1\n",
				[]string{"spec.maxProjects", "greater than or equal to 0"}},
			{"an over-long message title (201 characters)", message("bad-title", strings.Repeat("t", 201), "body"),
				[]string{"spec.title", "Too long", "200"}},
			{"a blank message title", message("bad-blank-title", "   ", "body"),
				[]string{"spec.title", "Required value", "must not be empty"}},
			{"a message body over 16 KiB", message("bad-body", "Big", strings.Repeat("é", 8193)),
				[]string{"spec.body", "16384"}},
		}

		var table strings.Builder
		table.WriteString("| bad input | kubectl's answer (abridged) |\n|---|---|\n")
		for _, c := range cases {
			By(c.what)
			cmd := exec.Command(filepath.Join(env.BinDir, "kubectl"), "--kubeconfig", kubeconfig,
				"create", "--validate=strict", "-f", "-")
			cmd.Stdin = strings.NewReader(c.manifest)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			Expect(err).To(HaveOccurred(), "kubectl must fail for %s; it said: %s", c.what, stdout.String())
			for _, w := range c.want {
				Expect(stderr.String()).To(ContainSubstring(w), "for %s", c.what)
			}
			answer := strings.TrimSpace(stderr.String())
			if _, after, found := strings.Cut(answer, " is invalid: "); found {
				answer = after
			}
			if len(answer) > 200 {
				answer = answer[:197] + "..."
			}
			fmt.Fprintf(&table, "| %s | %s |\n", c.what, strings.NewReplacer("|", `\|`, "\n", " ").Replace(answer))
		}
		GinkgoWriter.Println(table.String())
		AddReportEntry("bad input via kubectl", table.String(), ReportEntryVisibilityAlways)

		By("having created nothing")
		for _, name := range []string{"bad-long", "bad-blank", strings.Repeat("a", 64), "bad-one", "bad-field"} {
			err := admin.Get(ctx, types.NamespacedName{Name: name}, &v1alpha1.Customer{})
			Expect(apierrors.IsNotFound(err)).To(BeTrue(), "customer %s: %v", name, err)
		}
		for _, name := range []string{"bad-mail", "bad-mail2", "bad-mail3", "bad-ref", "bad-role"} {
			err := admin.Get(ctx, types.NamespacedName{Name: name}, &v1alpha1.CustomerMembership{})
			Expect(apierrors.IsNotFound(err)).To(BeTrue(), "membership %s: %v", name, err)
		}
		err := admin.Get(ctx, types.NamespacedName{Name: "bad-acme"}, &v1alpha1.CustomerQuota{})
		Expect(apierrors.IsNotFound(err)).To(BeTrue(), "quota: %v", err)
		for _, name := range []string{"bad-title", "bad-blank-title", "bad-body"} {
			err := admin.Get(ctx, types.NamespacedName{Name: name}, &v1alpha1.CustomerMessage{})
			Expect(apierrors.IsNotFound(err)).To(BeTrue(), "message %s: %v", name, err)
		}
	})
})

// DESIGN.md: every kind has a short name, the category partnerops, and printer
// columns with its key fields, Ready and Age; what a platform engineer types.
var _ = Describe("Listing via kubectl", func() {
	It("lists every kind under partnerops and by its short name, with Ready and Age", func() {
		kubeconfig := filepath.Join(GinkgoT().TempDir(), "kubeconfig")
		Expect(localcluster.WriteKubeconfig(kubeconfig, env.AdminConfig, "envtest")).To(Succeed())
		kubectl := func(args ...string) string {
			GinkgoHelper()
			cmd := exec.Command(filepath.Join(env.BinDir, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			Expect(cmd.Run()).To(Succeed(), "kubectl %s: %s", strings.Join(args, " "), stderr.String())
			return stdout.String()
		}
		createCustomer("list-acme", "List Acme")
		m := createMembership(newMembership("list-acme-ann", "list-acme", "ann@list.example", v1alpha1.RoleAdmin, v1alpha1.InvitationNone))
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)

		By("kubectl get partnerops: every kind of the category")
		all := kubectl("get", "partnerops", "-o", "name")
		for _, kind := range []string{"customer.customers.partnerops.io/list-acme", "customermembership.customers.partnerops.io/list-acme-ann"} {
			Expect(all).To(ContainSubstring(kind))
		}
		By("kubectl api-resources: five kinds, each with a short name and the category")
		resources := kubectl("api-resources", "--api-group="+v1alpha1.GroupName, "-o", "wide")
		shortNames := map[string]string{"Customer": "cust", "CustomerMembership": "cmember", "CustomerMessage": "cmsg",
			"CustomerQuota": "cquota", "MessageAcknowledgement": "cack"}
		Expect(strings.Count(resources, v1alpha1.GroupName+"/v1alpha1")).To(Equal(len(shortNames)))
		for kind, short := range shortNames {
			Expect(resources).To(MatchRegexp(`(?m)^\S+\s+%s\s+%s/v1alpha1\s+false\s+%s\s+.*\bpartnerops\b`, short, v1alpha1.GroupName, kind), kind)

			By("kubectl get " + short)
			header := strings.Fields(strings.SplitN(kubectl("get", short), "\n", 2)[0])
			if len(header) > 0 { // none of that kind: "No resources found" on stderr, no header
				Expect(header).To(ContainElements("NAME", "READY", "AGE"), kind)
			}
		}

		By("the columns of a Customer and a membership say their key fields and Ready")
		// The Customer's status follows its members a moment later (1 s coalescing).
		Eventually(func() string { return kubectl("get", "cust", "list-acme") }, "10s").
			Should(MatchRegexp(`(?m)^list-acme\s+List Acme\s+0\s+10\s+1\s+True\s+\S+\s*$`), "projects, max projects, members, Ready, Age")
		Expect(kubectl("get", "cmember", "list-acme-ann")).To(MatchRegexp(`(?m)^list-acme-ann\s+list-acme\s+ann@list\.example\s+Admin\s+True\s+True\s+\S+\s*$`),
			"customer, e-mail, role, Accepted, Ready, Age")
	})
})
