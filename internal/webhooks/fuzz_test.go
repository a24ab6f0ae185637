package webhooks

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/quota"
)

// FuzzAdmissionReview feeds raw request bodies to the webhook handlers exactly as
// the webhook server serves them (admission.WithValidator's http.Handler, over a
// fake client holding a customer, members and a message), the way a forged or
// corrupted request from inside the cluster network would reach them. Whatever the
// body: no panic, always a well-formed AdmissionReview answer, and every refusal an
// HTTP error code with a message. Seeds: testdata/fuzz/FuzzAdmissionReview.
func FuzzAdmissionReview(f *testing.F) {
	scheme := testScheme(f)
	n := len(fuzzHandlers(scheme))
	for i, seed := range admissionSeeds {
		f.Add(uint8(i%n), []byte(seed))
		// Each body to another handler too: a review of one kind sent to another's path.
		f.Add(uint8((i+1)%n), []byte(seed))
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		// Fresh state for every input (the acknowledgement webhook writes
		// reservations), so that each input's outcome depends on it alone.
		h := fuzzHandlers(scheme)[int(which)%n]
		req := httptest.NewRequest(http.MethodPost, "/validate", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		started := time.Now()
		h.ServeHTTP(rec, req)
		if took := time.Since(started); took > 2*time.Second {
			t.Fatalf("took %s to answer (the API server gives up after the webhook timeout)", took)
		}

		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
			t.Fatalf("answer is not an AdmissionReview (%v): %s", err, rec.Body.String())
		}
		if review.Response.Allowed {
			return
		}
		result := review.Response.Result
		if result == nil || result.Message == "" {
			t.Fatalf("refused without a message: %s", rec.Body.String())
		}
		if result.Code < 400 || result.Code > 599 {
			t.Fatalf("refused with code %d (%s)", result.Code, result.Message)
		}
	})
}

// fuzzHandlers builds one handler per validator, as SetupWithManager registers
// them, over a fake client with a customer, two members and a message.
func fuzzHandlers(scheme *runtime.Scheme) []http.Handler {
	c := fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(
			&v1alpha1.Customer{ObjectMeta: metaName("acme"), Spec: v1alpha1.CustomerSpec{Identifier: "acme", DisplayName: "Acme"}},
			nsMembership("acme-alice", "acme", "alice@acme.test", v1alpha1.RoleAdmin, v1alpha1.InvitationNone),
			nsMembership("acme-eve", "acme", "eve@acme.test", v1alpha1.RoleEditor, v1alpha1.InvitationNone),
			&v1alpha1.CustomerMessage{ObjectMeta: metaName("acme-notice"),
				Spec: v1alpha1.CustomerMessageSpec{Customer: "acme", Title: "Maintenance", Body: "Tonight."}},
		).
		WithStatusSubresource(&v1alpha1.CustomerMessage{}).
		WithIndex(&v1alpha1.CustomerMembership{}, controllers.MembershipCustomerIndex, func(o client.Object) []string {
			return []string{string(o.(*v1alpha1.CustomerMembership).Spec.Customer)}
		}).
		WithIndex(&v1alpha1.CustomerMembership{}, membershipUsernameIndex, func(o client.Object) []string {
			return []string{members.Username(o.(*v1alpha1.CustomerMembership), "")}
		}).
		WithIndex(&v1alpha1.MessageAcknowledgement{}, controllers.AcknowledgementMessageIndex, func(o client.Object) []string {
			return []string{o.(*v1alpha1.MessageAcknowledgement).Spec.Message}
		}).
		WithIndex(&corev1.Namespace{}, quota.NamespaceCustomerIndex, func(o client.Object) []string {
			return quota.IndexNamespaceByCustomer(o.(*corev1.Namespace))
		}).
		Build()
	partners := &nsPartners{partners: map[string]bool{"pat@partner.test": true}}
	return []http.Handler{
		admission.WithValidator(scheme, &NamespaceValidator{Cache: c, APIReader: c, Partners: partners, Slots: &nsSlots{outcome: quota.Reserved}}),
		admission.WithValidator(scheme, &CustomerMembershipValidator{Reader: c, Partners: partners}),
		admission.WithValidator(scheme, &CustomerValidator{Reader: c}),
		admission.WithValidator(scheme, &CustomerQuotaValidator{Partners: partners}),
		admission.WithValidator(scheme, &CustomerMessageValidator{Partners: partners}),
		admission.WithValidator(scheme, &MessageAcknowledgementValidator{Reader: c, APIReader: c, Writer: c}),
	}
}

