package webhooks

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/authz"
	"github.com/partnerops/customer-operator/internal/validation"
)

// +kubebuilder:webhook:path=/validate-customers-partnerops-io-v1alpha1-customermessage,mutating=false,failurePolicy=fail,sideEffects=None,groups=customers.partnerops.io,resources=customermessages,verbs=create;update;delete,versions=v1alpha1,name=vcustomermessage.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5

// CustomerMessageValidator validates CustomerMessages: the field rules (CEL holds
// them first), and that only partners write messages. RBAC already keeps members to
// reading; this holds even for a Role that grants more by mistake, because a message
// speaks for the partner.
type CustomerMessageValidator struct {
	// Partners decides who is a partner.
	Partners authz.PartnerChecker
}

var _ admission.Validator[*v1alpha1.CustomerMessage] = &CustomerMessageValidator{}

// ValidateCreate implements admission.Validator.
func (v *CustomerMessageValidator) ValidateCreate(ctx context.Context, m *v1alpha1.CustomerMessage) (admission.Warnings, error) {
	if err := invalid("CustomerMessage", m.Name, validation.ValidateMessage(m)); err != nil {
		return nil, err
	}
	return nil, v.requirePartner(ctx, "create", m.Name)
}

// ValidateUpdate implements admission.Validator. An update that only finishes a
// deletion passes (finishingDeletion).
func (v *CustomerMessageValidator) ValidateUpdate(ctx context.Context, old, m *v1alpha1.CustomerMessage) (admission.Warnings, error) {
	if finishingDeletion(old, m, old.Spec, m.Spec) {
		return nil, nil
	}
	if err := invalid("CustomerMessage", m.Name, validation.ValidateMessageUpdate(old, m)); err != nil {
		return nil, err
	}
	return nil, v.requirePartner(ctx, "update", m.Name)
}

// ValidateDelete implements admission.Validator. Deleting a message also deletes
// its acknowledgements (garbage collection): partners only.
func (v *CustomerMessageValidator) ValidateDelete(ctx context.Context, m *v1alpha1.CustomerMessage) (admission.Warnings, error) {
	return nil, v.requirePartner(ctx, "delete", m.Name)
}

// requirePartner admits the request only if its requester is a partner.
func (v *CustomerMessageValidator) requirePartner(ctx context.Context, verb, name string) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	partner, err := v.Partners.IsPartner(ctx, req.UserInfo)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	if !partner {
		return forbidden("customermessages", name,
			"only partners may %s CustomerMessages (a partner is whoever may create customers); %q may not", verb, req.UserInfo.Username)
	}
	return nil
}
