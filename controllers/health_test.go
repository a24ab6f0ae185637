package controllers_test

import (
	"fmt"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	lua "github.com/yuin/gopher-lua"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// The health the GitOps tools read: Argo CD runs config/argocd's Lua script, Flux
// runs kstatus. Both are run here on objects the real controllers reconciled, read
// back from the API server, so a change to the conditions the controllers write
// cannot silently break either tool.

// argoKinds are the kinds config/argocd/argocd-cm.yaml must have a health check for.
var argoKinds = []string{"Customer", "CustomerMembership", "CustomerMessage", "CustomerQuota", "MessageAcknowledgement"}

// argoHealth is what an Argo CD health script returns.
type argoHealth struct{ Status, Message string }

// runHealthScript runs an Argo CD health script the way Argo CD does: the object,
// as decoded from JSON, in the global obj; the script returns {status, message}.
func runHealthScript(script string, obj map[string]any) (argoHealth, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	// The libraries Argo CD opens for health scripts.
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(script); err != nil {
		return argoHealth{}, err
	}
	table, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return argoHealth{}, fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	return argoHealth{
		Status:  lua.LVAsString(table.RawGetString("status")),
		Message: lua.LVAsString(table.RawGetString("message")),
	}, nil
}

// toLua converts decoded JSON to Lua values as Argo CD does (numbers are floats,
// arrays 1-based tables).
func toLua(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []any:
		t := L.NewTable()
		for _, item := range v {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]any:
		t := L.NewTable()
		for key, item := range v {
			t.RawSetString(key, toLua(L, item))
		}
		return t
	default:
		panic(fmt.Sprintf("unexpected JSON value %T", v))
	}
}

// healthScripts reads config/argocd: the script and each kind's copy in argocd-cm.
func healthScripts() (script string, perKind map[string]string) {
	GinkgoHelper()
	dir := filepath.Join(env.Root, "config", "argocd")
	data, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	Expect(err).NotTo(HaveOccurred())
	cmData, err := os.ReadFile(filepath.Join(dir, "argocd-cm.yaml"))
	Expect(err).NotTo(HaveOccurred())
	var cm corev1.ConfigMap
	Expect(yaml.Unmarshal(cmData, &cm)).To(Succeed())
	perKind = map[string]string{}
	for _, kind := range argoKinds {
		perKind[kind] = cm.Data["resource.customizations.health."+v1alpha1.GroupName+"_"+kind]
	}
	return string(data), perKind
}

// argoHealthOf runs the kind's script from argocd-cm on obj.
func argoHealthOf(obj client.Object) argoHealth {
	GinkgoHelper()
	_, perKind := healthScripts()
	kind := kindOf(obj)
	Expect(perKind).To(HaveKey(kind))
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	Expect(err).NotTo(HaveOccurred())
	h, err := runHealthScript(perKind[kind], u)
	Expect(err).NotTo(HaveOccurred())
	return h
}

func kindOf(obj client.Object) string {
	GinkgoHelper()
	gvks, _, err := env.Admin.Scheme().ObjectKinds(obj)
	Expect(err).NotTo(HaveOccurred())
	return gvks[0].Kind
}

// createAsJSON creates obj as a GitOps tool does, untyped, and returns the API
// server's answer as such: a typed object would drop status.observedGeneration 0
// (omitempty) that the CRD's default puts there and that tools read.
func createAsJSON(c client.Client, obj client.Object) *unstructured.Unstructured {
	GinkgoHelper()
	kind := kindOf(obj)
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	Expect(err).NotTo(HaveOccurred())
	u := &unstructured.Unstructured{Object: content}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(kind))
	Expect(c.Create(ctx, u)).To(Succeed())
	Expect(u.Object).To(HaveKeyWithValue("status", HaveKeyWithValue("observedGeneration", BeNumerically("==", 0))),
		"the CRD defaults status.observedGeneration, so a new object reads as not reconciled")
	return u
}

// healthRead reads obj fresh through the uncached admin client.
func healthRead(g Gomega, obj client.Object) {
	g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(obj), obj)).To(Succeed())
}

type conditioned interface {
	client.Object
	GetConditions() []metav1.Condition
}

// expectHealthy waits until Argo CD reads obj as Healthy and kstatus as Current,
// and checks the message is the Ready condition's.
func expectHealthy(obj conditioned) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		healthRead(g, obj)
		h := argoHealthOf(obj)
		g.Expect(h.Status).To(Equal("Healthy"), "%s %s: %s", kindOf(obj), obj.GetName(), h.Message)
		g.Expect(readyCondition(obj)).NotTo(BeNil())
		g.Expect(h.Message).To(Equal(readyCondition(obj).Message))
		g.Expect(kstatusOf(obj)).To(Equal(status.CurrentStatus))
	}).Should(Succeed())
}

