package controllers_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// A GitOps tool's view of the operator: config/samples/gitops applied with
// server-side apply by a service account bound to customer-operator-partner,
// in the worst order, converges to Ready; the operator writes nothing a GitOps
// tool owns (spec, labels, annotations), and a re-sync changes nothing and sends
// no mail.

// gitopsUser is the GitOps controller's service account.
const gitopsUser = "system:serviceaccount:flux-system:kustomize-controller"

// gitopsManager is the field manager Flux's kustomize-controller applies with.
const gitopsManager = "kustomize-controller"

// applyAll server-side applies objs as the GitOps tool, and returns those that
// admission refused (to retry, as Flux and Argo CD do).
func applyAll(c client.Client, objs []*unstructured.Unstructured) (refused []*unstructured.Unstructured, errs []string) {
	GinkgoHelper()
	for _, obj := range objs {
		obj := obj.DeepCopy()
		err := c.Patch(ctx, obj, client.Apply, client.FieldOwner(gitopsManager))
		if err != nil {
			Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(),
				"only admission may refuse %s %s: %v", obj.GetKind(), obj.GetName(), err)
			refused = append(refused, obj)
			errs = append(errs, err.Error())
		}
	}
	return refused, errs
}

// operatorWrites returns what the managedFields entries of managers other than the
// GitOps tool own outside status, as "manager: path" strings.
func operatorWrites(obj *unstructured.Unstructured) []string {
	var owned []string
	for _, entry := range obj.GetManagedFields() {
		if entry.Manager == gitopsManager || entry.Subresource == "status" || entry.FieldsV1 == nil {
			continue
		}
		var fields map[string]any
		Expect(json.Unmarshal(entry.FieldsV1.Raw, &fields)).To(Succeed())
		for top, sub := range fields {
			if top == "f:metadata" {
				for key := range sub.(map[string]any) {
					owned = append(owned, fmt.Sprintf("%s: metadata.%s", entry.Manager, strings.TrimPrefix(key, "f:")))
				}
				continue
			}
			owned = append(owned, fmt.Sprintf("%s: %s", entry.Manager, strings.TrimPrefix(top, "f:")))
		}
	}
	return owned
}

