package plugin

import (
	"context"
	"fmt"
	"sort"

	"golang.org/x/sync/errgroup"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// rulesNamespace is where the SelfSubjectRulesReview is asked. Rules reviews are
// namespaced, but the rules of ClusterRoleBindings, which are all that matter for
// cluster-scoped kinds, appear in every namespace; default always exists.
const rulesNamespace = "default"

// access is what a user may read of one resource.
type access struct {
	// list: the user may list every object of the resource.
	list bool
	// names are the objects the user may get by name.
	names sets.Set[string]
}

// accessTo asks a SelfSubjectRulesReview what the user may read of resource (of
// the API group group).
func accessTo(ctx context.Context, c client.Client, group, resource string) (access, error) {
	review := &authorizationv1.SelfSubjectRulesReview{
		Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: rulesNamespace},
	}
	if err := c.Create(ctx, review); err != nil {
		return access{}, fmt.Errorf("asking the cluster what you may read (SelfSubjectRulesReview): %w", err)
	}
	a := access{names: sets.New[string]()}
	for _, rule := range review.Status.ResourceRules {
		if !matches(rule.APIGroups, group) || !matches(rule.Resources, resource) {
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

// readable returns the objects of one resource that the user may read: all of
// them by list when RBAC allows it (partners), else one get per name the rules
// review returned. kind names the resource in errors.
func readable[T any, P interface {
	*T
	client.Object
}](ctx context.Context, c client.Client, group, resource, kind string, list func() ([]T, error)) ([]T, error) {
	a, err := accessTo(ctx, c, group, resource)
	if err != nil {
		return nil, err
	}
	if a.list {
		items, err := list()
		if err == nil {
			return items, nil
		}
		if !apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("listing %ss: %w", kind, err)
		}
		// RBAC refused the list the review suggested: the review was incomplete
		// (an authorizer that cannot enumerate its rules, as on some managed
		// clusters), or the rule came from a RoleBinding in rulesNamespace (view
		// there lists namespaces), which does not reach a cluster-wide list. What
		// the review named is still readable by name.
	}
	names := sets.List(a.names)
	objs := make([]T, len(names))
	found := make([]bool, len(names))
	err = inParallel(ctx, len(names), func(ctx context.Context, i int) error {
		if err := c.Get(ctx, client.ObjectKey{Name: names[i]}, P(&objs[i])); err != nil {
			// Deleted since, or the grant changed since the review: not readable.
			if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
				return nil
			}
			return fmt.Errorf("reading %s %q: %w", kind, names[i], err)
		}
		found[i] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []T
	for i := range objs {
		if found[i] {
			out = append(out, objs[i])
		}
	}
	return out, nil
}

// parallelRequests is how many requests a command has in flight at once when it
// reads or checks objects one by one.
const parallelRequests = 8

// inParallel calls fn for 0 ≤ i < n, parallelRequests at a time, and returns the
// first error (the others' contexts are cancelled then).
func inParallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelRequests)
	for i := range n {
		if gctx.Err() != nil {
			break // one failed, or the command was interrupted: start no more
		}
		g.Go(func() error { return fn(gctx, i) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Interrupted before any call failed: what was read is not all there is.
	return ctx.Err()
}

// readableMessages returns the CustomerMessages the user may read (of one customer,
// or of all when customer is empty), sorted by customer and age.
func readableMessages(ctx context.Context, c client.Client, customer string) ([]v1alpha1.CustomerMessage, error) {
	out, err := readable(ctx, c, v1alpha1.GroupName, "customermessages", "CustomerMessage",
		func() ([]v1alpha1.CustomerMessage, error) {
			var list v1alpha1.CustomerMessageList
			err := c.List(ctx, &list)
			return list.Items, err
		})
	if err != nil {
		return nil, err
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

// readableProjects returns the names of customer's live projects that the user may
// read, sorted. Partners list them; every member may get each project of their
// customer by name (internal/access), which the rules review returns.
func readableProjects(ctx context.Context, c client.Client, customer string) ([]string, error) {
	namespaces, err := readable(ctx, c, corev1.GroupName, "namespaces", "namespace",
		func() ([]corev1.Namespace, error) {
			var list corev1.NamespaceList
			err := c.List(ctx, &list, client.MatchingLabels{v1alpha1.CustomerLabel: customer})
			return list.Items, err
		})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, ns := range namespaces {
		if ns.Labels[v1alpha1.CustomerLabel] == customer && ns.DeletionTimestamp.IsZero() {
			names = append(names, ns.Name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// readableMemberships returns the CustomerMemberships of customer that the user may
// read. Partners list them; the customer's Admins may get each membership of their
// customer by name (internal/access), which the rules review returns.
func readableMemberships(ctx context.Context, c client.Client, customer string) ([]v1alpha1.CustomerMembership, error) {
	memberships, err := readable(ctx, c, v1alpha1.GroupName, "customermemberships", "CustomerMembership",
		func() ([]v1alpha1.CustomerMembership, error) {
			var list v1alpha1.CustomerMembershipList
			err := c.List(ctx, &list)
			return list.Items, err
		})
	if err != nil {
		return nil, err
	}
	var out []v1alpha1.CustomerMembership
	for _, m := range memberships {
		if string(m.Spec.Customer) == customer && m.DeletionTimestamp.IsZero() {
			out = append(out, m)
		}
	}
	return out, nil
}
