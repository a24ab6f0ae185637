package controllers_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/chromedp/chromedp"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// chromiumPath is Debian's chromium, which .ci/run installs. The browser test fails
// without it: it never skips.
const chromiumPath = "/usr/bin/chromium"

// newBrowser starts a headless chromium with a fresh profile for one spec.
func newBrowser() context.Context {
	GinkgoHelper()
	_, err := os.Stat(chromiumPath)
	Expect(err).NotTo(HaveOccurred(), "the browser test needs chromium at %s (apt-get install -y chromium)", chromiumPath)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(GinkgoT().TempDir()),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	timeoutCtx, cancelTimeout := context.WithTimeout(browserCtx, 90*time.Second)
	DeferCleanup(func() {
		cancelTimeout()
		cancelBrowser()
		cancelAlloc()
	})
	return timeoutCtx
}

// textOf reads the visible text of the element sel selects.
func textOf[S chromedp.Selectable](browser context.Context, sel S) string {
	GinkgoHelper()
	text, err := chromedp.Run(browser, chromedp.Text(sel))
	Expect(err).NotTo(HaveOccurred())
	return text
}

// httpGet fetches a portal page as a plain HTTP client would.
func httpGet(url string) (int, string) {
	GinkgoHelper()
	resp, err := http.Get(url) //nolint:noctx // a test against loopback
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, string(body)
}

// portalGetFrom fetches a portal page as a proxy on loopback would forward it for
// client, and returns the status code.
func portalGetFrom(client, path string) int {
	GinkgoHelper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, managerOptions.PortalURL+path, nil)
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("X-Forwarded-For", client)
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	_, _ = io.Copy(io.Discard, resp.Body)
	Expect(resp.Body.Close()).To(Succeed())
	return resp.StatusCode
}

var _ = Describe("Invitation portal behind a proxy", func() {
	It("rate-limits each client X-Forwarded-For names (--portal-trusted-proxies), not the proxy they share", func() {
		By("waiting for the portal to listen: this spec may run before any other has used it")
		Eventually(func() error {
			resp, err := http.Get(managerOptions.PortalURL + "/invitations/warm-up") //nolint:noctx // a test against loopback
			if err == nil {
				err = resp.Body.Close()
			}
			return err
		}).Should(Succeed())

		By("guessing tokens as one client until the portal refuses it")
		Eventually(func() int { return portalGetFrom("203.0.113.7", "/invitations/guess") }).
			WithPolling(10 * time.Millisecond).Should(Equal(http.StatusTooManyRequests))
		Expect(portalGetFrom("203.0.113.7", "/invitations/guess")).To(Equal(http.StatusTooManyRequests))

		By("still answering another client behind the same proxy")
		Expect(portalGetFrom("203.0.113.8", "/invitations/guess")).To(Equal(http.StatusNotFound))
		Expect(portalGetFrom("198.51.100.1, 203.0.113.9", "/invitations/guess")).To(Equal(http.StatusNotFound),
			"the right-most untrusted hop is the client")
	})
})

