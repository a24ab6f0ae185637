// Package access computes, as pure functions, the RBAC that a customer's active
// memberships grant. The access controller feeds it what it reads from the cache
// (memberships, projects, messages) and applies the result; keeping the rules here
// makes "who may do what" readable in one place and testable without a cluster.
//
// Per customer <c> (every object labelled customers.partnerops.io/customer=<c> and
// app.kubernetes.io/managed-by=customer-operator):
//
//	ClusterRole        customer-operator:<c>:member          get customers/<c>, customerquotas/<c>, customermessages/<each message of c>, namespaces/<each project of c>
//	ClusterRoleBinding customer-operator:<c>:member          → that ClusterRole, every active member; annotation customers.partnerops.io/granted-roles records each one's role
//	ClusterRoleBinding customer-operator:<c>:acknowledge     → customer-operator-acknowledge (create messageacknowledgements), every active member
//	ClusterRole        customer-operator:<c>:memberships     get customermemberships/<each membership of c>
//	ClusterRoleBinding customer-operator:<c>:memberships     → that ClusterRole, Admins
//	ClusterRoleBinding customer-operator:<c>:customer-admin  → customer-operator-customer-admin (create namespaces; create/update/patch/delete customermemberships), Admins
//
// and in each project namespace of <c>:
//
//	RoleBinding customer-operator:<c>:admin|edit|view  → ClusterRole admin|edit|view, the members of that role
//	RoleBinding customer-operator:<c>:project-admin    → customer-operator-project-admin (get, delete this namespace), Admins
//
// Rights that cannot be narrowed by name (create, and the writes that admission
// confines to the requester's own customer) live in the static ClusterRoles shipped
// in config/rbac/access_roles.yaml, which the operator may bind but does not hold.
// Rights that can be narrowed by name live in the per-customer ClusterRoles, whose
// rules the operator holds itself (get), so it needs no escalate.
package access

import (
	"encoding/json"
	"sort"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/members"
)

// Labels on every object this package describes.
const (
	// ManagedByLabel and ManagedByValue mark objects the operator made; the manager
	// caches RBAC objects by this label only.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "customer-operator"
)

// The static ClusterRoles of config/rbac/access_roles.yaml. Their names are part of
// the contract with config/: the operator's bind rights name them.
const (
	// AcknowledgeClusterRole: create messageacknowledgements (admission checks that
	// spec.user is the requester and that they are a recipient).
	AcknowledgeClusterRole = "customer-operator-acknowledge"
	// CustomerAdminClusterRole: create namespaces and create/update/patch/delete
	// customermemberships, cluster-wide; admission confines both to the requester's
	// own customers.
	CustomerAdminClusterRole = "customer-operator-customer-admin"
	// ProjectAdminClusterRole: get and delete namespaces; bound by a RoleBinding in a
	// project, it applies to that namespace only.
	ProjectAdminClusterRole = "customer-operator-project-admin"
)

// Member is one person's grant within a customer.
type Member struct {
	Username string
	Role     v1alpha1.Role
}

// Input is everything the access of one customer depends on.
type Input struct {
	// Customer is the customer's identifier.
	Customer string
	// Members are the active members (see ActiveMembers).
	Members []Member
	// Projects are the names of the customer's live project namespaces.
	Projects []string
	// Messages are the names of the customer's CustomerMessages.
	Messages []string
	// Memberships are the names of the customer's CustomerMemberships.
	Memberships []string
}

// Objects is the desired RBAC of one customer.
type Objects struct {
	ClusterRoles        []*rbacv1.ClusterRole
	ClusterRoleBindings []*rbacv1.ClusterRoleBinding
	RoleBindings        []*rbacv1.RoleBinding
}

// Name is the name of a per-customer object: "customer-operator:<customer>:<suffix>".
// RBAC names may contain ':' (like system:controller:…), and the customer in the
// name keeps two customers' bindings apart even while a project moves between them.
func Name(customer, suffix string) string {
	return "customer-operator:" + customer + ":" + suffix
}

// Labels returns the labels of every object made for customer.
func Labels(customer string) map[string]string {
	return map[string]string{v1alpha1.CustomerLabel: customer, ManagedByLabel: ManagedByValue}
}

// MemberBindingName is the ClusterRoleBinding that lists every active member of a
// customer. The controller writes it last, so a membership whose user it lists has
// had the rest of its access applied too.
func MemberBindingName(customer string) string { return Name(customer, "member") }