var _ = Describe("GitOps (config/samples/gitops)", Ordered, func() {
	var (
		objs   []*unstructured.Unstructured
		gitops client.Client
	)

	BeforeAll(func() {
		bindPartner(gitopsUser)
		gitops = clientAs(gitopsUser)
		// The Argo CD layout holds all three stages (with sync-wave annotations);
		// the Flux layout is the same directories as three Kustomizations.
		objs = renderKustomization("config/samples/gitops/argocd")
		for _, stage := range []string{"customers", "access", "projects"} {
			Expect(renderKustomization("config/samples/gitops/" + stage)).NotTo(BeEmpty())
		}
		DeferCleanup(func() {
			// Projects first: admission refuses to delete a customer that has some.
			for _, obj := range objs {
				if obj.GetKind() == "Namespace" {
					Expect(client.IgnoreNotFound(admin.Delete(ctx, obj.DeepCopy()))).To(Succeed())
				}
			}
			for _, obj := range objs {
				if obj.GetKind() == "Namespace" {
					Eventually(func() bool {
						return apierrors.IsNotFound(admin.Get(ctx, client.ObjectKeyFromObject(obj), &corev1.Namespace{}))
					}, "60s").Should(BeTrue())
				}
			}
			for _, obj := range objs {
				if obj.GetKind() != "Namespace" {
					Expect(client.IgnoreNotFound(admin.Delete(ctx, obj.DeepCopy()))).To(Succeed())
				}
			}
		})
	})

	It("converges to Ready when applied in the worst order, retrying what admission refuses", func() {
		// Namespaces first (as Flux and Argo CD order a single sync), then the
		// custom resources in reverse: customers last.
		var pending []*unstructured.Unstructured
		for _, obj := range objs {
			if obj.GetKind() == "Namespace" {
				pending = append(pending, obj)
			}
		}
		for i := len(objs) - 1; i >= 0; i-- {
			if objs[i].GetKind() != "Namespace" {
				pending = append(pending, objs[i])
			}
		}
		refused, errs := applyAll(gitops, pending)
		Expect(refused).NotTo(BeEmpty(), "the order matters: admission refuses projects of missing customers")
		for _, obj := range refused {
			Expect(obj.GetKind()).To(Equal("Namespace"), "only projects need their customer first")
		}
		Expect(strings.Join(errs, "\n")).To(ContainSubstring("customer"))
		Eventually(func() []string {
			refused, errs = applyAll(gitops, refused)
			return errs
		}).Should(BeEmpty())

		By("every custom resource reads Ready (kubectl wait), Current (Flux) and Healthy (Argo CD)")
		for _, obj := range objs {
			if obj.GroupVersionKind().Group != v1alpha1.GroupName {
				continue
			}
			Eventually(func(g Gomega) {
				live := obj.DeepCopy()
				g.Expect(admin.Get(ctx, client.ObjectKeyFromObject(live), live)).To(Succeed())
				conditions, _, _ := unstructured.NestedSlice(live.Object, "status", "conditions")
				var ready map[string]any
				for _, c := range conditions {
					if c.(map[string]any)["type"] == v1alpha1.ReadyCondition {
						ready = c.(map[string]any)
					}
				}
				g.Expect(ready).To(HaveKeyWithValue("status", "True"), "%s %s", live.GetKind(), live.GetName())
				res, err := status.Compute(live)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(res.Status).To(Equal(status.CurrentStatus))
				_, perKind := healthScripts()
				h, err := runHealthScript(perKind[live.GetKind()], live.Object)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(h.Status).To(Equal("Healthy"))
			}).Should(Succeed())
		}
		for _, name := range []string{"globex-web", "globex-data", "initech-tps"} {
			Expect(admin.Get(ctx, types.NamespacedName{Name: name}, &corev1.Namespace{})).To(Succeed())
		}
		Eventually(func(g Gomega) {
			c := &v1alpha1.Customer{}
			g.Expect(admin.Get(ctx, types.NamespacedName{Name: "globex"}, c)).To(Succeed())
			g.Expect(c.Status.Projects).To(Equal(int32(2)))
		}).Should(Succeed())
	})

	It("never has the operator write spec, labels or annotations of what Git owns", func() {
		for _, obj := range objs {
			live := obj.DeepCopy()
			Expect(admin.Get(ctx, client.ObjectKeyFromObject(live), live)).To(Succeed())
			writes := operatorWrites(live)
			for _, w := range writes {
				Expect(w).NotTo(ContainSubstring(": spec"), "%s %s", live.GetKind(), live.GetName())
				Expect(w).NotTo(ContainSubstring("metadata.labels"), "%s %s", live.GetKind(), live.GetName())
				Expect(w).NotTo(ContainSubstring("metadata.annotations"), "%s %s", live.GetKind(), live.GetName())
			}
			if live.GetKind() == "Customer" {
				// The finalizer is the operator's only write outside status.
				Expect(writes).To(ConsistOf(HaveSuffix("metadata.finalizers")), "%s %s", live.GetKind(), live.GetName())
				Expect(live.GetFinalizers()).To(ContainElement(v1alpha1.CustomerFinalizer))
			}
		}
	})

	It("changes nothing and sends nothing when Git is applied again", func() {
		invited := []string{"hank.scorpio@globex.example", "peter.gibbons@initech.example"}
		for _, rcpt := range invited {
			Eventually(mailsTo(rcpt)).Should(HaveLen(1), "one invitation to %s", rcpt)
		}
		mails := func() int {
			n := 0
			for _, rcpt := range invited {
				n += len(mailServer.MessagesTo(rcpt))
			}
			return n
		}
		totalMails := mails()

		type version struct {
			generation      int64
			resourceVersion string
		}
		before := map[string]version{}
		for _, obj := range objs {
			live := obj.DeepCopy()
			Expect(admin.Get(ctx, client.ObjectKeyFromObject(live), live)).To(Succeed())
			before[live.GetKind()+"/"+live.GetName()] = version{live.GetGeneration(), live.GetResourceVersion()}
		}

		refused, errs := applyAll(gitops, objs)
		Expect(refused).To(BeEmpty(), "%v", errs)

		for _, obj := range objs {
			live := obj.DeepCopy()
			Expect(admin.Get(ctx, client.ObjectKeyFromObject(live), live)).To(Succeed())
			key := live.GetKind() + "/" + live.GetName()
			Expect(version{live.GetGeneration(), live.GetResourceVersion()}).To(Equal(before[key]),
				"re-applying %s must be a no-op", key)
		}
		Consistently(mails, 3*time.Second, 200*time.Millisecond).
			Should(Equal(totalMails), "a re-sync sends no mail")
	})

	It("keeps Git's annotations in the Argo CD layout and never prunes a project there", func() {
		argocd := map[string]*unstructured.Unstructured{}
		for _, obj := range objs {
			argocd[obj.GetKind()+"/"+obj.GetName()] = obj
		}
		described := 0
		for _, stage := range []string{"customers", "access", "projects"} {
			for _, base := range renderKustomization("config/samples/gitops/" + stage) {
				obj := argocd[base.GetKind()+"/"+base.GetName()]
				Expect(obj).NotTo(BeNil(), "%s %s is in the Argo CD layout", base.GetKind(), base.GetName())
				for key, value := range base.GetAnnotations() {
					Expect(obj.GetAnnotations()).To(HaveKeyWithValue(key, value), "the sync-wave patch keeps %s", key)
					described++
				}
				Expect(obj.GetAnnotations()).To(HaveKey("argocd.argoproj.io/sync-wave"))
				if obj.GetKind() == "Namespace" {
					Expect(obj.GetAnnotations()).To(HaveKeyWithValue("argocd.argoproj.io/sync-options", "Prune=false"))
				}
			}
		}
		Expect(described).To(BeNumerically(">", 0), "the samples hold an annotation to keep")
	})

	It("lets the garbage collector finish a prune by foreground deletion (Argo CD's default)", func() {
		// Foreground deletion puts the foregroundDeletion finalizer on the object;
		// the garbage collector (kube-controller-manager, neither a partner nor a
		// member) removes it with an update that the webhooks must let through.
		var pruned []*unstructured.Unstructured
		for _, obj := range objs {
			switch obj.GetKind() {
			case "CustomerMembership", "CustomerQuota", "CustomerMessage":
				Expect(gitops.Delete(ctx, obj.DeepCopy(), client.PropagationPolicy(metav1.DeletePropagationForeground))).To(Succeed())
				pruned = append(pruned, obj)
			}
		}
		Expect(pruned).To(HaveLen(7))
		for _, obj := range pruned {
			Eventually(func() bool {
				return apierrors.IsNotFound(admin.Get(ctx, client.ObjectKeyFromObject(obj), obj.DeepCopy()))
			}).Should(BeTrue(), "%s %s is gone, not left being deleted", obj.GetKind(), obj.GetName())
		}
	})
})