var _ = Describe("Invitation acceptance", func() {
	It("opens the link from the e-mail in a browser, accepts, and the user gets access", func() {
		const user = "kim@example.com"
		createCustomer("browser-co", "Browser & Sons")
		createProject("browser-co-web", "browser-co")
		m := createMembership(newMembership("browser-co-kim", "browser-co", user, v1alpha1.RoleEditor, v1alpha1.InvitationEmail))
		Eventually(mailsTo(user)).Should(HaveLen(1))
		link := linkIn(mailsTo(user)()[0])
		Expect(canCreateDeployments(user, "browser-co-web")()).To(BeFalse(), "nothing before acceptance")

		By("showing the customer's display name and the role, and accepting on the button")
		browser := newBrowser()
		Expect(chromedp.Do(browser,
			chromedp.Navigate(link),
			chromedp.WaitVisible(chromedp.ID("accept")),
		)).To(Succeed())
		heading := textOf(browser, chromedp.CSS("h1"))
		customer := textOf(browser, chromedp.ID("customer"))
		role := textOf(browser, chromedp.ID("role"))
		resp, err := chromedp.RunResponse(browser, chromedp.Click(chromedp.ID("accept")))
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Status).To(BeEquivalentTo(http.StatusOK))
		Expect(chromedp.Do(browser, chromedp.WaitVisible(chromedp.ID("username")))).To(Succeed())
		welcome := textOf(browser, chromedp.CSS("h1"))
		Expect(heading).To(Equal("You are invited to Browser & Sons"))
		Expect(customer).To(Equal("Browser & Sons"))
		Expect(role).To(Equal("Editor"))
		Expect(welcome).To(Equal("Welcome to Browser & Sons"))

		By("recording the acceptance and granting access")
		expectCondition(m.Name, v1alpha1.AcceptedCondition, metav1.ConditionTrue, v1alpha1.AcceptedReason)
		expectCondition(m.Name, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason)
		Eventually(func(g Gomega) {
			got := getMembership(g, m.Name)
			g.Expect(got.Status.AcceptedTime).NotTo(BeNil())
			g.Expect(got.Status.AcceptedRound).To(Equal(int32(1)))
		}).Should(Succeed())
		// The API server's authorizer reads the new binding from its informer a moment
		// after Ready.
		Eventually(canCreateDeployments(user, "browser-co-web"), "3s").Should(BeTrue(),
			"edit in the project (kube-controller-manager aggregates its rules); Ready means granted")

		By("refusing the used link: it works once")
		code, body := httpGet(link)
		Expect(code).To(Equal(http.StatusConflict))
		Expect(body).To(ContainSubstring("This invitation was already accepted"))
		Consistently(mailsTo(user), "1s").Should(HaveLen(1))
	})

	It("answers wrong and replaced links with a clear page, the right status, and nothing about others (expired ones: the membership specs)", func() {
		createCustomer("links-co", "Links Secret Name")
		m := createMembership(newMembership("links-co-lea", "links-co", "lea@example.com", v1alpha1.RoleViewer, v1alpha1.InvitationEmail))
		Eventually(mailsTo("lea@example.com")).Should(HaveLen(1))
		first := linkIn(mailsTo("lea@example.com")()[0])

		By("a link that is not a token, and a token with one character changed")
		code, body := httpGet(managerOptions.PortalURL + "/invitations/not-a-token")
		Expect(code).To(Equal(http.StatusNotFound))
		Expect(body).To(ContainSubstring("This invitation link is not valid"))
		tampered := []byte(first)
		last := len(tampered) - 1
		tampered[last] = map[bool]byte{true: 'B', false: 'A'}[tampered[last] == 'A']
		code, body = httpGet(string(tampered))
		Expect(code).To(Equal(http.StatusNotFound))
		Expect(body).To(ContainSubstring("This invitation link is not valid"))
		Expect(body).NotTo(ContainSubstring("Links Secret Name"), "a wrong token reveals nothing")

		By("a link of an earlier round")
		annotate(m.Name, v1alpha1.ResendInvitationAnnotation, "again")
		Eventually(mailsTo("lea@example.com")).Should(HaveLen(2))
		second := linkIn(mailsTo("lea@example.com")()[1])
		// The page reads the portal's cache, which sees round 2 a moment after the mail
		// went out (accepting reads fresh: an optimistic lock refuses a stale round).
		Eventually(func(g Gomega) {
			code, body := httpGet(first)
			g.Expect(code).To(Equal(http.StatusGone))
			g.Expect(body).To(ContainSubstring("This invitation was replaced by a newer one"))
		}).WithPolling(500*time.Millisecond).Should(Succeed(), "polled slowly: the portal rate-limits token attempts")
		code, body = httpGet(second)
		Expect(code).To(Equal(http.StatusOK))
		Expect(body).To(ContainSubstring("Links Secret Name"))
		Expect(strings.Count(body, `id="accept"`)).To(Equal(1))
	})
})