// admissionSeeds are request bodies: valid reviews of each kind and operation,
// reviews that must be refused, and malformed ones.
var admissionSeeds = []string{
	`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"group":"","version":"v1","kind":"Namespace"},"resource":{"group":"","version":"v1","resource":"namespaces"},"name":"acme-web","operation":"CREATE","userInfo":{"username":"alice@acme.test"},"object":{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"acme-web","labels":{"customers.partnerops.io/customer":"acme"}}}}}`,
	`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"2","kind":{"group":"","version":"v1","kind":"Namespace"},"resource":{"group":"","version":"v1","resource":"namespaces"},"subResource":"status","name":"team","operation":"UPDATE","userInfo":{"username":"eve@acme.test"},"object":{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team","labels":{"customers.partnerops.io/customer":"acme"}}},"oldObject":{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team"}}}}`,
	`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"3","kind":{"group":"customers.partnerops.io","version":"v1alpha1","kind":"CustomerMembership"},"name":"acme-bob","operation":"CREATE","userInfo":{"username":"alice@acme.test"},"object":{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerMembership","metadata":{"name":"acme-bob"},"spec":{"customer":"acme","email":"bob@acme.test","role":"Viewer","invitation":"None","username":"system:admin"}}}}`,
	`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"4","kind":{"group":"customers.partnerops.io","version":"v1alpha1","kind":"CustomerMembership"},"name":"acme-eve","operation":"DELETE","userInfo":{"username":"mallory"},"oldObject":{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerMembership","metadata":{"name":"acme-eve"},"spec":{"customer":"acme","email":"eve@acme.test","role":"Editor"}}}}`,
	`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"5","kind":{"group":"customers.partnerops.io","version":"v1alpha1","kind":"Customer"},"name":"acme","operation":"DELETE","userInfo":{"username":"pat@partner.test"},"oldObject":{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"Customer","metadata":{"name":"acme"},"spec":{"identifier":"acme","displayName":"Acme"}}}}`,
	`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"6","kind":{"group":"customers.partnerops.io","version":"v1alpha1","kind":"CustomerQuota"},"name":"acme","operation":"UPDATE","userInfo":{"username":"alice@acme.test"},"object":{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerQuota","metadata":{"name":"acme"},"spec":{"customer":"acme","maxProjects":1000}},"oldObject":{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerQuota","metadata":{"name":"acme"},"spec":{"customer":"acme","maxProjects":1}}}}`,
	`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"7","kind":{"group":"customers.partnerops.io","version":"v1alpha1","kind":"CustomerMessage"},"name":"m","operation":"CREATE","userInfo":{"username":"pat@partner.test"},"object":{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerMessage","metadata":{"name":"m"},"spec":{"customer":"acme","title":"","body":"x","roles":["Admin","Admin","Owner"]}}}}`,
	`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"8","kind":{"group":"customers.partnerops.io","version":"v1alpha1","kind":"MessageAcknowledgement"},"name":"ack","operation":"CREATE","userInfo":{"username":"eve@acme.test"},"object":{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"MessageAcknowledgement","metadata":{"name":"ack"},"spec":{"message":"acme-notice","user":"alice@acme.test"}}}}`,
	`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"9","operation":"CREATE","object":{"kind":"Namespace","metadata":{"name":"x","labels":{"customers.partnerops.io/customer":"ACME"}}}}}`,
	`{"request":{"operation":"CONNECT","object":null}}`,
	`{"request":{"operation":"UPDATE","object":{"spec":{"customer":7}},"oldObject":"x"}}`,
	`{}`,
	`[]`,
	`null`,
	`{"request":`,
	"\x00\xff",
}

func metaName(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }
