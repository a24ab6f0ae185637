package webhooks

import (
	"context"

	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/validation"
)

// +kubebuilder:webhook:path=/validate-customers-partnerops-io-v1alpha1-customerquota,mutating=false,failurePolicy=fail,sideEffects=None,groups=customers.partnerops.io,resources=customerquotas,verbs=create;update,versions=v1alpha1,name=vcustomerquota.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:webhook:path=/validate-customers-partnerops-io-v1alpha1-customermembership,mutating=false,failurePolicy=fail,sideEffects=None,groups=customers.partnerops.io,resources=customermemberships,verbs=create;update;delete,versions=v1alpha1,name=vcustomermembership.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:webhook:path=/validate-customers-partnerops-io-v1alpha1-customermessage,mutating=false,failurePolicy=fail,sideEffects=None,groups=customers.partnerops.io,resources=customermessages,verbs=create;update,versions=v1alpha1,name=vcustomermessage.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:webhook:path=/validate-customers-partnerops-io-v1alpha1-messageacknowledgement,mutating=false,failurePolicy=fail,sideEffects=None,groups=customers.partnerops.io,resources=messageacknowledgements,verbs=create;update,versions=v1alpha1,name=vmessageacknowledgement.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5

// CustomerQuotaValidator validates CustomerQuotas.
type CustomerQuotaValidator struct{}

// ValidateCreate implements admission.Validator.
func (v *CustomerQuotaValidator) ValidateCreate(_ context.Context, q *v1alpha1.CustomerQuota) (admission.Warnings, error) {
	return nil, invalid("CustomerQuota", q.Name, validation.ValidateQuota(q))
}

// ValidateUpdate implements admission.Validator.
func (v *CustomerQuotaValidator) ValidateUpdate(_ context.Context, old, q *v1alpha1.CustomerQuota) (admission.Warnings, error) {
	return nil, invalid("CustomerQuota", q.Name, validation.ValidateQuotaUpdate(old, q))
}

// ValidateDelete implements admission.Validator.
func (v *CustomerQuotaValidator) ValidateDelete(context.Context, *v1alpha1.CustomerQuota) (admission.Warnings, error) {
	return nil, nil
}

// CustomerMembershipValidator validates CustomerMemberships.
type CustomerMembershipValidator struct{}

// ValidateCreate implements admission.Validator.
func (v *CustomerMembershipValidator) ValidateCreate(_ context.Context, m *v1alpha1.CustomerMembership) (admission.Warnings, error) {
	return nil, invalid("CustomerMembership", m.Name, validation.ValidateMembership(m))
}

// ValidateUpdate implements admission.Validator.
func (v *CustomerMembershipValidator) ValidateUpdate(_ context.Context, old, m *v1alpha1.CustomerMembership) (admission.Warnings, error) {
	return nil, invalid("CustomerMembership", m.Name, validation.ValidateMembershipUpdate(old, m))
}

// ValidateDelete implements admission.Validator.
func (v *CustomerMembershipValidator) ValidateDelete(context.Context, *v1alpha1.CustomerMembership) (admission.Warnings, error) {
	return nil, nil
}

// CustomerMessageValidator validates CustomerMessages.
type CustomerMessageValidator struct{}

// ValidateCreate implements admission.Validator.
func (v *CustomerMessageValidator) ValidateCreate(_ context.Context, m *v1alpha1.CustomerMessage) (admission.Warnings, error) {
	return nil, invalid("CustomerMessage", m.Name, validation.ValidateMessage(m))
}

// ValidateUpdate implements admission.Validator.
func (v *CustomerMessageValidator) ValidateUpdate(_ context.Context, old, m *v1alpha1.CustomerMessage) (admission.Warnings, error) {
	return nil, invalid("CustomerMessage", m.Name, validation.ValidateMessageUpdate(old, m))
}

// ValidateDelete implements admission.Validator.
func (v *CustomerMessageValidator) ValidateDelete(context.Context, *v1alpha1.CustomerMessage) (admission.Warnings, error) {
	return nil, nil
}

// MessageAcknowledgementValidator validates MessageAcknowledgements.
type MessageAcknowledgementValidator struct{}

// ValidateCreate implements admission.Validator.
func (v *MessageAcknowledgementValidator) ValidateCreate(_ context.Context, a *v1alpha1.MessageAcknowledgement) (admission.Warnings, error) {
	return nil, invalid("MessageAcknowledgement", a.Name, validation.ValidateAcknowledgement(a))
}

// ValidateUpdate implements admission.Validator.
func (v *MessageAcknowledgementValidator) ValidateUpdate(_ context.Context, old, a *v1alpha1.MessageAcknowledgement) (admission.Warnings, error) {
	return nil, invalid("MessageAcknowledgement", a.Name, validation.ValidateAcknowledgementUpdate(old, a))
}

// ValidateDelete implements admission.Validator.
func (v *MessageAcknowledgementValidator) ValidateDelete(context.Context, *v1alpha1.MessageAcknowledgement) (admission.Warnings, error) {
	return nil, nil
}
