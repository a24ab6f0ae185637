package webhooks

import (
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
)

// ackValidator is a validator over a fake API server with customer acme, its
// SingleRead message acme-notice (acknowledged by ann, whose reservation lapsed),
// and two active members, ann (Admin) and eve (Editor).
func ackValidator(t *testing.T) (*MessageAcknowledgementValidator, metav1.Time) {
	scheme := testScheme(t)
	published := metav1.NewTime(cmCreated.Add(time.Hour))
	msg := &v1alpha1.CustomerMessage{
		ObjectMeta: metav1.ObjectMeta{Name: "acme-notice", UID: "msg-uid", CreationTimestamp: published},
		Spec:       v1alpha1.CustomerMessageSpec{Customer: "acme", Title: "t", Body: "b", ReadPolicy: v1alpha1.SingleRead},
		Status: v1alpha1.CustomerMessageStatus{Reservations: []v1alpha1.AcknowledgementReservation{
			{User: "ann@acme.test", ExpiresAt: metav1.NewTime(published.Add(time.Minute))}, // lapsed
		}},
	}
	annAck := &v1alpha1.MessageAcknowledgement{
		ObjectMeta: metav1.ObjectMeta{Name: "acme-notice-ann", CreationTimestamp: metav1.NewTime(published.Add(time.Second))},
		Spec:       v1alpha1.MessageAcknowledgementSpec{Message: "acme-notice", User: "ann@acme.test"},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		cmCustomer("acme", false), msg, annAck,
		cmMembership("acme-ann", "acme", "ann@acme.test", v1alpha1.RoleAdmin, v1alpha1.InvitationNone),
		cmMembership("acme-eve", "acme", "eve@acme.test", v1alpha1.RoleEditor, v1alpha1.InvitationNone),
	).WithStatusSubresource(&v1alpha1.CustomerMessage{}).
		WithIndex(&v1alpha1.CustomerMembership{}, controllers.MembershipCustomerIndex, func(o client.Object) []string {
			return []string{string(o.(*v1alpha1.CustomerMembership).Spec.Customer)}
		}).
		WithIndex(&v1alpha1.MessageAcknowledgement{}, controllers.AcknowledgementMessageIndex, func(o client.Object) []string {
			return []string{o.(*v1alpha1.MessageAcknowledgement).Spec.Message}
		}).Build()
	v := &MessageAcknowledgementValidator{Reader: c, APIReader: c, Writer: c,
		Now: func() time.Time { return published.Add(10 * time.Minute) }}
	return v, published
}

// A SingleRead message is resolved by its first stored acknowledgement even before
// the status lists it and after its reservation lapsed (no controller ran in
// between, as after a failover): a second reader is refused, not admitted.
func TestSingleReadRefusesASecondReaderWhileTheFirstIsNotListedYet(t *testing.T) {
	g := NewWithT(t)
	v, _ := ackValidator(t)
	_, err := v.ValidateCreate(cmAs("eve@acme.test", admissionv1.Create), &v1alpha1.MessageAcknowledgement{
		ObjectMeta: metav1.ObjectMeta{Name: "acme-notice-eve"},
		Spec:       v1alpha1.MessageAcknowledgementSpec{Message: "acme-notice", User: "eve@acme.test"},
	})
	g.Expect(err).To(MatchError(ContainSubstring(
		`CustomerMessage "acme-notice" is already resolved for everyone by "ann@acme.test" (SingleRead); there is nothing left to acknowledge`)))
}

// Anyone may create acknowledgements, so the denial must not tell a stranger which
// messages exist or whose they are: a message of a customer they are no member of
// reads exactly like a missing one.
func TestAcknowledgementDenialHidesOtherCustomersMessages(t *testing.T) {
	g := NewWithT(t)
	v, _ := ackValidator(t)
	ack := func(message string) error {
		_, err := v.ValidateCreate(cmAs("sam@globex.test", admissionv1.Create), &v1alpha1.MessageAcknowledgement{
			ObjectMeta: metav1.ObjectMeta{Name: "by-sam"},
			Spec:       v1alpha1.MessageAcknowledgementSpec{Message: message, User: "sam@globex.test"},
		})
		return err
	}
	existing, missing := ack("acme-notice"), ack("acme-nothing")
	g.Expect(existing).To(MatchError(
		`messageacknowledgements.customers.partnerops.io "by-sam" is forbidden: spec.message: CustomerMessage "acme-notice" does not exist, or its customer has no active member "sam@globex.test"`))
	g.Expect(strings.Replace(missing.Error(), "acme-nothing", "acme-notice", 1)).To(Equal(existing.Error()))
	g.Expect(existing.Error()).NotTo(ContainSubstring("acme\""), "the customer is not named")
}

// status.acknowledgedBy holds 5,000 users (its MaxItems): the 5,001st
// acknowledgement could never be recorded, and every status write of the message
// would fail, so admission refuses it and says why.
func TestAcknowledgementPastTheStatusLimitIsRefused(t *testing.T) {
	g := NewWithT(t)
	v, published := ackValidator(t)
	ctx := cmAs("eve@acme.test", admissionv1.Create)
	c := v.Reader.(client.Client) // the fake API server behind every reader
	msg := &v1alpha1.CustomerMessage{}
	g.Expect(c.Get(ctx, client.ObjectKey{Name: "acme-notice"}, msg)).To(Succeed())
	msg.Spec.ReadPolicy = v1alpha1.AllMustRead
	g.Expect(c.Update(ctx, msg)).To(Succeed())
	msg.Status.Reservations = nil
	for i := range maxAcknowledgements {
		msg.Status.AcknowledgedBy = append(msg.Status.AcknowledgedBy,
			v1alpha1.Acknowledgement{User: fmt.Sprintf("user-%d@acme.test", i), Time: published})
	}
	g.Expect(c.Status().Update(ctx, msg)).To(Succeed())

	_, err := v.ValidateCreate(ctx, &v1alpha1.MessageAcknowledgement{
		ObjectMeta: metav1.ObjectMeta{Name: "acme-notice-eve"},
		Spec:       v1alpha1.MessageAcknowledgementSpec{Message: "acme-notice", User: "eve@acme.test"},
	})
	g.Expect(err).To(MatchError(ContainSubstring(
		`CustomerMessage "acme-notice" has 5000 acknowledgements, the most its status.acknowledgedBy can hold`)))

	msg.Status.AcknowledgedBy = msg.Status.AcknowledgedBy[:maxAcknowledgements-1]
	g.Expect(c.Status().Update(ctx, msg)).To(Succeed())
	_, err = v.ValidateCreate(ctx, &v1alpha1.MessageAcknowledgement{
		ObjectMeta: metav1.ObjectMeta{Name: "acme-notice-eve"},
		Spec:       v1alpha1.MessageAcknowledgementSpec{Message: "acme-notice", User: "eve@acme.test"},
	})
	g.Expect(err).NotTo(HaveOccurred(), "one below the limit, and ann's stored acknowledgement counted among them")
}
