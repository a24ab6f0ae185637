package access

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func membership(name, email string, role v1alpha1.Role, created time.Time, mutate ...func(*v1alpha1.CustomerMembership)) v1alpha1.CustomerMembership {
	m := v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)},
		Spec:       v1alpha1.CustomerMembershipSpec{Customer: "acme", Email: email, Role: role},
	}
	for _, f := range mutate {
		f(&m)
	}
	return m
}

func accepted(m *v1alpha1.CustomerMembership) {
	m.Status.AcceptedTime = &metav1.Time{Time: t0}
}

func none(m *v1alpha1.CustomerMembership) { m.Spec.Invitation = v1alpha1.InvitationNone }

func TestActiveMembers(t *testing.T) {
	tests := []struct {
		name        string
		memberships []v1alpha1.CustomerMembership
		prefix      string
		want        []Member
	}{{
		name: "a pending invitation grants nothing",
		memberships: []v1alpha1.CustomerMembership{
			membership("a", "alice@example.com", v1alpha1.RoleAdmin, t0),
		},
	}, {
		name: "accepted and None are active, with the username prefix",
		memberships: []v1alpha1.CustomerMembership{
			membership("b", "bob@example.com", v1alpha1.RoleViewer, t0, accepted),
			membership("a", "Alice@Example.com", v1alpha1.RoleAdmin, t0, none),
		},
		prefix: "oidc:",
		want: []Member{
			{Username: "oidc:alice@example.com", Role: v1alpha1.RoleAdmin},
			{Username: "oidc:bob@example.com", Role: v1alpha1.RoleViewer},
		},
	}, {
		name: "the older of two memberships for one e-mail wins, whatever the case",
		memberships: []v1alpha1.CustomerMembership{
			membership("newer", "BOB@example.com", v1alpha1.RoleAdmin, t0.Add(time.Second), none),
			membership("older", "bob@example.com", v1alpha1.RoleViewer, t0, none),
		},
		want: []Member{{Username: "bob@example.com", Role: v1alpha1.RoleViewer}},
	}, {
		name: "same second: the name decides",
		memberships: []v1alpha1.CustomerMembership{
			membership("b", "bob@example.com", v1alpha1.RoleAdmin, t0, none),
			membership("a", "bob@example.com", v1alpha1.RoleViewer, t0, none),
		},
		want: []Member{{Username: "bob@example.com", Role: v1alpha1.RoleViewer}},
	}, {
		name: "a winner being deleted hands over to the duplicate",
		memberships: []v1alpha1.CustomerMembership{
			membership("older", "bob@example.com", v1alpha1.RoleViewer, t0, none, func(m *v1alpha1.CustomerMembership) {
				m.DeletionTimestamp = &metav1.Time{Time: t0}
			}),
			membership("newer", "bob@example.com", v1alpha1.RoleEditor, t0.Add(time.Second), none),
		},
		want: []Member{{Username: "bob@example.com", Role: v1alpha1.RoleEditor}},
	}, {
		name: "a membership marked Duplicate grants nothing",
		memberships: []v1alpha1.CustomerMembership{
			membership("a", "alice@example.com", v1alpha1.RoleAdmin, t0, none, func(m *v1alpha1.CustomerMembership) {
				m.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ReadyCondition, Status: metav1.ConditionFalse, Reason: v1alpha1.DuplicateReason}}
			}),
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(ActiveMembers(tt.memberships, tt.prefix)).To(Equal(tt.want))
		})
	}
}

func user(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}
}

func TestDesired(t *testing.T) {
	g := NewWithT(t)

	g.Expect(Desired(Input{Customer: "acme", Projects: []string{"web"}})).To(Equal(Objects{}),
		"no active members: nothing is granted, so everything of the customer is pruned")

	got := Desired(Input{
		Customer: "acme",
		Members: []Member{
			{Username: "alice", Role: v1alpha1.RoleAdmin},
			{Username: "bob", Role: v1alpha1.RoleViewer},
			{Username: "carol", Role: v1alpha1.RoleViewer},
		},
		Projects:    []string{"web", "api"},
		Memberships: []string{"acme-bob", "acme-alice"},
	})

	var rbs []string
	for _, rb := range got.RoleBindings {
		rbs = append(rbs, rb.Namespace+"/"+rb.Name+"→"+rb.RoleRef.Name)
		g.Expect(rb.Labels).To(Equal(Labels("acme")))
	}
	g.Expect(rbs).To(Equal([]string{
		"api/customer-operator:acme:admin→admin",
		"api/customer-operator:acme:view→view",
		"api/customer-operator:acme:project-admin→customer-operator-project-admin",
		"web/customer-operator:acme:admin→admin",
		"web/customer-operator:acme:view→view",
		"web/customer-operator:acme:project-admin→customer-operator-project-admin",
	}), "one binding per project and role with members, none for Editor")
	g.Expect(got.RoleBindings[1].Subjects).To(Equal([]rbacv1.Subject{user("bob"), user("carol")}))

	g.Expect(got.ClusterRoles).To(HaveLen(2))
	member := got.ClusterRoles[0]
	g.Expect(member.Name).To(Equal("customer-operator:acme:member"))
	g.Expect(member.Rules).To(HaveLen(3), "no messages: no customermessages rule (empty resourceNames would mean all)")
	for _, rule := range member.Rules[:2] {
		g.Expect(rule.ResourceNames).To(Equal([]string{"acme"}))
		g.Expect(rule.Verbs).To(Equal([]string{"get"}))
	}
	g.Expect(member.Rules[2]).To(Equal(rbacv1.PolicyRule{
		APIGroups: []string{""}, Resources: []string{"namespaces"}, ResourceNames: []string{"api", "web"}, Verbs: []string{"get"},
	}), "the projects by name, so that a rules review lists them")
	g.Expect(got.ClusterRoles[1].Name).To(Equal("customer-operator:acme:memberships"))
	g.Expect(got.ClusterRoles[1].Rules[0].ResourceNames).To(Equal([]string{"acme-alice", "acme-bob"}))

	var crbs []string
	for _, crb := range got.ClusterRoleBindings {
		var names []string
		for _, s := range crb.Subjects {
			names = append(names, s.Name)
		}
		crbs = append(crbs, crb.Name+"→"+crb.RoleRef.Name+" "+strings.Join(names, ","))
	}
	g.Expect(crbs).To(Equal([]string{
		"customer-operator:acme:acknowledge→customer-operator-acknowledge alice,bob,carol",
		"customer-operator:acme:memberships→customer-operator:acme:memberships alice",
		"customer-operator:acme:customer-admin→customer-operator-customer-admin alice",
		"customer-operator:acme:member→customer-operator:acme:member alice,bob,carol",
	}), "the member binding comes last: memberships read 'access granted' from it")
	g.Expect(got.ClusterRoleBindings[3].Annotations).To(Equal(map[string]string{
		RolesAnnotation: `{"Admin":["alice"],"Viewer":["bob","carol"]}`,
	}), "the member binding records each member's role; no other binding does")
	for _, crb := range got.ClusterRoleBindings[:3] {
		g.Expect(crb.Annotations).To(BeEmpty())
	}
}

