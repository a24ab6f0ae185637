package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/access"
)

// builderIndexer registers SetupIndexes' indexes with a fake client builder.
type builderIndexer struct{ b *fake.ClientBuilder }

func (i builderIndexer) IndexField(_ context.Context, obj client.Object, field string, fn client.IndexerFunc) error {
	i.b.WithIndex(obj, field, fn)
	return nil
}

func accessMember(name, email string, role v1alpha1.Role) *v1alpha1.CustomerMembership {
	return &v1alpha1.CustomerMembership{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.CustomerMembershipSpec{
			Customer: "acme", Email: email, Role: role, Invitation: v1alpha1.InvitationNone,
		},
	}
}

// refuseApplies makes the fake client refuse the server-side applies of the
// objects refuse picks by kind and metadata, as an API server refusing a write.
func refuseApplies(builder *fake.ClientBuilder, refuse func(kind string, meta metav1.ObjectMeta) bool) {
	builder.WithInterceptorFuncs(interceptor.Funcs{
		Apply: func(ctx context.Context, c client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			raw, err := json.Marshal(obj)
			if err != nil {
				return err
			}
			var head struct {
				Kind     string            `json:"kind"`
				Metadata metav1.ObjectMeta `json:"metadata"`
			}
			if err := json.Unmarshal(raw, &head); err != nil {
				return err
			}
			if refuse(head.Kind, head.Metadata) {
				return errors.New("injected: the API server refused the write")
			}
			return c.Apply(ctx, obj, opts...)
		},
	})
}

// When a project's RoleBinding cannot be written, the access controller still
// writes the others, removes from the ClusterRoleBindings whoever left, adds nobody
// to them (the member binding is what "access granted" is read from), and prunes.
// The envtest cannot make one RBAC write fail on demand; the fake client can.
func TestAccessFailedProjectBindingStillRemovesAndAddsNothing(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()

	project := func(name string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.CustomerLabel: "acme"}}}
	}
	eve := accessMember("acme-eve", "eve@example.com", v1alpha1.RoleAdmin)
	bob := accessMember("acme-bob", "bob@example.com", v1alpha1.RoleViewer)
	builder := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithObjects(
		&v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: "acme"}},
		project("acme-web"), project("acme-api"), eve, bob)
	g.Expect(SetupIndexes(ctx, builderIndexer{builder})).To(Succeed())
	failIn := ""
	refuseApplies(builder, func(kind string, meta metav1.ObjectMeta) bool {
		return kind == "RoleBinding" && meta.Namespace == failIn
	})
	c := builder.Build()
	r := &AccessReconciler{Client: c, APIReader: c}
	reconcileAcme := func() error {
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: "acme"}})
		return err
	}
	subjectsOf := func(name string) []string {
		var crb rbacv1.ClusterRoleBinding
		g.Expect(c.Get(ctx, types.NamespacedName{Name: name}, &crb)).To(Succeed())
		var names []string
		for _, s := range crb.Subjects {
			names = append(names, s.Name)
		}
		return names
	}
	projectSubjects := func(namespace, name string) []string {
		var rb rbacv1.RoleBinding
		g.Expect(c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &rb)).To(Succeed())
		var names []string
		for _, s := range rb.Subjects {
			names = append(names, s.Name)
		}
		return names
	}

	g.Expect(reconcileAcme()).To(Succeed())
	g.Expect(subjectsOf("customer-operator:acme:member")).To(ConsistOf("bob@example.com", "eve@example.com"))
	g.Expect(subjectsOf("customer-operator:acme:customer-admin")).To(ConsistOf("eve@example.com"))

	// Eve leaves, carol arrives as an Admin, and acme-web's bindings cannot be written.
	g.Expect(c.Delete(ctx, eve)).To(Succeed())
	g.Expect(c.Create(ctx, accessMember("acme-carol", "carol@example.com", v1alpha1.RoleAdmin))).To(Succeed())
	failIn = "acme-web"
	err := reconcileAcme()
	g.Expect(err).To(MatchError(ContainSubstring("injected")))
	g.Expect(err).To(MatchError(ContainSubstring("RoleBinding acme-web/customer-operator:acme:admin")))

	g.Expect(projectSubjects("acme-api", "customer-operator:acme:admin")).To(ConsistOf("carol@example.com"),
		"the other project's binding is written")
	g.Expect(projectSubjects("acme-web", "customer-operator:acme:admin")).To(ConsistOf("eve@example.com"),
		"the refused one is left as it was")
	g.Expect(subjectsOf("customer-operator:acme:member")).To(ConsistOf("bob@example.com"),
		"eve is removed; carol is not added while a project binding is missing")
	var admins rbacv1.ClusterRoleBinding
	err = c.Get(ctx, types.NamespacedName{Name: "customer-operator:acme:customer-admin"}, &admins)
	g.Expect(err == nil && len(admins.Subjects) > 0).To(BeFalse(), "no Admin is bound until carol can be: %v", admins.Subjects)

	// Once the write goes through, carol gets everything.
	failIn = ""
	g.Expect(reconcileAcme()).To(Succeed())
	g.Expect(projectSubjects("acme-web", "customer-operator:acme:admin")).To(ConsistOf("carol@example.com"))
	g.Expect(subjectsOf("customer-operator:acme:member")).To(ConsistOf("bob@example.com", "carol@example.com"))
	g.Expect(subjectsOf("customer-operator:acme:customer-admin")).To(ConsistOf("carol@example.com"))
}

