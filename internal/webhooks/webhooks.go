// Package webhooks holds the validating admission webhooks of the operator: one
// typed validator per kind (admission.Validator[T]), each on its own struct with the
// readers it needs. Validation rules are pure functions in internal/validation; this
// package adds what needs the cluster: references, identities, uniqueness, quota.
package webhooks

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/authz"
)

// Options are what every validator needs from the manager.
type Options struct {
	// Reader reads from the manager's cache.
	Reader client.Reader
	// Partners decides who is a partner.
	Partners authz.PartnerChecker
	// UsernamePrefix is --username-prefix (a member's default username is it
	// followed by their e-mail).
	UsernamePrefix string
	// Now is the clock of reservations; time.Now when nil.
	Now func() time.Time

	// DefaultMaxProjects caps the projects of customers without a CustomerQuota.
	DefaultMaxProjects int32
	// ReservationGrace is added to the admission timeout to make the lifetime of a
	// project slot reserved by an admitted create (quota.DefaultGrace when zero).
	ReservationGrace time.Duration
	// OperatorNamespace is the operator's own namespace: never a project.
	OperatorNamespace string
	// RequireProjectPrefix confines a customer's Admins to projects named
	// "<customer>-..." (--require-project-prefix).
	RequireProjectPrefix bool
	// MaxMembershipsPerCustomer caps the memberships a customer's Admins may make
	// (--max-memberships-per-customer; 0: no cap). Partners are not capped.
	MaxMembershipsPerCustomer int
}

// SetupWithManager registers every webhook of the operator with mgr's webhook server.
func SetupWithManager(mgr ctrl.Manager, opts Options) error {
	return errors.Join(
		ctrl.NewWebhookManagedBy(mgr, &v1alpha1.Customer{}).
			WithValidator(observe[*v1alpha1.Customer]("customer", &CustomerValidator{Reader: opts.Reader})).Complete(),
		ctrl.NewWebhookManagedBy(mgr, &v1alpha1.CustomerQuota{}).
			WithValidator(observe[*v1alpha1.CustomerQuota]("customerquota", &CustomerQuotaValidator{Partners: opts.Partners})).Complete(),
		setupNamespaceWebhook(mgr, opts),
		ctrl.NewWebhookManagedBy(mgr, &v1alpha1.CustomerMembership{}).
			WithDefaulter(CustomerMembershipDefaulter{}).
			WithValidator(observe[*v1alpha1.CustomerMembership]("customermembership", &CustomerMembershipValidator{
				Reader: opts.Reader, Partners: opts.Partners, UsernamePrefix: opts.UsernamePrefix,
				MaxPerCustomer: opts.MaxMembershipsPerCustomer,
			})).Complete(),
		ctrl.NewWebhookManagedBy(mgr, &v1alpha1.CustomerMessage{}).
			WithValidator(observe[*v1alpha1.CustomerMessage]("customermessage", &CustomerMessageValidator{Partners: opts.Partners})).Complete(),
		ctrl.NewWebhookManagedBy(mgr, &v1alpha1.MessageAcknowledgement{}).
			WithValidator(observe[*v1alpha1.MessageAcknowledgement]("messageacknowledgement", &MessageAcknowledgementValidator{
				Reader: opts.Reader, APIReader: mgr.GetAPIReader(), Writer: mgr.GetClient(),
				UsernamePrefix: opts.UsernamePrefix, Now: opts.Now,
			})).Complete(),
	)
}

// finishingDeletion reports whether an UPDATE only finishes a deletion that was
// admitted already: the object is being deleted, and the update removes
// finalizers and changes nothing else (spec, labels, annotations, owner
// references). That is how the garbage collector removes the foregroundDeletion
// and orphan finalizers (Argo CD prunes with foreground deletion, kubectl delete
// --cascade=foreground and orphan do the same) and how other controllers remove
// theirs. None of them is a partner or a member, and refusing them would leave
// the object being deleted for ever.
func finishingDeletion(old, updated client.Object, oldSpec, newSpec any) bool {
	if old.GetDeletionTimestamp() == nil || !equality.Semantic.DeepEqual(oldSpec, newSpec) ||
		!maps.Equal(old.GetLabels(), updated.GetLabels()) || !maps.Equal(old.GetAnnotations(), updated.GetAnnotations()) ||
		!equality.Semantic.DeepEqual(old.GetOwnerReferences(), updated.GetOwnerReferences()) {
		return false
	}
	held := sets.New(old.GetFinalizers()...)
	for _, f := range updated.GetFinalizers() {
		if !held.Has(f) {
			return false
		}
	}
	return true
}

// invalid turns field errors into the API's 422 Invalid error, which names each
// field and rule, or nil when there are none.
func invalid(kind, name string, errs field.ErrorList) error {
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(schema.GroupKind{Group: v1alpha1.GroupName, Kind: kind}, name, errs)
}

// forbidden is a 403 whose message says what was refused and why.
func forbidden(resource, name string, format string, args ...any) error {
	return apierrors.NewForbidden(schema.GroupResource{Group: v1alpha1.GroupName, Resource: resource},
		name, fmt.Errorf(format, args...))
}
