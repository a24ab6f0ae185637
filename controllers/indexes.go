package controllers

import (
	"context"
	"errors"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/quota"
)

// Field indexes on the manager's cache. Every kind refers to its customer (or
// message) by name; these let a reconciler find "all memberships of acme" without
// scanning every object.
const (
	// MembershipCustomerIndex indexes CustomerMemberships by spec.customer.
	MembershipCustomerIndex = "spec.customer"
	// MessageCustomerIndex indexes CustomerMessages by spec.customer.
	MessageCustomerIndex = "spec.customer"
	// AcknowledgementMessageIndex indexes MessageAcknowledgements by spec.message.
	AcknowledgementMessageIndex = "spec.message"
	// AccessCustomerIndex indexes the RBAC objects the operator made (the cache
	// holds no others: internal/operator) by their customer label.
	AccessCustomerIndex = "metadata.labels." + v1alpha1.CustomerLabel
)

// SetupIndexes registers the field indexes with the manager's cache.
func SetupIndexes(ctx context.Context, indexer client.FieldIndexer) error {
	return errors.Join(
		indexer.IndexField(ctx, &v1alpha1.CustomerMembership{}, MembershipCustomerIndex, func(o client.Object) []string {
			return []string{string(o.(*v1alpha1.CustomerMembership).Spec.Customer)}
		}),
		indexer.IndexField(ctx, &v1alpha1.CustomerMessage{}, MessageCustomerIndex, func(o client.Object) []string {
			return []string{string(o.(*v1alpha1.CustomerMessage).Spec.Customer)}
		}),
		indexer.IndexField(ctx, &v1alpha1.MessageAcknowledgement{}, AcknowledgementMessageIndex, func(o client.Object) []string {
			return []string{o.(*v1alpha1.MessageAcknowledgement).Spec.Message}
		}),
		// Projects by customer (quota.NamespaceCustomerIndex): counted on every
		// project admission, which must not scan every cached namespace.
		indexer.IndexField(ctx, &corev1.Namespace{}, quota.NamespaceCustomerIndex, func(o client.Object) []string {
			return quota.IndexNamespaceByCustomer(o.(*corev1.Namespace))
		}),
		// The access controller's prune lists one customer's RBAC on every pass; a
		// label selector alone would match it against every customer's.
		indexer.IndexField(ctx, &rbacv1.RoleBinding{}, AccessCustomerIndex, indexByCustomerLabel),
		indexer.IndexField(ctx, &rbacv1.ClusterRoleBinding{}, AccessCustomerIndex, indexByCustomerLabel),
		indexer.IndexField(ctx, &rbacv1.ClusterRole{}, AccessCustomerIndex, indexByCustomerLabel),
	)
}

func indexByCustomerLabel(o client.Object) []string {
	if customer := o.GetLabels()[v1alpha1.CustomerLabel]; customer != "" {
		return []string{customer}
	}
	return nil
}
