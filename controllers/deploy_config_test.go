package controllers_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/partnerops/customer-operator/internal/testenv"
)

// What `make deploy` installs, checked as a reviewer of a real cluster would: the
// rendered config/default is valid against a real API server, its RBAC is least
// privilege, its webhooks cannot take the cluster down, and its Deployment runs
// under the restricted Pod Security Standard.

// renderKustomization renders a kustomize directory with kubectl's kustomize.
func renderKustomization(dir string) []*unstructured.Unstructured {
	GinkgoHelper()
	out, err := exec.Command(filepath.Join(env.BinDir, "kubectl"), "kustomize", filepath.Join(env.Root, dir)).Output()
	Expect(err).NotTo(HaveOccurred(), "rendering %s", dir)
	objs, err := testenv.DecodeYAML(out)
	Expect(err).NotTo(HaveOccurred())
	Expect(objs).NotTo(BeEmpty())
	return objs
}

func ofKind[T any](objs []*unstructured.Unstructured, kinds ...string) []*T {
	GinkgoHelper()
	var typed []*T
	for _, obj := range objs {
		for _, kind := range kinds {
			if obj.GetKind() == kind {
				t := new(T)
				Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, t)).To(Succeed())
				typed = append(typed, t)
			}
		}
	}
	return typed
}

// systemNamespaces must never reach the namespace webhook (a webhook outage must
// not block the cluster's own namespaces).
var systemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease", "default", testenv.OperatorNamespace}

