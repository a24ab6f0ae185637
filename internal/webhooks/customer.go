package webhooks

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/quota"
	"github.com/partnerops/customer-operator/internal/validation"
)

// +kubebuilder:webhook:path=/validate-customers-partnerops-io-v1alpha1-customer,mutating=false,failurePolicy=fail,sideEffects=None,groups=customers.partnerops.io,resources=customers,verbs=create;update;delete,versions=v1alpha1,name=vcustomer.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5

// CustomerValidator validates Customers: the identifier's format, that it equals the
// name and never changes, and that a Customer with projects is not deleted.
type CustomerValidator struct {
	// Reader lists project namespaces (the manager's cache, with the
	// quota.NamespaceCustomerIndex index).
	Reader client.Reader
	// Now is the clock (reservations expire); time.Now when nil.
	Now func() time.Time
}

var _ admission.Validator[*v1alpha1.Customer] = &CustomerValidator{}

// ValidateCreate implements admission.Validator.
func (v *CustomerValidator) ValidateCreate(_ context.Context, c *v1alpha1.Customer) (admission.Warnings, error) {
	return nil, invalid("Customer", c.Name, validation.ValidateCustomer(c))
}

// ValidateUpdate implements admission.Validator.
func (v *CustomerValidator) ValidateUpdate(_ context.Context, old, c *v1alpha1.Customer) (admission.Warnings, error) {
	return nil, invalid("Customer", c.Name, validation.ValidateCustomerUpdate(old, c))
}

// ValidateDelete refuses to delete a Customer that still has projects, or whose
// project creates were admitted but have not appeared yet. The Customer finalizer is
// the safety net when this webhook is bypassed or a project races the delete.
func (v *CustomerValidator) ValidateDelete(ctx context.Context, c *v1alpha1.Customer) (admission.Warnings, error) {
	var namespaces corev1.NamespaceList
	if err := v.Reader.List(ctx, &namespaces, client.MatchingFields{quota.NamespaceCustomerIndex: c.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("listing the projects of customer %q: %w", c.Name, err))
	}
	var live []string
	for _, ns := range namespaces.Items {
		if ns.DeletionTimestamp.IsZero() {
			live = append(live, ns.Name)
		}
	}
	if len(live) > 0 {
		return nil, forbiddenDelete(c.Name, fmt.Sprintf("customer %q still has %d project(s) (%s); delete them first",
			c.Name, len(live), summarize(live, 5)))
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	for _, r := range c.Status.Reservations {
		if now.Before(r.ExpiresAt.Time) {
			return nil, forbiddenDelete(c.Name, fmt.Sprintf("customer %q has a project being created (namespace %q); retry in a few seconds",
				c.Name, r.Namespace))
		}
	}
	return nil, nil
}

func forbiddenDelete(name, reason string) error {
	return apierrors.NewForbidden(schema.GroupResource{Group: v1alpha1.GroupName, Resource: "customers"}, name,
		fmt.Errorf("%s", reason))
}

// summarize lists up to max names, then how many more there are.
func summarize(names []string, max int) string {
	if len(names) <= max {
		return fmt.Sprint(names)
	}
	return fmt.Sprintf("%v and %d more", names[:max], len(names)-max)
}