// RolesAnnotation, on a customer's member ClusterRoleBinding, records the role that
// the access pass which wrote the binding granted each of its subjects: a JSON
// object from role to usernames ({"Admin":["eve@example.com"],"Viewer":["ann@example.com"]};
// one username under two roles when two memberships give it both). The binding
// lists every member whatever the role, so its subjects alone cannot tell a
// membership whose role just changed that the project bindings follow; this record
// can. The access controller moves it on only in a pass whose project bindings,
// roles, pruning and earlier ClusterRoleBindings all succeeded; after a failure it
// keeps of the previous record only what the pass still wants, so a recorded role
// is one whose grants are in place. A record longer than MaxRolesRecord is not
// written: memberships then read the subjects alone.
const RolesAnnotation = v1alpha1.GroupName + "/granted-roles"

// MaxRolesRecord bounds RolesAnnotation's value, well within the 256 KiB that all
// of an object's annotations may take together: some 8,000 members with
// 30-character usernames. A customer with more keeps working without the record.
const MaxRolesRecord = 192 << 10

// RolesRecord encodes members as RolesAnnotation's value. It is deterministic (keys
// and usernames sorted), so equal records compare equal as strings.
func RolesRecord(members []Member) string {
	byRole := map[v1alpha1.Role][]string{}
	for _, m := range members {
		byRole[m.Role] = append(byRole[m.Role], m.Username)
	}
	for _, users := range byRole {
		sort.Strings(users)
	}
	out, _ := json.Marshal(byRole) // a map of string slices always encodes
	return string(out)
}

// ParseRolesRecord decodes RolesAnnotation's value into the members it records,
// sorted by username, then role.
func ParseRolesRecord(value string) ([]Member, error) {
	var record map[v1alpha1.Role][]string
	if err := json.Unmarshal([]byte(value), &record); err != nil {
		return nil, err
	}
	var out []Member
	for role, users := range record {
		for _, user := range users {
			out = append(out, Member{Username: user, Role: role})
		}
	}
	sortMembers(out)
	return out, nil
}

// CustomerAdminBindingName is the ClusterRoleBinding of a customer's Admins to
// CustomerAdminClusterRole.
func CustomerAdminBindingName(customer string) string { return Name(customer, "customer-admin") }

// Desired computes the RBAC objects of one customer. With no active members it
// returns nothing: every object of the customer is then to be deleted. The result
// is deterministic (sorted subjects, names and rules), so that comparing it with
// what exists tells whether a write is needed.
func Desired(in Input) Objects {
	var out Objects
	if len(in.Members) == 0 {
		return out
	}
	everyone := subjects(in.Members, func(Member) bool { return true })
	admins := subjects(in.Members, func(m Member) bool { return m.Role == v1alpha1.RoleAdmin })
	labels := Labels(in.Customer)

	for _, ns := range sorted(in.Projects) {
		for _, role := range v1alpha1.Roles {
			holders := subjects(in.Members, func(m Member) bool { return m.Role == role })
			if len(holders) == 0 {
				continue
			}
			out.RoleBindings = append(out.RoleBindings,
				roleBinding(ns, Name(in.Customer, role.ClusterRoleName()), role.ClusterRoleName(), holders, labels))
		}
		if len(admins) > 0 {
			out.RoleBindings = append(out.RoleBindings,
				roleBinding(ns, Name(in.Customer, "project-admin"), ProjectAdminClusterRole, admins, labels))
		}
	}

	memberRules := []rbacv1.PolicyRule{
		getByName("customers", in.Customer),
		getByName("customerquotas", in.Customer),
	}
	if messages := sorted(in.Messages); len(messages) > 0 {
		// Never a rule with empty resourceNames: that would mean every message.
		memberRules = append(memberRules, getByName("customermessages", messages...))
	}
	if projects := sorted(in.Projects); len(projects) > 0 {
		// The same right every member has through the project's admin/edit/view
		// binding, granted again by name at the cluster: a rules review then lists
		// the customer's projects, which members (who may not list namespaces)
		// could not find otherwise (kubectl customer status).
		memberRules = append(memberRules, rbacv1.PolicyRule{
			APIGroups: []string{""}, Resources: []string{"namespaces"}, ResourceNames: projects, Verbs: []string{"get"},
		})
	}
	out.ClusterRoles = append(out.ClusterRoles, clusterRole(Name(in.Customer, "member"), memberRules, labels))
	out.ClusterRoleBindings = append(out.ClusterRoleBindings,
		clusterRoleBinding(Name(in.Customer, "acknowledge"), AcknowledgeClusterRole, everyone, labels))

	if len(admins) > 0 {
		if names := sorted(in.Memberships); len(names) > 0 {
			// Get by name only: an Admin of one customer must not read another's
			// members, and RBAC cannot filter a list.
			out.ClusterRoles = append(out.ClusterRoles,
				clusterRole(Name(in.Customer, "memberships"), []rbacv1.PolicyRule{getByName("customermemberships", names...)}, labels))
			out.ClusterRoleBindings = append(out.ClusterRoleBindings,
				clusterRoleBinding(Name(in.Customer, "memberships"), Name(in.Customer, "memberships"), admins, labels))
		}
		out.ClusterRoleBindings = append(out.ClusterRoleBindings,
			clusterRoleBinding(CustomerAdminBindingName(in.Customer), CustomerAdminClusterRole, admins, labels))
	}

	// Last on purpose: see MemberBindingName.
	member := clusterRoleBinding(MemberBindingName(in.Customer), Name(in.Customer, "member"), everyone, labels)
	if record := RolesRecord(in.Members); len(record) <= MaxRolesRecord {
		member.Annotations = map[string]string{RolesAnnotation: record}
	}
	out.ClusterRoleBindings = append(out.ClusterRoleBindings, member)
	return out
}