var _ = Describe("The rendered config/default", func() {
	var objs []*unstructured.Unstructured
	BeforeEach(func() { objs = renderKustomization("config/default") })

	It("is accepted object by object by the API server (server-side apply, dry run)", func() {
		for _, obj := range objs {
			obj := obj.DeepCopy()
			if strings.HasSuffix(obj.GetKind(), "WebhookConfiguration") {
				// The suite installed these with a url clientConfig; merging a
				// service into them would be invalid for a reason no real install
				// meets. Check them as new objects instead.
				obj.SetName(obj.GetName() + "-dry-run")
			}
			Expect(admin.Patch(ctx, obj, client.Apply, client.FieldOwner("deploy-check"), client.ForceOwnership, client.DryRunAll)).
				To(Succeed(), "%s %s", obj.GetKind(), obj.GetName())
		}
	})

	It("grants no wildcard, and bind only by name", func() {
		var rules []rbacv1.PolicyRule
		names := map[int]string{}
		for _, role := range ofKind[rbacv1.ClusterRole](objs, "ClusterRole") {
			Expect(role.AggregationRule).To(BeNil(), "ClusterRole %s aggregates: its rules are not reviewable here", role.Name)
			for _, r := range role.Rules {
				names[len(rules)] = "ClusterRole " + role.Name
				rules = append(rules, r)
			}
		}
		for _, role := range ofKind[rbacv1.Role](objs, "Role") {
			for _, r := range role.Rules {
				names[len(rules)] = "Role " + role.Name
				rules = append(rules, r)
			}
		}
		Expect(rules).NotTo(BeEmpty())
		for i, r := range rules {
			for _, field := range [][]string{r.Verbs, r.Resources, r.APIGroups, r.NonResourceURLs} {
				Expect(field).NotTo(ContainElement(ContainSubstring("*")), "%s: %+v", names[i], r)
			}
			for _, verb := range r.Verbs {
				if verb == "bind" || verb == "escalate" || verb == "impersonate" {
					Expect(r.ResourceNames).NotTo(BeEmpty(), "%s: %s without resourceNames: %+v", names[i], verb, r)
				}
			}
		}
	})

	It("has webhooks with short timeouts, and keeps system namespaces away from the namespace webhook", func() {
		type hook struct {
			name           string
			timeout        *int32
			rules          []admissionregistrationv1.RuleWithOperations
			matchCondition []admissionregistrationv1.MatchCondition
		}
		var hooks []hook
		for _, cfg := range ofKind[admissionregistrationv1.ValidatingWebhookConfiguration](objs, "ValidatingWebhookConfiguration") {
			for _, w := range cfg.Webhooks {
				hooks = append(hooks, hook{w.Name, w.TimeoutSeconds, w.Rules, w.MatchConditions})
			}
		}
		for _, cfg := range ofKind[admissionregistrationv1.MutatingWebhookConfiguration](objs, "MutatingWebhookConfiguration") {
			for _, w := range cfg.Webhooks {
				hooks = append(hooks, hook{w.Name, w.TimeoutSeconds, w.Rules, w.MatchConditions})
			}
		}
		Expect(hooks).NotTo(BeEmpty())
		namespaceHooks := 0
		for _, h := range hooks {
			Expect(h.timeout).NotTo(BeNil(), h.name)
			Expect(*h.timeout).To(BeNumerically("<=", 10), h.name)
			for _, rule := range h.rules {
				if !containsAny(rule.Resources, "namespaces", "namespaces/status", "namespaces/finalize", "*") {
					continue
				}
				namespaceHooks++
				var expressions []string
				for _, c := range h.matchCondition {
					expressions = append(expressions, c.Expression)
				}
				all := strings.Join(expressions, "\n")
				Expect(all).To(ContainSubstring("startsWith('kube-')"), h.name)
				for _, ns := range systemNamespaces {
					if !strings.HasPrefix(ns, "kube-") {
						Expect(all).To(ContainSubstring("'"+ns+"'"), "%s must exclude namespace %s", h.name, ns)
					}
				}
			}
		}
		Expect(namespaceHooks).To(BeNumerically(">", 0))
	})

	It("runs the manager with leader election, probes, resources and the restricted pod security", func() {
		deployments := ofKind[appsv1.Deployment](objs, "Deployment")
		Expect(deployments).To(HaveLen(1))
		d := deployments[0]
		Expect(*d.Spec.Replicas).To(BeNumerically(">=", 2), "admission (failurePolicy Fail) must survive a drain")
		pod := d.Spec.Template.Spec
		Expect(pod.SecurityContext).NotTo(BeNil())
		Expect(pod.SecurityContext.RunAsNonRoot).To(HaveValue(BeTrue()))
		Expect(pod.SecurityContext.SeccompProfile).NotTo(BeNil())
		Expect(pod.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
		Expect(pod.HostNetwork || pod.HostPID || pod.HostIPC).To(BeFalse())
		Expect(pod.Containers).To(HaveLen(1))
		c := pod.Containers[0]
		Expect(c.SecurityContext).NotTo(BeNil())
		Expect(c.SecurityContext.AllowPrivilegeEscalation).To(HaveValue(BeFalse()))
		Expect(c.SecurityContext.ReadOnlyRootFilesystem).To(HaveValue(BeTrue()))
		Expect(c.SecurityContext.Capabilities).NotTo(BeNil())
		Expect(c.SecurityContext.Capabilities.Drop).To(ContainElement(corev1.Capability("ALL")))
		Expect(c.SecurityContext.Capabilities.Add).To(BeEmpty())
		Expect(c.SecurityContext.Privileged).To(Or(BeNil(), HaveValue(BeFalse())))
		Expect(c.LivenessProbe).NotTo(BeNil())
		Expect(c.ReadinessProbe).NotTo(BeNil())
		Expect(c.Resources.Requests).To(HaveKey(corev1.ResourceCPU))
		Expect(c.Resources.Requests).To(HaveKey(corev1.ResourceMemory))
		Expect(c.Resources.Limits).To(HaveKey(corev1.ResourceMemory))
		Expect(c.Args).To(ContainElement("--leader-elect"))
		Expect(c.Args).To(ContainElement("--metrics-secure"))
		Expect(c.Args).To(ContainElement("--require-project-prefix"), "Admins cannot take names the partner installs into")
		Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "WEBHOOK_CERT_ROTATION", Value: "true"}))
		By("stopping without failing admission calls, and with time for the graceful shutdown")
		Expect(c.Lifecycle).NotTo(BeNil())
		Expect(c.Lifecycle.PreStop).NotTo(BeNil())
		Expect(c.Lifecycle.PreStop.Sleep).NotTo(BeNil(), "the endpoint goes before the port closes")
		// controller-runtime's default graceful shutdown timeout (the operator keeps it).
		const gracefulShutdown = 30
		Expect(pod.TerminationGracePeriodSeconds).To(HaveValue(BeNumerically(">", c.Lifecycle.PreStop.Sleep.Seconds+gracefulShutdown)))
		pdbs := ofKind[policyv1.PodDisruptionBudget](objs, "PodDisruptionBudget")
		Expect(pdbs).To(HaveLen(1))
		Expect(pdbs[0].Spec.MaxUnavailable).To(HaveValue(Equal(intstr.FromInt32(1))), "a single replica must not block drains")
		Expect(pdbs[0].Spec.UnhealthyPodEvictionPolicy).To(HaveValue(Equal(policyv1.AlwaysAllow)))

		namespaces := ofKind[corev1.Namespace](objs, "Namespace")
		Expect(namespaces).To(HaveLen(1))
		Expect(namespaces[0].Labels).To(HaveKeyWithValue("pod-security.kubernetes.io/enforce", "restricted"))
	})

	It("describes every field of every CRD, and bounds every string and list (DESIGN.md)", func() {
		crds := ofKind[apiextensionsv1.CustomResourceDefinition](objs, "CustomResourceDefinition")
		Expect(crds).To(HaveLen(5))
		var undocumented, unbounded []string
		var walk func(path string, schema apiextensionsv1.JSONSchemaProps)
		walk = func(path string, schema apiextensionsv1.JSONSchemaProps) {
			switch {
			case schema.Type == "string" && schema.MaxLength == nil && len(schema.Enum) == 0 && schema.Format != "date-time":
				// Enums and RFC 3339 times are bounded by what they may hold.
				unbounded = append(unbounded, path+" (string without maxLength)")
			case schema.Type == "array" && schema.MaxItems == nil:
				unbounded = append(unbounded, path+" (list without maxItems)")
			}
			for name, prop := range schema.Properties {
				if name == "apiVersion" || name == "kind" || name == "metadata" {
					continue
				}
				if strings.TrimSpace(prop.Description) == "" {
					undocumented = append(undocumented, path+"."+name)
				}
				walk(path+"."+name, prop)
			}
			if schema.Items != nil && schema.Items.Schema != nil {
				walk(path+"[]", *schema.Items.Schema)
			}
		}
		for _, crd := range crds {
			for _, version := range crd.Spec.Versions {
				walk(crd.Spec.Names.Kind, *version.Schema.OpenAPIV3Schema)
			}
		}
		Expect(undocumented).To(BeEmpty(), "kubectl explain shows these without a description")
		Expect(unbounded).To(BeEmpty())
	})

	It("monitors the metrics Service it ships, with the alerts docs/operations.md describes (config/prometheus)", func() {
		monitoring := renderKustomization("config/prometheus")
		var service *corev1.Service
		for _, s := range ofKind[corev1.Service](objs, "Service") {
			if strings.HasSuffix(s.Name, "metrics-service") {
				service = s
			}
		}
		Expect(service).NotTo(BeNil())
		var monitors, rules []*unstructured.Unstructured
		for _, obj := range monitoring {
			switch obj.GetKind() {
			case "ServiceMonitor":
				monitors = append(monitors, obj)
			case "PrometheusRule":
				rules = append(rules, obj)
			}
		}
		Expect(monitors).To(HaveLen(1))
		Expect(rules).To(HaveLen(1))
		for _, obj := range append(monitors, rules...) {
			Expect(obj.GetNamespace()).To(Equal(service.Namespace), "%s lands beside the manager, added next to config/default", obj.GetName())
			Expect(obj.GetName()).To(HavePrefix("customer-operator-"))
		}

		selector, _, _ := unstructured.NestedStringMap(monitors[0].Object, "spec", "selector", "matchLabels")
		Expect(selector).NotTo(BeEmpty())
		for k, v := range selector {
			Expect(service.Labels).To(HaveKeyWithValue(k, v), "the ServiceMonitor selects the metrics Service")
		}
		endpoints, _, _ := unstructured.NestedSlice(monitors[0].Object, "spec", "endpoints")
		Expect(endpoints).To(HaveLen(1))
		endpoint := endpoints[0].(map[string]any)
		Expect(endpoint).To(HaveKeyWithValue("scheme", "https"))
		Expect(service.Spec.Ports).To(ContainElement(HaveField("Name", endpoint["port"])), "by the Service's port name")

		var shipped []string
		groups, _, _ := unstructured.NestedSlice(rules[0].Object, "spec", "groups")
		for _, group := range groups {
			for _, rule := range group.(map[string]any)["rules"].([]any) {
				rule := rule.(map[string]any)
				shipped = append(shipped, rule["alert"].(string))
				Expect(rule["expr"]).NotTo(BeEmpty())
			}
		}
		doc, err := os.ReadFile(filepath.Join(env.Root, "docs", "operations.md"))
		Expect(err).NotTo(HaveOccurred())
		var documented []string
		for _, m := range regexp.MustCompile(`(?m)^- alert: (\w+)`).FindAllStringSubmatch(string(doc), -1) {
			documented = append(documented, m[1])
		}
		Expect(shipped).To(ConsistOf(documented), "the PrometheusRule and docs/operations.md name the same alerts")
	})

	It("declares side effects as DESIGN.md says: NoneOnDryRun for the webhooks that write, None for the others", func() {
		// The namespace webhook reserves quota slots and the acknowledgement webhook
		// reserves acknowledgements, both in status; nothing else writes.
		writers := map[string]bool{
			"vnamespace.customers.partnerops.io":              true,
			"vmessageacknowledgement.customers.partnerops.io": true,
		}
		seen := map[string]bool{}
		check := func(name string, sideEffects *admissionregistrationv1.SideEffectClass) {
			seen[name] = true
			Expect(sideEffects).NotTo(BeNil(), name)
			if writers[name] {
				Expect(*sideEffects).To(Equal(admissionregistrationv1.SideEffectClassNoneOnDryRun), name)
			} else {
				Expect(*sideEffects).To(Equal(admissionregistrationv1.SideEffectClassNone), name)
			}
		}
		for _, cfg := range ofKind[admissionregistrationv1.ValidatingWebhookConfiguration](objs, "ValidatingWebhookConfiguration") {
			for _, w := range cfg.Webhooks {
				check(w.Name, w.SideEffects)
				Expect(*w.FailurePolicy).To(Equal(admissionregistrationv1.Fail), "%s: a bypass would break a promise", w.Name)
			}
		}
		for _, cfg := range ofKind[admissionregistrationv1.MutatingWebhookConfiguration](objs, "MutatingWebhookConfiguration") {
			for _, w := range cfg.Webhooks {
				check(w.Name, w.SideEffects)
			}
		}
		for name := range writers {
			Expect(seen).To(HaveKey(name), "the writing webhooks are configured under these names")
		}
	})

	It("ships the empty certificate Secret the rotation fills, and the cert-manager overlay turns rotation off", func() {
		secrets := ofKind[corev1.Secret](objs, "Secret")
		Expect(secrets).To(HaveLen(1))
		Expect(secrets[0].Name).To(Equal("customer-operator-webhook-server-cert"))
		Expect(secrets[0].Data).To(BeEmpty(), "re-applying config/default must never wipe the certificate")

		certManager := renderKustomization("config/default-certmanager")
		deployments := ofKind[appsv1.Deployment](certManager, "Deployment")
		Expect(deployments).To(HaveLen(1))
		Expect(deployments[0].Spec.Template.Spec.Containers[0].Env).
			To(ContainElement(corev1.EnvVar{Name: "WEBHOOK_CERT_ROTATION", Value: "false"}))
		Expect(ofKind[corev1.Secret](certManager, "Secret")).To(BeEmpty(), "cert-manager owns the Secret there")
		By("the manager there may not write webhook configurations nor the certificate Secret: the rotation's rights are gone")
		for _, role := range ofKind[rbacv1.ClusterRole](certManager, "ClusterRole", "Role") {
			for _, rule := range role.Rules {
				for _, resource := range rule.Resources {
					if strings.HasSuffix(resource, "webhookconfigurations") {
						Expect(rule.Verbs).NotTo(ContainElement(BeElementOf("create", "update", "patch", "delete", "deletecollection", "*")),
							"%s: %v", role.Name, rule)
					}
				}
			}
		}
		for _, binding := range ofKind[rbacv1.RoleBinding](certManager, "RoleBinding", "ClusterRoleBinding") {
			Expect(binding.RoleRef.Name).NotTo(ContainSubstring("webhook-c"), "%s binds a rotation role", binding.Name)
		}
		Expect(ofKind[rbacv1.Role](renderKustomization("config/default"), "Role")).
			To(ContainElement(HaveField("Name", "customer-operator-webhook-cert-role")), "config/default keeps them")
		for _, v := range deployments[0].Spec.Template.Spec.Volumes {
			if v.Name == "webhook-certs" {
				Expect(v.Secret.Optional).To(HaveValue(BeFalse()),
					"the webhook server reads the files at start: wait for them rather than crash-loop")
			}
		}

		By("the serving certificate is signed by a CA, which the caBundles get from its ca.crt")
		byName := map[string]*unstructured.Unstructured{}
		for _, obj := range certManager {
			if obj.GroupVersionKind().Group == "cert-manager.io" {
				byName[obj.GetKind()+"/"+obj.GetName()] = obj
			}
		}
		str := func(obj *unstructured.Unstructured, path ...string) string {
			GinkgoHelper()
			Expect(obj).NotTo(BeNil())
			v, _, err := unstructured.NestedString(obj.Object, path...)
			Expect(err).NotTo(HaveOccurred())
			return v
		}
		serving := byName["Certificate/customer-operator-serving-cert"]
		Expect(str(serving, "spec", "secretName")).To(Equal("customer-operator-webhook-server-cert"))
		dnsNames, _, _ := unstructured.NestedStringSlice(serving.Object, "spec", "dnsNames")
		Expect(dnsNames).To(ConsistOf(
			"customer-operator-webhook-service.customer-operator-system.svc",
			"customer-operator-webhook-service.customer-operator-system.svc.cluster.local"))
		caIssuer := byName["Issuer/"+str(serving, "spec", "issuerRef", "name")]
		caSecret := str(caIssuer, "spec", "ca", "secretName")
		Expect(caSecret).NotTo(BeEmpty(), "a CA Issuer, not the self-signed one")
		var ca *unstructured.Unstructured
		for _, obj := range byName {
			if obj.GetKind() == "Certificate" && str(obj, "spec", "secretName") == caSecret {
				ca = obj
			}
		}
		Expect(ca).NotTo(BeNil(), "a Certificate writes the CA Issuer's Secret %s", caSecret)
		isCA, _, _ := unstructured.NestedBool(ca.Object, "spec", "isCA")
		Expect(isCA).To(BeTrue())
		selfSigned := byName["Issuer/"+str(ca, "spec", "issuerRef", "name")]
		Expect(selfSigned).NotTo(BeNil())
		Expect(selfSigned.Object["spec"]).To(HaveKey("selfSigned"))
		for _, obj := range certManager {
			if strings.HasSuffix(obj.GetKind(), "WebhookConfiguration") {
				Expect(obj.GetAnnotations()).To(HaveKeyWithValue("cert-manager.io/inject-ca-from",
					"customer-operator-system/customer-operator-serving-cert"))
			}
		}

		By("a manager without its own rotation (this suite's, as with cert-manager) exports no certificate expiry")
		// CustomerOperatorWebhookCertificateExpiring (config/prometheus) takes
		// min(expiry) - time(): a series reading 0 would fire it for good.
		families, err := crmetrics.Registry.Gather()
		Expect(err).NotTo(HaveOccurred())
		for _, f := range families {
			Expect(f.GetName()).NotTo(Equal("customer_operator_webhook_certificate_expiry_timestamp_seconds"),
				"the series exists only once the operator's own rotation serves a certificate")
		}
	})
})

func containsAny(list []string, want ...string) bool {
	for _, item := range list {
		for _, w := range want {
			if item == w {
				return true
			}
		}
	}
	return false
}
