package certrotation_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/partnerops/customer-operator/internal/certrotation"
	"github.com/partnerops/customer-operator/internal/operator"
	"github.com/partnerops/customer-operator/internal/testenv"
)

// TestRotationAgainstAnAPIServer runs the rotator against a real kube-apiserver:
// the shipped empty Secret gets a CA and serving certificate, the webhook
// configuration gets the CA, and the API server then calls a webhook server that
// serves the certificate from memory (TLS verified by the API server itself).
func TestRotationAgainstAnAPIServer(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, err := testenv.Start(ctx, testenv.Options{})
	g.Expect(err).NotTo(HaveOccurred(), "the control plane must start: this test never skips")
	defer func() { g.Expect(env.Stop()).To(Succeed()) }()
	c := env.Admin

	// config/default ships the Secret empty; the operator only gets and updates it.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: certrotation.DefaultSecretName, Namespace: testenv.OperatorNamespace}}
	g.Expect(c.Create(ctx, secret)).To(Succeed())

	t.Run("the operator's RBAC allows exactly the shipped names", func(t *testing.T) {
		g := NewWithT(t)
		for _, tc := range []struct {
			group, resource, namespace, name, verb string
			allowed                                bool
		}{
			{"", "secrets", testenv.OperatorNamespace, certrotation.DefaultSecretName, "get", true},
			{"", "secrets", testenv.OperatorNamespace, certrotation.DefaultSecretName, "update", false}, // patch is enough
			{"", "secrets", testenv.OperatorNamespace, certrotation.DefaultSecretName, "patch", true},
			{"", "secrets", testenv.OperatorNamespace, "some-other-secret", "update", false},
			// To create the Secret again if it is deleted (create cannot be narrowed by name).
			{"", "secrets", testenv.OperatorNamespace, "", "create", true},
			{"admissionregistration.k8s.io", "validatingwebhookconfigurations", "", certrotation.DefaultValidatingWebhookConfName, "patch", true},
			{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", "", certrotation.DefaultMutatingWebhookConfName, "patch", true},
			{"admissionregistration.k8s.io", "validatingwebhookconfigurations", "", "someone-elses-webhook", "patch", false},
		} {
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   testenv.OperatorUsername,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + testenv.OperatorNamespace, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Group: tc.group, Resource: tc.resource, Namespace: tc.namespace, Name: tc.name, Verb: tc.verb,
				},
			}}
			g.Expect(c.Create(ctx, review)).To(Succeed())
			g.Expect(review.Status.Allowed).To(Equal(tc.allowed), "%s %s/%s", tc.verb, tc.resource, tc.name)
		}
	})

	// A webhook server that denies labelled ConfigMaps, served with the rotator's
	// certificate for 127.0.0.1.
	port := freePort(t)
	clk := clocktesting.NewFakeClock(time.Now())
	newRotator := func() *certrotation.Rotator {
		r, err := certrotation.New(certrotation.Options{
			Client:             c,
			Namespace:          testenv.OperatorNamespace,
			Hosts:              []string{"127.0.0.1"},
			ValidatingWebhooks: []string{"certrotation-test"},
			Clock:              clk,
		})
		g.Expect(err).NotTo(HaveOccurred())
		return r
	}
	rotator := newRotator()
	g.Expect(rotator.ReadyCheck(nil)).To(MatchError(ContainSubstring("not issued")))

	server := webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: port, TLSOpts: []func(*tls.Config){rotator.TLSOption}})
	server.Register("/deny", &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Denied("denied by the webhook with the rotated certificate")
	})})
	go func() { _ = server.Start(ctx) }()

	webhookConfig := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "certrotation-test"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "deny.certrotation.test",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL: ptr.To("https://127.0.0.1:" + strconv.Itoa(port) + "/deny"),
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
			}},
			ObjectSelector:          &metav1.LabelSelector{MatchLabels: map[string]string{"certrotation-test": "true"}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To[int32](5),
		}},
	}
	g.Expect(c.Create(ctx, webhookConfig)).To(Succeed())

	g.Expect(rotator.Reconcile(ctx)).To(Succeed())
	g.Expect(rotator.ReadyCheck(nil)).To(MatchError(ContainSubstring("not yet trusting")),
		"the API server loads the new caBundle asynchronously: ready from the next round on")
	g.Expect(rotator.Reconcile(ctx)).To(Succeed())
	g.Expect(rotator.ReadyCheck(nil)).To(Succeed())

	g.Expect(c.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
	g.Expect(secret.Data).To(HaveKey("ca.crt"))
	g.Expect(secret.Data).To(HaveKey("ca.key"))
	g.Expect(secret.Data).To(HaveKey("tls.crt"))
	g.Expect(secret.Data).To(HaveKey("tls.key"))
	g.Expect(c.Get(ctx, client.ObjectKeyFromObject(webhookConfig), webhookConfig)).To(Succeed())
	g.Expect(webhookConfig.Webhooks[0].ClientConfig.CABundle).To(Equal(secret.Data["ca.crt"]))

	// The served certificate's expiry is exported, for an alert on renewal that
	// keeps failing.
	block, _ := pem.Decode(secret.Data["tls.crt"])
	g.Expect(block).NotTo(BeNil())
	leaf, err := x509.ParseCertificate(block.Bytes)
	g.Expect(err).NotTo(HaveOccurred())
	families, err := metrics.Registry.Gather()
	g.Expect(err).NotTo(HaveOccurred())
	var expiry []float64
	for _, f := range families {
		if f.GetName() == "customer_operator_webhook_certificate_expiry_timestamp_seconds" {
			for _, m := range f.GetMetric() {
				expiry = append(expiry, m.GetGauge().GetValue())
			}
		}
	}
	g.Expect(expiry).To(Equal([]float64{float64(leaf.NotAfter.Unix())}))

	// The API server verifies the served certificate against the injected CA: a
	// denial from the handler (not a TLS error) proves both are in place.
	labelled := func(name string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "default", Labels: map[string]string{"certrotation-test": "true"},
		}}
	}
	g.Eventually(func() error { return c.Create(ctx, labelled("first")) }, 20*time.Second, 200*time.Millisecond).
		Should(MatchError(ContainSubstring("denied by the webhook with the rotated certificate")))

	t.Run("a second replica serves the same certificate and writes nothing", func(t *testing.T) {
		g := NewWithT(t)
		before := secret.ResourceVersion
		second := newRotator()
		g.Expect(second.Reconcile(ctx)).To(Succeed())
		first, err := rotator.GetCertificate(nil)
		g.Expect(err).NotTo(HaveOccurred())
		other, err := second.GetCertificate(nil)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(other.Certificate).To(Equal(first.Certificate))
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
		g.Expect(secret.ResourceVersion).To(Equal(before))
	})

	t.Run("a caBundle someone reset is written back", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(webhookConfig), webhookConfig)).To(Succeed())
		webhookConfig.Webhooks[0].ClientConfig.CABundle = nil
		g.Expect(c.Update(ctx, webhookConfig)).To(Succeed())
		g.Expect(rotator.Reconcile(ctx)).To(Succeed())
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(webhookConfig), webhookConfig)).To(Succeed())
		g.Expect(webhookConfig.Webhooks[0].ClientConfig.CABundle).To(Equal(secret.Data["ca.crt"]))
	})

	t.Run("a deleted Secret is created again, and the old CA stays trusted until replicas serve the new one", func(t *testing.T) {
		g := NewWithT(t)
		denied := func() error { return c.Create(ctx, labelled("after-deletion")) }
		const byTheWebhook = "denied by the webhook with the rotated certificate"
		oldCA := secret.Data["ca.crt"]
		oldServed, err := rotator.GetCertificate(nil)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(c.Delete(ctx, secret)).To(Succeed())

		g.Expect(rotator.Reconcile(ctx)).To(Succeed())
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
		g.Expect(secret.Data["ca.crt"]).NotTo(Equal(oldCA))
		g.Expect(string(secret.Data["ca.crt"])).To(HaveSuffix(string(oldCA)),
			"the CA the caBundle held is kept: the Secret's own was gone")
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(webhookConfig), webhookConfig)).To(Succeed())
		g.Expect(webhookConfig.Webhooks[0].ClientConfig.CABundle).To(Equal(secret.Data["ca.crt"]))
		served, err := rotator.GetCertificate(nil)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(served.Certificate).To(Equal(oldServed.Certificate),
			"the new certificate waits a round: the API server may not trust its CA yet")
		g.Expect(denied()).To(MatchError(ContainSubstring(byTheWebhook)))

		g.Expect(rotator.Reconcile(ctx)).To(Succeed())
		served, err = rotator.GetCertificate(nil)
		g.Expect(err).NotTo(HaveOccurred())
		pair, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(served.Certificate).To(Equal(pair.Certificate))
		g.Eventually(denied, 20*time.Second, 200*time.Millisecond).Should(MatchError(ContainSubstring(byTheWebhook)),
			"the API server trusts the new CA")
		g.Expect(rotator.ReadyCheck(nil)).To(Succeed())

		// A replica that starts while the Secret is gone again serves its new CA's
		// certificate, but turns ready a round later.
		g.Expect(c.Delete(ctx, secret)).To(Succeed())
		fresh := newRotator()
		g.Expect(fresh.Reconcile(ctx)).To(Succeed())
		g.Expect(fresh.ReadyCheck(nil)).To(MatchError(ContainSubstring("not yet trusting")))
		g.Expect(fresh.Reconcile(ctx)).To(Succeed())
		g.Expect(fresh.ReadyCheck(nil)).To(Succeed())
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(webhookConfig), webhookConfig)).To(Succeed())
		g.Expect(bytes.Count(webhookConfig.Webhooks[0].ClientConfig.CABundle, []byte("BEGIN CERTIFICATE"))).To(Equal(3),
			"the new CA and the two newest before it, no more")
		g.Expect(rotator.Reconcile(ctx)).To(Succeed())
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
	})

	t.Run("the serving certificate is renewed before it expires, under the same CA", func(t *testing.T) {
		g := NewWithT(t)
		oldCert, oldCA := secret.Data["tls.crt"], secret.Data["ca.crt"]
		clk.Step(certrotation.DefaultCertValidity - certrotation.DefaultRenewBefore + time.Hour)
		g.Expect(rotator.Reconcile(ctx)).To(Succeed())
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
		g.Expect(secret.Data["tls.crt"]).NotTo(Equal(oldCert))
		g.Expect(secret.Data["ca.crt"]).To(Equal(oldCA), "the caBundle need not change")
		served, err := rotator.GetCertificate(nil)
		g.Expect(err).NotTo(HaveOccurred())
		pair, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(served.Certificate).To(Equal(pair.Certificate))
	})

	t.Run("a CA near its end is replaced, and the old one stays trusted meanwhile", func(t *testing.T) {
		g := NewWithT(t)
		oldCA := secret.Data["ca.crt"]
		// The CA in use is the bundle's first; older ones are not carried again.
		oldCA = oldCA[:bytes.Index(oldCA, []byte("-----END CERTIFICATE-----\n"))+len("-----END CERTIFICATE-----\n")]
		clk.Step(certrotation.DefaultCAValidity - certrotation.DefaultCertValidity)
		g.Expect(rotator.Reconcile(ctx)).To(Succeed())
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
		g.Expect(secret.Data["ca.crt"]).NotTo(Equal(oldCA))
		g.Expect(string(secret.Data["ca.crt"])).To(HaveSuffix(string(oldCA)), "the bundle keeps the old CA after the new one")
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(webhookConfig), webhookConfig)).To(Succeed())
		g.Expect(webhookConfig.Webhooks[0].ClientConfig.CABundle).To(Equal(secret.Data["ca.crt"]))
		pair, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
		g.Expect(err).NotTo(HaveOccurred())
		served, err := rotator.GetCertificate(nil)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(served.Certificate).NotTo(Equal(pair.Certificate), "served from the next round on")
		g.Expect(rotator.Reconcile(ctx)).To(Succeed())
		served, err = rotator.GetCertificate(nil)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(served.Certificate).To(Equal(pair.Certificate))
	})
}

