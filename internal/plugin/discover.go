package plugin

import (
	"context"
	"fmt"
	"sort"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// rulesNamespace is where the SelfSubjectRulesReview is asked. Rules reviews are
// namespaced, but the rules of ClusterRoleBindings, which are all that matter for
// cluster-scoped kinds, appear in every namespace; default always exists.
const rulesNamespace = "default"

// access is what a user may do with one resource of the operator's group.
type access struct {
	// list: the user may list every object of the resource.
	list bool
	// names are the objects the user may get by name.
	names sets.Set[string]
}

// accessTo asks a SelfSubjectRulesReview what the user may read of resource.
func accessTo(ctx context.Context, c client.Client, resource string) (access, error) {
	review := &authorizationv1.SelfSubjectRulesReview{
		Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: rulesNamespace},
	}
	if err := c.Create(ctx, review); err != nil {
		return access{}, fmt.Errorf("asking the cluster what you may read (SelfSubjectRulesReview): %w", err)
	}
	a := access{names: sets.New[string]()}
	for _, rule := range review.Status.ResourceRules {
		if !matches(rule.APIGroups, v1alpha1.GroupName) || !matches(rule.Resources, resource) {
			continue
		}
		switch {
		case matches(rule.Verbs, "list") && len(rule.ResourceNames) == 0:
			a.list = true
		case matches(rule.Verbs, "get"):
			a.names.Insert(rule.ResourceNames...)
		}
	}
	// An authorizer that cannot enumerate rules (a webhook) makes the review
	// incomplete: try a list then, and let RBAC answer.
	if review.Status.Incomplete && a.names.Len() == 0 {
		a.list = true
	}
	return a, nil
}

func matches(values []string, want string) bool {
	for _, v := range values {
		if v == want || v == "*" {
			return true
		}
	}
	return false
}

// readableMessages returns the CustomerMessages the user may read (of one customer,
// or of all when customer is empty), sorted by customer and age: by list when RBAC
// allows it (partners), else one get per name the rules review returned.
func readableMessages(ctx context.Context, c client.Client, customer string) ([]v1alpha1.CustomerMessage, error) {
	a, err := accessTo(ctx, c, "customermessages")
	if err != nil {
		return nil, err
	}
	var out []v1alpha1.CustomerMessage
	if a.list {
		var list v1alpha1.CustomerMessageList
		if err := c.List(ctx, &list); err != nil {
			return nil, fmt.Errorf("listing CustomerMessages: %w", err)
		}
		out = list.Items
	} else {
		for _, name := range sets.List(a.names) {
			m := &v1alpha1.CustomerMessage{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, m); err != nil {
				// Deleted since, or the grant changed since the review: not readable.
				if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
					continue
				}
				return nil, fmt.Errorf("reading CustomerMessage %q: %w", name, err)
			}
			out = append(out, *m)
		}
	}
	kept := out[:0]
	for _, m := range out {
		if (customer == "" || string(m.Spec.Customer) == customer) && m.DeletionTimestamp.IsZero() {
			kept = append(kept, m)
		}
	}
	sort.SliceStable(kept, func(i, j int) bool {
		if kept[i].Spec.Customer != kept[j].Spec.Customer {
			return kept[i].Spec.Customer < kept[j].Spec.Customer
		}
		if !kept[i].CreationTimestamp.Equal(&kept[j].CreationTimestamp) {
			return kept[i].CreationTimestamp.Before(&kept[j].CreationTimestamp)
		}
		return kept[i].Name < kept[j].Name
	})
	return kept, nil
}