// ActiveMembers returns the members that memberships grant access to: the oldest
// membership per e-mail (a duplicate that raced past admission grants nothing),
// accepted or invitation None, not being deleted. The caller checks that the
// customer exists. The result is sorted by username, then role.
func ActiveMembers(memberships []v1alpha1.CustomerMembership, usernamePrefix string) []Member {
	winners := Winners(memberships)
	seen := map[Member]bool{}
	var out []Member
	for i := range memberships {
		m := &memberships[i]
		if winners[EmailKey(m)] != m.Name || !members.IsActive(m) {
			continue
		}
		member := Member{Username: members.Username(m, usernamePrefix), Role: m.Spec.Role}
		if !seen[member] {
			seen[member] = true
			out = append(out, member)
		}
	}
	sortMembers(out)
	return out
}

func sortMembers(out []Member) {
	sort.Slice(out, func(i, j int) bool {
		if out[i].Username != out[j].Username {
			return out[i].Username < out[j].Username
		}
		return out[i].Role < out[j].Role
	})
}

// EmailKey is what makes two memberships duplicates: the customer and the e-mail,
// compared case-insensitively.
func EmailKey(m *v1alpha1.CustomerMembership) string {
	return string(m.Spec.Customer) + "/" + strings.ToLower(m.Spec.Email)
}

// Winners maps each EmailKey to the name of the membership that holds it: the
// oldest by creationTimestamp, then by name. Memberships being deleted hold nothing,
// so a duplicate takes over once the original is deleted.
func Winners(memberships []v1alpha1.CustomerMembership) map[string]string {
	best := map[string]*v1alpha1.CustomerMembership{}
	for i := range memberships {
		m := &memberships[i]
		if !m.DeletionTimestamp.IsZero() {
			continue
		}
		key := EmailKey(m)
		if cur, ok := best[key]; !ok || Older(m, cur) {
			best[key] = m
		}
	}
	out := make(map[string]string, len(best))
	for k, m := range best {
		out[k] = m.Name
	}
	return out
}

// Older reports whether a was created before b (by name when created in the same
// second, the API's timestamp resolution), so that every reader agrees on one order.
func Older(a, b *v1alpha1.CustomerMembership) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

func subjects(ms []Member, keep func(Member) bool) []rbacv1.Subject {
	seen := map[string]bool{}
	var out []rbacv1.Subject
	for _, m := range ms {
		if !keep(m) || seen[m.Username] {
			continue
		}
		seen[m.Username] = true
		out = append(out, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: m.Username})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func getByName(resource string, names ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{
		APIGroups:     []string{v1alpha1.GroupName},
		Resources:     []string{resource},
		ResourceNames: names,
		Verbs:         []string{"get"},
	}
}

func sorted(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}

func clusterRole(name string, rules []rbacv1.PolicyRule, labels map[string]string) *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: copyLabels(labels)},
		Rules:      rules,
	}
}

func clusterRoleBinding(name, role string, subjects []rbacv1.Subject, labels map[string]string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: copyLabels(labels)},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   subjects,
	}
}

func roleBinding(namespace, name, role string, subjects []rbacv1.Subject, labels map[string]string) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: copyLabels(labels)},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   subjects,
	}
}

func copyLabels(in map[string]string) map[string]string {
	out := make(map[string]string, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}