// TestOperatorRotatesWithItsOwnRBAC runs the manager as operator.New wires it with
// --webhook-cert-rotation, authenticated as the operator's ServiceAccount with only
// config/default's RBAC: it fills the shipped Secret, injects the caBundle into
// both shipped webhook configurations, and turns ready only then.
func TestOperatorRotatesWithItsOwnRBAC(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env, err := testenv.Start(ctx, testenv.Options{})
	g.Expect(err).NotTo(HaveOccurred(), "the control plane must start: this test never skips")
	defer func() { g.Expect(env.Stop()).To(Succeed()) }()
	c := env.Admin

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: certrotation.DefaultSecretName, Namespace: testenv.OperatorNamespace}}
	g.Expect(c.Create(ctx, secret)).To(Succeed())

	probeAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	opts := operator.DefaultOptions()
	opts.Namespace = testenv.OperatorNamespace
	// Secure metrics as config/default runs them (--metrics-secure).
	metricsAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	opts.MetricsBindAddress, opts.MetricsSecure = metricsAddr, true
	opts.HealthProbeBindAddress = probeAddr
	opts.PortalBindAddress = "127.0.0.1:0"
	opts.WebhookHost, opts.WebhookPort = "127.0.0.1", freePort(t)
	opts.WebhookCertRotation = true
	mgr, err := operator.New(env.OperatorConfig, opts)
	g.Expect(err).NotTo(HaveOccurred())
	done := make(chan error, 1)
	mgrCtx, stop := context.WithCancel(ctx)
	go func() { done <- mgr.Start(mgrCtx) }()
	defer func() { stop(); g.Expect(<-done).To(Succeed()) }()

	g.Eventually(func(g Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
		g.Expect(secret.Data).To(HaveKey("tls.crt"))
		pair, err := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
		g.Expect(err).NotTo(HaveOccurred())
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(leaf.DNSNames).To(ContainElement(certrotation.DefaultServiceName + "." + testenv.OperatorNamespace + ".svc"))

		validating := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		g.Expect(c.Get(ctx, client.ObjectKey{Name: certrotation.DefaultValidatingWebhookConfName}, validating)).To(Succeed())
		g.Expect(validating.Webhooks).NotTo(BeEmpty())
		for _, w := range validating.Webhooks {
			g.Expect(w.ClientConfig.CABundle).To(Equal(secret.Data["ca.crt"]), w.Name)
		}
		mutating := &admissionregistrationv1.MutatingWebhookConfiguration{}
		g.Expect(c.Get(ctx, client.ObjectKey{Name: certrotation.DefaultMutatingWebhookConfName}, mutating)).To(Succeed())
		for _, w := range mutating.Webhooks {
			g.Expect(w.ClientConfig.CABundle).To(Equal(secret.Data["ca.crt"]), w.Name)
		}
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	g.Eventually(func() (int, error) {
		resp, err := http.Get("http://" + probeAddr + "/readyz")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}, 30*time.Second, 200*time.Millisecond).Should(Equal(http.StatusOK))

	// --metrics-secure: HTTPS, and an anonymous scraper is turned away.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	g.Eventually(func() (int, error) {
		resp, err := insecure.Get("https://" + metricsAddr + "/metrics")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}, 30*time.Second, 200*time.Millisecond).Should(Equal(http.StatusUnauthorized))

	// Real tokens, reviewed by the API server: a scraper bound to the shipped
	// metrics-reader ClusterRole reads the metrics, another ServiceAccount is
	// forbidden, a token the API server does not know is unauthorized.
	scrape := func(token string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+metricsAddr+"/metrics", nil)
		g.Expect(err).NotTo(HaveOccurred())
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := insecure.Do(req)
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		g.Expect(err).NotTo(HaveOccurred())
		return resp.StatusCode, string(body)
	}
	token := func(name string) string {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testenv.OperatorNamespace}}
		g.Expect(c.Create(ctx, sa)).To(Succeed())
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](600)}}
		g.Expect(c.SubResource("token").Create(ctx, sa, tr)).To(Succeed())
		g.Expect(tr.Status.Token).NotTo(BeEmpty())
		return tr.Status.Token
	}
	scraper, stranger := token("prometheus"), token("stranger")
	g.Expect(c.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "customer-operator-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "prometheus", Namespace: testenv.OperatorNamespace}},
	})).To(Succeed())
	g.Eventually(func(g Gomega) {
		code, body := scrape(scraper)
		g.Expect(code).To(Equal(http.StatusOK))
		g.Expect(body).To(ContainSubstring("controller_runtime_reconcile_total"))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	code, body := scrape(stranger)
	g.Expect(code).To(Equal(http.StatusForbidden))
	g.Expect(body).To(ContainSubstring(`user "system:serviceaccount:` + testenv.OperatorNamespace + `:stranger" may not get "/metrics"`))
	code, _ = scrape("not-a-token")
	g.Expect(code).To(Equal(http.StatusUnauthorized))
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