// A role change moves the member binding's roles record only in a pass that wrote
// the new role's project bindings and removed the old role's: a membership reads
// "access granted" from that record. Whoever leaves leaves the record at once.
func TestAccessRolesRecordMovesOnlyWithTheProjectBindings(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()

	bob := accessMember("acme-bob", "bob@example.com", v1alpha1.RoleEditor)
	eve := accessMember("acme-eve", "eve@example.com", v1alpha1.RoleAdmin)
	builder := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithObjects(
		&v1alpha1.Customer{ObjectMeta: metav1.ObjectMeta{Name: "acme"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "acme-web", Labels: map[string]string{v1alpha1.CustomerLabel: "acme"}}},
		bob, eve)
	g.Expect(SetupIndexes(ctx, builderIndexer{builder})).To(Succeed())
	failName := ""
	refuseApplies(builder, func(_ string, meta metav1.ObjectMeta) bool { return meta.Name == failName })
	c := builder.Build()
	r := &AccessReconciler{Client: c, APIReader: c}
	reconcileAcme := func() error {
		_, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: "acme"}})
		return err
	}
	record := func() string {
		var crb rbacv1.ClusterRoleBinding
		g.Expect(c.Get(ctx, types.NamespacedName{Name: "customer-operator:acme:member"}, &crb)).To(Succeed())
		return crb.Annotations[access.RolesAnnotation]
	}
	setRole := func(m *v1alpha1.CustomerMembership, role v1alpha1.Role) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(m), m)).To(Succeed())
		m.Spec.Role = role
		g.Expect(c.Update(ctx, m)).To(Succeed())
	}

	g.Expect(reconcileAcme()).To(Succeed())
	g.Expect(record()).To(Equal(`{"Admin":["eve@example.com"],"Editor":["bob@example.com"]}`))

	// bob becomes a Viewer and eve leaves, while acme-web's view binding cannot be written.
	setRole(bob, v1alpha1.RoleViewer)
	g.Expect(c.Delete(ctx, eve)).To(Succeed())
	failName = "customer-operator:acme:view"
	g.Expect(reconcileAcme()).To(MatchError(ContainSubstring("injected")))
	g.Expect(record()).To(Equal(`{}`),
		"bob's membership must not read Viewer access as granted, nor Editor (pruned below); eve is gone from it")
	var edit rbacv1.RoleBinding
	err := c.Get(ctx, types.NamespacedName{Namespace: "acme-web", Name: "customer-operator:acme:edit"}, &edit)
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the edit binding, with no Editor left, is pruned all the same: %v", err)

	// bob is made an Editor again while the edit binding cannot be made anew: the
	// record must not give back the Editor it held before the pruning.
	setRole(bob, v1alpha1.RoleEditor)
	failName = "customer-operator:acme:edit"
	g.Expect(reconcileAcme()).To(MatchError(ContainSubstring("injected")))
	g.Expect(record()).To(Equal(`{}`))

	// Viewer again, and the next pass writes the view binding and moves the record.
	setRole(bob, v1alpha1.RoleViewer)
	failName = ""
	g.Expect(reconcileAcme()).To(Succeed())
	g.Expect(record()).To(Equal(`{"Viewer":["bob@example.com"]}`))
	var view rbacv1.RoleBinding
	g.Expect(c.Get(ctx, types.NamespacedName{Namespace: "acme-web", Name: "customer-operator:acme:view"}, &view)).To(Succeed())
	g.Expect(view.Subjects).To(HaveLen(1))

	// bob becomes an Admin while the customer-admin binding cannot be written: the
	// member binding, written after it, records no Admin (nor the pruned Viewer).
	setRole(bob, v1alpha1.RoleAdmin)
	failName = "customer-operator:acme:customer-admin"
	g.Expect(reconcileAcme()).To(MatchError(ContainSubstring("customer-admin")))
	g.Expect(record()).To(Equal(`{}`))
	failName = ""
	g.Expect(reconcileAcme()).To(Succeed())
	g.Expect(record()).To(Equal(`{"Admin":["bob@example.com"]}`))

	// A record edited by hand is put back.
	var member rbacv1.ClusterRoleBinding
	g.Expect(c.Get(ctx, types.NamespacedName{Name: "customer-operator:acme:member"}, &member)).To(Succeed())
	member.Annotations[access.RolesAnnotation] = `{"Editor":["bob@example.com"]}`
	g.Expect(c.Update(ctx, &member)).To(Succeed())
	g.Expect(reconcileAcme()).To(Succeed())
	g.Expect(record()).To(Equal(`{"Admin":["bob@example.com"]}`))
}
