package operator

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllertest"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
	"github.com/partnerops/customer-operator/internal/portal"
)

func TestStripForCache(t *testing.T) {
	m := &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{
		Name: "acme-dana",
		Annotations: map[string]string{
			lastAppliedAnnotation:               `{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerMembership"}`,
			v1alpha1.ResendInvitationAnnotation: "2",
			"argocd.argoproj.io/tracking-id":    "customers:customers.partnerops.io/CustomerMembership:/acme-dana",
		},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
	}}
	out, err := stripForCache(m)
	if err != nil || out != m {
		t.Fatalf("got %v, %v; want the same object back", out, err)
	}
	if m.ManagedFields != nil {
		t.Errorf("managed fields kept: %v", m.ManagedFields)
	}
	if _, ok := m.Annotations[lastAppliedAnnotation]; ok {
		t.Error("the last-applied copy is kept")
	}
	if m.Annotations[v1alpha1.ResendInvitationAnnotation] != "2" || len(m.Annotations) != 1 {
		t.Errorf("of an own kind only the operator's own annotations stay (it reads the resend request): %v", m.Annotations)
	}

	// An own kind from Git: a GitOps tool's tracking label goes, the map with it.
	c := &v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: "acme",
		Labels: map[string]string{"app.kubernetes.io/instance": "customers"}}}
	if _, err := stripForCache(c); err != nil || c.Labels != nil {
		t.Errorf("got %v, %v; want no labels", c.Labels, err)
	}
	// Nothing foreign: the same map is kept.
	own := map[string]string{v1alpha1.CustomerLabel: "acme"}
	q := &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "acme", Labels: own}}
	if _, err := stripForCache(q); err != nil || len(q.Labels) != 1 || q.Labels[v1alpha1.CustomerLabel] != "acme" {
		t.Errorf("got %v, %v", q.Labels, err)
	}

	// Namespaces keep their labels (projects are selected and counted by them) and
	// other annotations; only the last-applied copy goes.
	project := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "acme-web",
		Labels:      map[string]string{v1alpha1.CustomerLabel: "acme", "team": "web"},
		Annotations: map[string]string{lastAppliedAnnotation: "{}", "owner": "web"}}}
	if _, err := stripForCache(project); err != nil || len(project.Labels) != 2 || len(project.Annotations) != 1 {
		t.Errorf("got %v %v, %v", project.Labels, project.Annotations, err)
	}

	// Only the last-applied copy: no empty map left behind.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "acme-web",
		Annotations: map[string]string{lastAppliedAnnotation: "{}"}}}
	if _, err := stripForCache(ns); err != nil || ns.Annotations != nil {
		t.Errorf("got %v, %v", ns.Annotations, err)
	}
	// Not an object: handed back as it is.
	if out, err := stripForCache("tombstone"); err != nil || out != "tombstone" {
		t.Errorf("got %v, %v", out, err)
	}
}

func TestParseTrustedProxies(t *testing.T) {
	g := NewWithT(t)
	got, err := ParseTrustedProxies(" 10.0.0.0/8, 192.168.1.7 ,::ffff:172.16.0.1,2001:db8::/32,10.1.2.3/16,")
	g.Expect(err).NotTo(HaveOccurred())
	var texts []string
	for _, p := range got {
		texts = append(texts, p.String())
	}
	g.Expect(texts).To(Equal([]string{"10.0.0.0/8", "192.168.1.7/32", "172.16.0.1/32", "2001:db8::/32", "10.1.0.0/16"}))

	got, err = ParseTrustedProxies("")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got).To(BeEmpty())

	_, err = ParseTrustedProxies("10.0.0.0/8,ingress-nginx")
	g.Expect(err).To(MatchError(`"ingress-nginx" is neither a CIDR (10.0.0.0/8) nor an IP address`))
}