// expectProgressing checks, without waiting, that obj as it is now reads as
// Progressing and InProgress: obj is what a Create or Update returned, before the
// operator saw it.
func expectProgressing(obj client.Object) {
	GinkgoHelper()
	h := argoHealthOf(obj)
	Expect(h.Status).To(Equal("Progressing"), "%s %s: %s", kindOf(obj), obj.GetName(), h.Message)
	Expect(h.Message).NotTo(BeEmpty())
	Expect(kstatusOf(obj)).To(Equal(status.InProgressStatus))
}

// expectDegraded waits until Argo CD reads obj as Degraded and kstatus as Failed,
// with reason in the Ready condition and its message as Argo CD's.
func expectDegraded(obj conditioned, reason string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		healthRead(g, obj)
		h := argoHealthOf(obj)
		g.Expect(h.Status).To(Equal("Degraded"), "%s %s: %s", kindOf(obj), obj.GetName(), h.Message)
		g.Expect(readyCondition(obj)).NotTo(BeNil())
		g.Expect(readyCondition(obj).Reason).To(Equal(reason))
		g.Expect(h.Message).To(Equal(readyCondition(obj).Message))
		g.Expect(kstatusOf(obj)).To(Equal(status.FailedStatus))
	}).Should(Succeed())
}

var _ = Describe("Health for GitOps tools (Argo CD Lua, kstatus)", Ordered, func() {
	It("ships the same Argo CD health script for each of the five kinds", func() {
		script, perKind := healthScripts()
		Expect(perKind).To(HaveLen(len(argoKinds)))
		for kind, s := range perKind {
			Expect(s).To(Equal(script), "argocd-cm's script for %s must be a copy of health.lua", kind)
		}
	})

	It("reads Progressing/InProgress before the operator reconciled, then Healthy/Current, for every kind", func() {
		customer := newCustomer("hc-acme", "Health Co")
		expectProgressing(createAsJSON(admin, customer))
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, newCustomer("hc-acme", "")))).To(Succeed()) })
		expectHealthy(customer)

		quota := &v1alpha1.CustomerQuota{
			ObjectMeta: metav1.ObjectMeta{Name: "hc-acme"},
			Spec:       v1alpha1.CustomerQuotaSpec{Customer: "hc-acme", MaxProjects: ptr.To[int32](3)},
		}
		expectProgressing(createAsJSON(admin, quota))
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, quota))).To(Succeed()) })
		expectHealthy(quota)

		member := msgMember("hc-acme", "hc-ann@example.com", v1alpha1.RoleViewer)
		expectProgressing(createAsJSON(admin, member))
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, member))).To(Succeed()) })
		expectHealthy(member)

		message := msgMessage("hc-notice", "hc-acme", v1alpha1.AllMustRead)
		expectProgressing(createAsJSON(admin, message))
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, message))).To(Succeed()) })
		expectHealthy(message)

		ack := msgAck("hc-notice-ann", "hc-notice", "hc-ann@example.com")
		expectProgressing(createAsJSON(msgUser("hc-ann@example.com"), ack))
		expectHealthy(ack)

		By("a spec change returns the new generation before the operator observed it")
		// A merge patch without a resourceVersion, as kubectl apply sends it: the
		// operator's status writes in between cannot make it conflict.
		var before client.Object
		before = customer.DeepCopyObject().(client.Object)
		customer.Spec.DisplayName = "Health Co, renamed"
		Expect(admin.Patch(ctx, customer, client.MergeFrom(before))).To(Succeed())
		expectProgressing(customer)
		expectHealthy(customer)
		Expect(customer.Status.ObservedGeneration).To(Equal(customer.Generation))

		before = quota.DeepCopyObject().(client.Object)
		quota.Spec.MaxProjects = ptr.To[int32](4)
		Expect(admin.Patch(ctx, quota, client.MergeFrom(before))).To(Succeed())
		expectProgressing(quota)
		expectHealthy(quota)

		before = member.DeepCopyObject().(client.Object)
		member.Spec.Role = v1alpha1.RoleEditor
		Expect(admin.Patch(ctx, member, client.MergeFrom(before))).To(Succeed())
		expectProgressing(member)
		expectHealthy(member)

		before = message.DeepCopyObject().(client.Object)
		message.Spec.Title = "Maintenance moved to Sunday"
		Expect(admin.Patch(ctx, message, client.MergeFrom(before))).To(Succeed())
		expectProgressing(message)
		expectHealthy(message)
	})

	It("reads Degraded/Failed for user objects whose customer is gone, and Healthy again when it is back", func() {
		Expect(admin.Create(ctx, newCustomer("hc-gone", "Gone Co"))).To(Succeed())
		expectHealthy(newCustomer("hc-gone", ""))
		member := msgMember("hc-gone", "hc-bob@example.com", v1alpha1.RoleViewer)
		quota := &v1alpha1.CustomerQuota{
			ObjectMeta: metav1.ObjectMeta{Name: "hc-gone"},
			Spec:       v1alpha1.CustomerQuotaSpec{Customer: "hc-gone", MaxProjects: ptr.To[int32](1)},
		}
		message := msgMessage("hc-gone-notice", "hc-gone", v1alpha1.SingleRead)
		for _, obj := range []client.Object{member, quota, message} {
			Expect(admin.Create(ctx, obj)).To(Succeed())
			DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, obj))).To(Succeed()) })
		}
		expectHealthy(member)
		expectHealthy(quota)
		expectHealthy(message)

		Expect(admin.Delete(ctx, newCustomer("hc-gone", ""))).To(Succeed())
		expectDegraded(member, v1alpha1.CustomerNotFoundReason)
		expectDegraded(quota, v1alpha1.CustomerNotFoundReason)
		expectDegraded(message, v1alpha1.CustomerNotFoundReason)

		Expect(admin.Create(ctx, newCustomer("hc-gone", "Gone Co"))).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(admin.Delete(ctx, newCustomer("hc-gone", "")))).To(Succeed()) })
		expectHealthy(member)
		expectHealthy(quota)
		expectHealthy(message)
	})

	It("reads a terminal reason as Degraded even without Stalled (Argo CD only: kstatus needs Stalled)", func() {
		script, _ := healthScripts()
		Expect(runHealthScript(script, fixture(1, int64(1), []any{
			cond("Ready", "False", "Duplicate", "an older membership covers it", 1),
		}))).To(Equal(argoHealth{"Degraded", "an older membership covers it"}))
	})

	DescribeTable("hand-written objects",
		func(obj map[string]any, want argoHealth) {
			script, _ := healthScripts()
			Expect(runHealthScript(script, obj)).To(Equal(want))
			// kstatus agrees with Argo CD on every state.
			res, err := status.Compute(&unstructured.Unstructured{Object: obj})
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Status).To(Equal(map[string]status.Status{
				"Progressing": status.InProgressStatus, "Healthy": status.CurrentStatus, "Degraded": status.FailedStatus,
			}[want.Status]))
		},
		Entry("no status yet (the CRD's default)", fixture(2, int64(0), nil),
			argoHealth{"Progressing", "Waiting for the operator to reconcile generation 2"}),
		Entry("generation ahead of status", fixture(3, int64(2), []any{cond("Ready", "True", "Reconciled", "ok", 2)}),
			argoHealth{"Progressing", "Waiting for the operator to reconcile generation 3"}),
		Entry("reconciling after a transient error", fixture(2, int64(2), []any{
			cond("Ready", "False", "ReconcileError", "connection refused", 2),
			cond("Reconciling", "True", "ReconcileError", "connection refused", 2),
		}), argoHealth{"Progressing", "connection refused"}),
		Entry("ready", fixture(2, int64(2), []any{cond("Ready", "True", "Reconciled", "customer has 1 project(s)", 2)}),
			argoHealth{"Healthy", "customer has 1 project(s)"}),
		Entry("stalled", fixture(2, int64(2), []any{
			cond("Ready", "False", "MessageNotFound", `CustomerMessage "m" not found`, 2),
			cond("Stalled", "True", "MessageNotFound", `CustomerMessage "m" not found`, 2),
		}), argoHealth{"Degraded", `CustomerMessage "m" not found`}),
		Entry("a stalled acknowledgement of a message that is gone", fixture(1, int64(1), []any{
			cond("Ready", "False", "MessageNotFound", `CustomerMessage "gone" does not exist`, 1),
			cond("Stalled", "True", "MessageNotFound", `CustomerMessage "gone" does not exist`, 1),
		}), argoHealth{"Degraded", `CustomerMessage "gone" does not exist`}),
		Entry("a pending person does not hold health back", fixture(1, int64(1), []any{
			cond("Ready", "True", "Reconciled", "invitation sent", 1),
			cond("Accepted", "False", "AwaitingAcceptance", "waiting for alice", 1),
		}), argoHealth{"Healthy", "invitation sent"}),
	)
})

// fixture is a minimal object as Argo CD would decode it.
func fixture(generation int64, observed any, conditions []any) map[string]any {
	obj := map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(), "kind": "Customer",
		"metadata": map[string]any{"name": "fixture", "generation": generation},
	}
	if observed != nil || conditions != nil {
		st := map[string]any{"conditions": conditions}
		if observed != nil {
			st["observedGeneration"] = observed
		}
		obj["status"] = st
	}
	return obj
}

func cond(conditionType, conditionStatus, reason, message string, generation int64) map[string]any {
	return map[string]any{
		"type": conditionType, "status": conditionStatus, "reason": reason, "message": message,
		"observedGeneration": generation,
	}
}
