package webhooks

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/authz"
	"github.com/partnerops/customer-operator/internal/validation"
)

// +kubebuilder:webhook:path=/validate-customers-partnerops-io-v1alpha1-customerquota,mutating=false,failurePolicy=fail,sideEffects=None,groups=customers.partnerops.io,resources=customerquotas,verbs=create;update;delete,versions=v1alpha1,name=vcustomerquota.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5

// CustomerQuotaValidator validates CustomerQuotas and lets only partners write them.
// RBAC already keeps the customers' members to reading their own quota; asking the
// authorizer here as well keeps that promise whatever RBAC a cluster adds (a quota
// is what stands between a customer's Admins and unlimited namespaces).
type CustomerQuotaValidator struct {
	// Partners decides who is a partner.
	Partners authz.PartnerChecker
}

var _ admission.Validator[*v1alpha1.CustomerQuota] = &CustomerQuotaValidator{}

// ValidateCreate implements admission.Validator.
func (v *CustomerQuotaValidator) ValidateCreate(ctx context.Context, q *v1alpha1.CustomerQuota) (admission.Warnings, error) {
	if err := v.requirePartner(ctx, q, "create"); err != nil {
		return nil, err
	}
	return nil, invalid("CustomerQuota", q.Name, validation.ValidateQuota(q))
}

// ValidateUpdate implements admission.Validator. An update that only finishes a
// deletion passes (finishingDeletion).
func (v *CustomerQuotaValidator) ValidateUpdate(ctx context.Context, old, q *v1alpha1.CustomerQuota) (admission.Warnings, error) {
	if finishingDeletion(old, q, old.Spec, q.Spec) {
		return nil, nil
	}
	if err := v.requirePartner(ctx, q, "update"); err != nil {
		return nil, err
	}
	return nil, invalid("CustomerQuota", q.Name, validation.ValidateQuotaUpdate(old, q))
}

// ValidateDelete implements admission.Validator: deleting a quota changes the limit
// (to --default-max-projects) as much as editing it does.
func (v *CustomerQuotaValidator) ValidateDelete(ctx context.Context, q *v1alpha1.CustomerQuota) (admission.Warnings, error) {
	return nil, v.requirePartner(ctx, q, "delete")
}

func (v *CustomerQuotaValidator) requirePartner(ctx context.Context, q *v1alpha1.CustomerQuota, verb string) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	partner, err := v.Partners.IsPartner(ctx, req.UserInfo)
	if err != nil {
		return apierrors.NewInternalError(fmt.Errorf("deciding whether %q is a partner: %w", req.UserInfo.Username, err))
	}
	if !partner {
		return forbidden("customerquotas", q.Name, "%q is not a partner: only partners may %s CustomerQuotas (ask your partner to change spec.maxProjects)",
			req.UserInfo.Username, verb)
	}
	return nil
}