func TestRolesRecord(t *testing.T) {
	g := NewWithT(t)
	members := []Member{
		{Username: "zoe@example.com", Role: v1alpha1.RoleViewer},
		{Username: "ann@example.com", Role: v1alpha1.RoleEditor},
		// Two memberships (two e-mail addresses) that name one username.
		{Username: "ops", Role: v1alpha1.RoleViewer},
		{Username: "ops", Role: v1alpha1.RoleAdmin},
	}
	record := RolesRecord(members)
	g.Expect(record).To(Equal(`{"Admin":["ops"],"Editor":["ann@example.com"],"Viewer":["ops","zoe@example.com"]}`),
		"sorted, so that an unchanged record compares equal as a string")
	reversed := slices.Clone(members)
	slices.Reverse(reversed)
	g.Expect(RolesRecord(reversed)).To(Equal(record))
	parsed, err := ParseRolesRecord(record)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(parsed).To(Equal([]Member{
		{Username: "ann@example.com", Role: v1alpha1.RoleEditor},
		{Username: "ops", Role: v1alpha1.RoleAdmin},
		{Username: "ops", Role: v1alpha1.RoleViewer},
		{Username: "zoe@example.com", Role: v1alpha1.RoleViewer},
	}))
	g.Expect(RolesRecord(nil)).To(Equal(`{}`))
	_, err = ParseRolesRecord("")
	g.Expect(err).To(HaveOccurred(), "no record is not an empty one")
}

func TestDesiredLeavesOutARecordTooLong(t *testing.T) {
	g := NewWithT(t)
	var members []Member
	for len(RolesRecord(members)) <= MaxRolesRecord {
		for range 500 {
			members = append(members, Member{Username: fmt.Sprintf("member-%06d@example.com", len(members)), Role: v1alpha1.RoleViewer})
		}
	}
	got := Desired(Input{Customer: "acme", Members: members})
	member := got.ClusterRoleBindings[len(got.ClusterRoleBindings)-1]
	g.Expect(member.Name).To(Equal("customer-operator:acme:member"))
	g.Expect(member.Subjects).To(HaveLen(len(members)))
	g.Expect(member.Annotations).NotTo(HaveKey(RolesAnnotation),
		"%d members: the binding must still be written, so the record that would not fit is left out", len(members))
	g.Expect(len(members)).To(BeNumerically(">", 7000), "the bound is not below what docs/access.md promises")
}

func TestDesiredMessagesAndNoAdmins(t *testing.T) {
	g := NewWithT(t)
	got := Desired(Input{
		Customer:    "acme",
		Members:     []Member{{Username: "bob", Role: v1alpha1.RoleEditor}},
		Messages:    []string{"outage", "maintenance"},
		Memberships: []string{"acme-bob"},
	})
	g.Expect(got.RoleBindings).To(BeEmpty(), "no projects")
	g.Expect(got.ClusterRoles).To(HaveLen(1), "no Admins: no memberships role")
	g.Expect(got.ClusterRoles[0].Rules).To(HaveLen(3), "no projects: no namespaces rule (empty resourceNames would mean all)")
	g.Expect(got.ClusterRoles[0].Rules[2]).To(Equal(rbacv1.PolicyRule{
		APIGroups: []string{v1alpha1.GroupName}, Resources: []string{"customermessages"},
		ResourceNames: []string{"maintenance", "outage"}, Verbs: []string{"get"},
	}))
	var names []string
	for _, crb := range got.ClusterRoleBindings {
		names = append(names, crb.Name)
	}
	g.Expect(names).To(Equal([]string{"customer-operator:acme:acknowledge", "customer-operator:acme:member"}))
}
