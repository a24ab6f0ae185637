package operator

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// Converged objects as the bench leaves them (an Email membership invited and
// waiting, a Customer and its quota Ready), applied by Argo CD (its tracking label
// and annotation); NNNN is the customer's number.
const (
	sampleMembership = `{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerMembership","metadata":{"creationTimestamp":"2026-11-27T19:34:11Z","finalizers":["customers.partnerops.io/finalizer"],"generation":1,"labels":{"app.kubernetes.io/instance":"customers"},"annotations":{"argocd.argoproj.io/tracking-id":"customers:customers.partnerops.io/CustomerMembership:/bench-NNNN-alice"},"name":"bench-NNNN-alice","resourceVersion":"1NNNN7","uid":"5f0c4a8e-5e7b-4c1b-9d0a-2f8e6c1bNNNN"},"spec":{"customer":"bench-NNNN","email":"alice.NNNN@bench.example","invitation":"Email","role":"Admin"},"status":{"conditions":[{"lastTransitionTime":"2026-11-27T19:34:12Z","message":"invitation round 1 sent to alice.NNNN@bench.example; it expires at 2026-12-04T19:34:12Z","observedGeneration":1,"reason":"InvitationSent","status":"True","type":"Invited"},{"lastTransitionTime":"2026-11-27T19:34:11Z","message":"waiting for alice.NNNN@bench.example to accept the invitation","observedGeneration":1,"reason":"InvitationPending","status":"False","type":"Accepted"},{"lastTransitionTime":"2026-11-27T19:34:12Z","message":"the invitation is sent; the membership grants access once it is accepted","observedGeneration":1,"reason":"AwaitingAcceptance","status":"True","type":"Ready"}],"invitation":{"attempts":1,"expiryTime":"2026-12-04T19:34:12Z","lastAttemptTime":"2026-11-27T19:34:12Z","round":1,"sentTime":"2026-11-27T19:34:12Z"},"observedGeneration":1,"username":"alice.NNNN@bench.example"}}`
	sampleCustomer   = `{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"Customer","metadata":{"creationTimestamp":"2026-11-27T19:34:11Z","finalizers":["customers.partnerops.io/finalizer"],"generation":1,"labels":{"app.kubernetes.io/instance":"customers"},"annotations":{"argocd.argoproj.io/tracking-id":"customers:customers.partnerops.io/Customer:/bench-NNNN"},"name":"bench-NNNN","resourceVersion":"2NNNN3","uid":"7a1c4a8e-5e7b-4c1b-9d0a-2f8e6c1bNNNN"},"spec":{"displayName":"Bench Customer NNNN","identifier":"bench-NNNN"},"status":{"conditions":[{"lastTransitionTime":"2026-11-27T19:34:12Z","message":"0 of 10 projects, 2 members","observedGeneration":1,"reason":"Reconciled","status":"True","type":"Ready"}],"maxProjects":10,"members":2,"observedGeneration":1,"projects":0}}`
	sampleQuota      = `{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerQuota","metadata":{"creationTimestamp":"2026-11-27T19:34:11Z","generation":1,"labels":{"app.kubernetes.io/instance":"customers"},"annotations":{"argocd.argoproj.io/tracking-id":"customers:customers.partnerops.io/CustomerQuota:/bench-NNNN"},"name":"bench-NNNN","resourceVersion":"3NNNN1","uid":"9b1c4a8e-5e7b-4c1b-9d0a-2f8e6c1bNNNN"},"spec":{"customer":"bench-NNNN","maxProjects":10},"status":{"conditions":[{"lastTransitionTime":"2026-11-27T19:34:12Z","message":"0 of 10 projects used","observedGeneration":1,"reason":"WithinQuota","status":"True","type":"Ready"}],"max":10,"observedGeneration":1,"used":0}}`
)

func decodeSample(t testing.TB, sample string, i int) client.Object {
	t.Helper()
	obj, _, err := serializer.NewCodecFactory(Scheme).UniversalDeserializer().
		Decode([]byte(strings.ReplaceAll(sample, "NNNN", fmt.Sprintf("%04d", i))), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return obj.(client.Object)
}

func sameBytes(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

func TestStripForCacheKeepsOneCopyOfWhatObjectsSpellAlike(t *testing.T) {
	a := decodeSample(t, sampleMembership, 1).(*v1alpha1.CustomerMembership)
	b := decodeSample(t, sampleMembership, 2).(*v1alpha1.CustomerMembership)
	want := a.DeepCopy()
	if sameBytes(a.APIVersion, b.APIVersion) {
		t.Fatal("the decoder already shares strings: this test proves nothing")
	}
	for _, m := range []*v1alpha1.CustomerMembership{a, b} {
		if _, err := stripForCache(m); err != nil {
			t.Fatal(err)
		}
	}
	if a.Labels != nil || a.Annotations != nil {
		t.Errorf("a GitOps tool's metadata is kept: %v %v", a.Labels, a.Annotations)
	}
	want.Labels, want.Annotations = nil, nil
	if !equality.Semantic.DeepEqual(a, want) {
		t.Fatalf("the object changed beyond its foreign metadata:\n got %+v\nwant %+v", a, want)
	}
	for what, pair := range map[string][2]string{
		"apiVersion":       {a.APIVersion, b.APIVersion},
		"kind":             {a.Kind, b.Kind},
		"finalizer":        {a.Finalizers[0], b.Finalizers[0]},
		"condition type":   {a.Status.Conditions[1].Type, b.Status.Conditions[1].Type},
		"condition status": {string(a.Status.Conditions[1].Status), string(b.Status.Conditions[1].Status)},
		"condition reason": {a.Status.Conditions[1].Reason, b.Status.Conditions[1].Reason},
	} {
		if !sameBytes(pair[0], pair[1]) {
			t.Errorf("%s %q: two copies", what, pair[0])
		}
	}
	if sameBytes(a.Spec.Email, b.Spec.Email) || a.Spec.Email == b.Spec.Email {
		t.Error("per-object values must stay their own")
	}
}

// BenchmarkCachedObjectBytes reports what one converged object costs in the
// informer's store (live heap after a GC, per object), as decoded from the API
// server's JSON, with and without stripForCache. go test -run '^$' -bench
// CachedObjectBytes ./internal/operator/
func BenchmarkCachedObjectBytes(b *testing.B) {
	const n = 5000
	for _, kind := range []struct{ name, sample string }{
		{"membership", sampleMembership}, {"customer", sampleCustomer}, {"quota", sampleQuota},
	} {
		for _, strip := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/strip=%t", kind.name, strip), func(b *testing.B) {
				inputs := make([][]byte, n)
				for i := range inputs {
					inputs[i] = []byte(strings.ReplaceAll(kind.sample, "NNNN", fmt.Sprintf("%04d", i)))
				}
				decoder := serializer.NewCodecFactory(Scheme).UniversalDeserializer()
				var perObject float64
				for b.Loop() {
					store := make([]any, 0, n)
					runtime.GC()
					var before, after runtime.MemStats
					runtime.ReadMemStats(&before)
					for _, in := range inputs {
						obj, _, err := decoder.Decode(in, nil, nil)
						if err != nil {
							b.Fatal(err)
						}
						var kept any = obj
						if strip {
							if kept, err = stripForCache(obj); err != nil {
								b.Fatal(err)
							}
						}
						store = append(store, kept)
					}
					runtime.GC()
					runtime.ReadMemStats(&after)
					perObject = float64(after.HeapAlloc-before.HeapAlloc) / n
					runtime.KeepAlive(store)
				}
				b.ReportMetric(perObject, "live-B/object")
			})
		}
	}
}
