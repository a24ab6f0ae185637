package controllers_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// webhookClient talks to the operator's webhook server directly, as anything in
// the cluster network could, trusting the server's CA (envtest's).
func webhookClient() (*http.Client, string) {
	GinkgoHelper()
	host, port, _ := env.WebhookOptions()
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(env.Environment.WebhookInstallOptions.LocalServingCAData)).To(BeTrue())
	c := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	return c, "https://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// webhookAnswer is an HTTP status and, when the body is an AdmissionReview, its
// result code (controller-runtime answers a request it cannot handle with HTTP 200
// and the error code in the review, which is what the API server reads).
type webhookAnswer struct {
	httpStatus   int
	reviewCode   int32
	allowed      bool
	reviewReason string
}

func postWebhook(c *http.Client, url, contentType string, body io.Reader) webhookAnswer {
	GinkgoHelper()
	resp, err := c.Post(url, contentType, body)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	Expect(err).NotTo(HaveOccurred())
	a := webhookAnswer{httpStatus: resp.StatusCode}
	var review admissionv1.AdmissionReview
	if json.Unmarshal(out, &review) == nil && review.Response != nil {
		a.allowed = review.Response.Allowed
		if review.Response.Result != nil {
			a.reviewCode, a.reviewReason = review.Response.Result.Code, review.Response.Result.Message
		}
	}
	return a
}

// forgedProjectReview is a CREATE of a project namespace as the API server would
// send it, but from someone else, claiming to be system:masters.
func forgedProjectReview(uid, namespace, customer string) []byte {
	GinkgoHelper()
	ns := newProject(namespace, customer)
	ns.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}
	raw, err := json.Marshal(ns)
	Expect(err).NotTo(HaveOccurred())
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("forged-" + uid),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Namespace"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "namespaces"},
			Name:      namespace,
			Operation: admissionv1.Create,
			UserInfo:  authenticationv1.UserInfo{Username: "forger", Groups: []string{"system:masters", "system:authenticated"}},
			Object:    runtime.RawExtension{Raw: raw},
			DryRun:    ptr.To(false),
		},
	}
	body, err := json.Marshal(review)
	Expect(err).NotTo(HaveOccurred())
	return body
}

var _ = Describe("Webhook endpoint hardening", func() {
	It("answers huge bodies, odd paths and odd methods with 4xx, and keeps serving", func() {
		c, base := webhookClient()
		const nsPath = "/validate--v1-namespace"

		By("odd paths: 404 from the server's mux")
		for _, path := range []string{"/", "/validate", "/admin", "/validate--v1-namespace/../../etc/passwd", "/%2e%2e/x", "/metrics"} {
			resp, err := c.Get(base + path)
			Expect(err).NotTo(HaveOccurred())
			_ = resp.Body.Close()
			Expect(resp.StatusCode).To(BeNumerically(">=", 400), "GET %s", path)
			Expect(resp.StatusCode).To(BeNumerically("<", 500), "GET %s", path)
		}

		By("a GET without a body, wrong content types, garbage and truncated JSON: 400 in the review")
		resp, err := c.Get(base + nsPath)
		Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		Expect(resp.StatusCode).To(BeNumerically("<", 500))
		for _, bad := range []struct{ contentType, body string }{
			{"text/plain", `{"request":{}}`},
			{"application/json", "\x00\xff\xfe"},
			{"application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"object":`},
			{"application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE","object":{"kind":"Namespace","metadata":{"name":7}}}}`},
		} {
			a := postWebhook(c, base+nsPath, bad.contentType, strings.NewReader(bad.body))
			Expect(a.allowed).To(BeFalse(), "%q", bad.body)
			Expect(a.reviewCode).To(BeNumerically(">=", 400), "%q: %+v", bad.body, a)
			Expect(a.reviewCode).To(BeNumerically("<", 500), "%q: %+v", bad.body, a)
		}

		By("a body over the 7 MiB limit: 413 in the review, without reading it all into memory")
		huge := io.MultiReader(strings.NewReader(`{"request":{"object":"`), bytes.NewReader(bytes.Repeat([]byte("A"), 8<<20)), strings.NewReader(`"}}`))
		a := postWebhook(c, base+nsPath, "application/json", huge)
		Expect(a.allowed).To(BeFalse())
		Expect(a.reviewCode).To(Equal(int32(http.StatusRequestEntityTooLarge)), "%+v", a)

		By("still admitting real requests through the API server afterwards")
		Expect(admin.Create(ctx, newProject("wh-probe", "wh-nobody"), client.DryRunAll)).
			To(MatchError(ContainSubstring(`customer "wh-nobody"`)), "the webhook still answers (and refuses an unknown customer)")
	})

	It("lets a forged AdmissionReview posted straight to the webhook port hold at most a bounded, self-releasing slot", func() {
		const customer = "wh-forge"
		pqSetup()
		pqCustomer(customer, ptr.To[int32](1))
		c, base := webhookClient()

		By("posting a forged review, claiming system:masters, for a project that is never created")
		started := time.Now()
		a := postWebhook(c, base+"/validate--v1-namespace", "application/json",
			bytes.NewReader(forgedProjectReview("1", "wh-forge-ghost", customer)))
		Expect(a.httpStatus).To(Equal(http.StatusOK))
		Expect(a.allowed).To(BeTrue(), "the webhook cannot tell a forged review from a real one: %+v", a)

		By("which writes nothing but one reservation, with an expiry")
		cust := pqCustomerEventually(customer, func(g Gomega, c *v1alpha1.Customer) {
			g.Expect(c.Status.Reservations).To(HaveLen(1))
		})
		Expect(cust.Status.Reservations[0].Namespace).To(Equal("wh-forge-ghost"))
		Expect(cust.Status.Reservations[0].ExpiresAt.Time).To(BeTemporally("<=", started.Add(pqReservationBound+2*time.Second)))
		Expect(admin.Get(ctx, client.ObjectKey{Name: "wh-forge-ghost"}, &corev1.Namespace{})).
			To(MatchError(ContainSubstring("not found")), "an admission answer creates nothing")

		By("a second forged review for the same namespace holds no second slot")
		a = postWebhook(c, base+"/validate--v1-namespace", "application/json",
			bytes.NewReader(forgedProjectReview("2", "wh-forge-ghost", customer)))
		Expect(a.allowed).To(BeTrue())
		Expect(pqCustomerEventually(customer, func(Gomega, *v1alpha1.Customer) {}).Status.Reservations).To(HaveLen(1))

		By("while it lasts, the slot is taken: a real create is refused, saying so")
		partner := pqClient(pqPartner)
		pqDenied(partner.Create(ctx, newProject("wh-forge-web", customer)), fmt.Sprintf(`customer %q has 1 of 1 projects`, customer))

		By("and it releases itself within the admission timeout plus the grace period")
		Eventually(func(g Gomega) {
			c := pqCustomerEventually(customer, func(Gomega, *v1alpha1.Customer) {})
			g.Expect(c.Status.Reservations).To(BeEmpty())
		}, pqReservationBound+20*time.Second).Should(Succeed())
		released := time.Since(started)
		GinkgoWriter.Printf("forged reservation released %s after it was made (bound %s)\n", released.Round(time.Second), pqReservationBound)
		Expect(released).To(BeNumerically("<", pqReservationBound+8*time.Second), "released at its expiry, not whenever")
		Expect(partner.Create(ctx, newProject("wh-forge-web", customer))).To(Succeed())
	})
})