func TestParseDefaultMaxProjects(t *testing.T) {
	g := NewWithT(t)
	for value, want := range map[string]int32{"0": 0, "10": 10, " 7 ": 7, "100000": 100000} {
		got, err := ParseDefaultMaxProjects(value)
		g.Expect(err).NotTo(HaveOccurred(), value)
		g.Expect(got).To(Equal(want), value)
	}
	// 4294967296 wrapped to 0 and 2147483648 to a negative limit when the flag was
	// read as an int and converted.
	for _, value := range []string{"-1", "100001", "2147483648", "4294967296", "ten", "1.5", ""} {
		_, err := ParseDefaultMaxProjects(value)
		g.Expect(err).To(MatchError("want a whole number from 0 to 100000, as a CustomerQuota's spec.maxProjects"), value)
	}
}

func TestPortalURL(t *testing.T) {
	g := NewWithT(t)
	opts := DefaultOptions()
	g.Expect(opts.PortalURL).To(BeEmpty(), "no default: a link to the manager's own localhost reaches nobody")
	g.Expect(opts.Validate()).To(Succeed(), "unset holds invitations back; it does not stop the manager")
	for _, good := range []string{"https://portal.example.com", "http://localhost:8082", "https://example.com/customers/"} {
		opts.PortalURL = good
		g.Expect(opts.Validate()).To(Succeed(), good)
	}
	for _, bad := range []string{"portal.example.com", "ftp://portal.example.com", "https://portal.example.com/?x=1", "https://user@portal.example.com"} {
		opts.PortalURL = bad
		g.Expect(opts.Validate()).To(MatchError(ContainSubstring("--portal-url: portal URL")), bad)
	}
}

// Not ready before the informers the webhooks and the portal read have synced: a
// webhook call routed to a replica whose informers are still listing would wait
// for them.
func TestInformersSyncedCheck(t *testing.T) {
	g := NewWithT(t)
	synced, listing := controllertest.NewFakeInformer(), controllertest.NewFakeInformer()
	synced.Synced()
	check := informersSyncedCheck([]cache.Informer{synced, listing})
	g.Expect(check(httptest.NewRequest(http.MethodGet, "/readyz", nil))).To(MatchError(ContainSubstring("not synced yet")))
	listing.Synced()
	g.Expect(check(httptest.NewRequest(http.MethodGet, "/readyz", nil))).To(Succeed())
}

// A mail out when the manager stops is finished and recorded before the graceful
// shutdown ends (controller-runtime stops the controllers after the runnables that
// need no leader, the portal among them), and the pod's grace period covers the
// preStop sleep plus the shutdown.
func TestStoppingGraceFitsTheShutdown(t *testing.T) {
	g := NewWithT(t)
	g.Expect(controllers.SendingGrace).To(BeNumerically("<", controllers.StoppingGrace), "time is kept for the record")
	g.Expect(portal.ShutdownTimeout + controllers.StoppingGrace).To(BeNumerically("<", gracefulShutdown))
	g.Expect(5*time.Second+gracefulShutdown).To(BeNumerically("<", 40*time.Second), "config/manager: preStop 5 s, terminationGracePeriodSeconds 40")
}

func TestInvitationLimitsValidate(t *testing.T) {
	g := NewWithT(t)
	opts := DefaultOptions()
	g.Expect(opts.MaxInvitationsPerCustomerPerHour).To(Equal(DefaultMaxInvitationsPerCustomerPerHour))
	opts.MaxInvitationsPerCustomerPerHour = 0
	g.Expect(opts.Validate()).To(Succeed(), "0 turns the limit off")
	opts.MaxInvitationsPerCustomerPerHour = 100000
	g.Expect(opts.Validate()).To(Succeed())
	for _, bad := range []int{-1, 100001} {
		opts.MaxInvitationsPerCustomerPerHour = bad
		g.Expect(opts.Validate()).To(MatchError(fmt.Sprintf("--max-invitations-per-customer-per-hour must be from 0 (no limit) to 100000, not %d", bad)))
	}
	opts = DefaultOptions()
	opts.InvitationMinInterval = -time.Second
	g.Expect(opts.Validate()).To(MatchError("--invitation-min-interval must not be negative (0: no limit), not -1s"))
}
