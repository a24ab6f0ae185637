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
// and annotation); NNNN is the customer's number and HH:MM:SS its time of day
// (sampleJSON), so that per-object times and the messages that carry them differ
// as they do in a cluster.
const (
	sampleMembership = `{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerMembership","metadata":{"creationTimestamp":"2026-11-27T19:34:11Z","finalizers":["customers.partnerops.io/finalizer"],"generation":1,"labels":{"app.kubernetes.io/instance":"customers"},"annotations":{"argocd.argoproj.io/tracking-id":"customers:customers.partnerops.io/CustomerMembership:/bench-NNNN-alice"},"name":"bench-NNNN-alice","resourceVersion":"1NNNN7","uid":"5f0c4a8e-5e7b-4c1b-9d0a-2f8e6c1bNNNN"},"spec":{"customer":"bench-NNNN","email":"alice.NNNN@bench.example","invitation":"Email","role":"Admin"},"status":{"conditions":[{"lastTransitionTime":"2026-11-27THH:MM:SSZ","message":"the invitation e-mail (round 1) was sent","observedGeneration":1,"reason":"InvitationSent","status":"True","type":"Invited"},{"lastTransitionTime":"2026-11-27THH:MM:SSZ","message":"waiting for the invitation to be accepted; the link works until status.invitation.expiryTime","observedGeneration":1,"reason":"AwaitingAcceptance","status":"False","type":"Accepted"},{"lastTransitionTime":"2026-11-27THH:MM:SSZ","message":"the invitation is sent; access is granted once it is accepted","observedGeneration":1,"reason":"Reconciled","status":"True","type":"Ready"}],"invitation":{"attempts":1,"expiryTime":"2026-12-04THH:MM:SSZ","lastAttemptTime":"2026-11-27THH:MM:SSZ","round":1,"sentTime":"2026-11-27THH:MM:SSZ"},"observedGeneration":1,"username":"alice.NNNN@bench.example"}}`
	sampleCustomer   = `{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"Customer","metadata":{"creationTimestamp":"2026-11-27T19:34:11Z","finalizers":["customers.partnerops.io/finalizer"],"generation":1,"labels":{"app.kubernetes.io/instance":"customers"},"annotations":{"argocd.argoproj.io/tracking-id":"customers:customers.partnerops.io/Customer:/bench-NNNN"},"name":"bench-NNNN","resourceVersion":"2NNNN3","uid":"7a1c4a8e-5e7b-4c1b-9d0a-2f8e6c1bNNNN"},"spec":{"displayName":"Bench Customer NNNN","identifier":"bench-NNNN"},"status":{"conditions":[{"lastTransitionTime":"2026-11-27THH:MM:SSZ","message":"customer has 0 project(s) and 0 active member(s)","observedGeneration":1,"reason":"Reconciled","status":"True","type":"Ready"}],"maxProjects":10,"members":2,"observedGeneration":1,"projects":0}}`
	sampleQuota      = `{"apiVersion":"customers.partnerops.io/v1alpha1","kind":"CustomerQuota","metadata":{"creationTimestamp":"2026-11-27T19:34:11Z","generation":1,"labels":{"app.kubernetes.io/instance":"customers"},"annotations":{"argocd.argoproj.io/tracking-id":"customers:customers.partnerops.io/CustomerQuota:/bench-NNNN"},"name":"bench-NNNN","resourceVersion":"3NNNN1","uid":"9b1c4a8e-5e7b-4c1b-9d0a-2f8e6c1bNNNN"},"spec":{"customer":"bench-NNNN","maxProjects":10},"status":{"conditions":[{"lastTransitionTime":"2026-11-27THH:MM:SSZ","message":"0 of 10 projects used","observedGeneration":1,"reason":"WithinQuota","status":"True","type":"WithinQuota"},{"lastTransitionTime":"2026-11-27THH:MM:SSZ","message":"0 of 10 projects used","observedGeneration":1,"reason":"Reconciled","status":"True","type":"Ready"}],"max":10,"observedGeneration":1,"used":0}}`
)

// sampleJSON is the sample of object i.
func sampleJSON(sample string, i int) []byte {
	return []byte(strings.NewReplacer(
		"NNNN", fmt.Sprintf("%04d", i),
		"HH:MM:SS", fmt.Sprintf("%02d:%02d:%02d", i/3600%24, i/60%60, i%60),
	).Replace(sample))
}

func decodeSample(t testing.TB, sample string, i int) client.Object {
	t.Helper()
	obj, _, err := serializer.NewCodecFactory(Scheme).UniversalDeserializer().
		Decode(sampleJSON(sample, i), nil, nil)
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
		// A collection between two objects must not end the sharing (it did, with
		// unique.Make's handles dropped at once).
		runtime.GC()
	}
	if a.Labels != nil || a.Annotations != nil {
		t.Errorf("a GitOps tool's metadata is kept: %v %v", a.Labels, a.Annotations)
	}
	want.Labels, want.Annotations = nil, nil
	if !equality.Semantic.DeepEqual(a, want) {
		t.Fatalf("the object changed beyond its foreign metadata:\n got %+v\nwant %+v", a, want)
	}
	for what, pair := range map[string][2]string{
		"apiVersion":        {a.APIVersion, b.APIVersion},
		"kind":              {a.Kind, b.Kind},
		"finalizer":         {a.Finalizers[0], b.Finalizers[0]},
		"condition type":    {a.Status.Conditions[1].Type, b.Status.Conditions[1].Type},
		"condition status":  {string(a.Status.Conditions[1].Status), string(b.Status.Conditions[1].Status)},
		"condition reason":  {a.Status.Conditions[1].Reason, b.Status.Conditions[1].Reason},
		"condition message": {a.Status.Conditions[2].Message, b.Status.Conditions[2].Message},
	} {
		if !sameBytes(pair[0], pair[1]) {
			t.Errorf("%s %q: two copies", what, pair[0])
		}
	}
	if n := len(a.Status.Conditions); n != 3 || cap(a.Status.Conditions) != n {
		t.Errorf("conditions: %d in room for %d; the cached copy keeps exactly the three", n, cap(a.Status.Conditions))
	}
	if !sameBytes(a.Status.Username, a.Spec.Email) {
		t.Error("status.username and spec.email: two copies of one address")
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
					inputs[i] = sampleJSON(kind.sample, i)
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

// Per-object texts age out of the intern table; what objects keep spelling stays
// shared, and the table stays bounded.
func TestInternKeepsTheVocabularyAndForgetsTheRest(t *testing.T) {
	const apiVersion = "customers.partnerops.io/v1alpha1"
	common := intern(strings.Clone(apiVersion))
	for i := range 5 * maxInterned {
		intern(fmt.Sprintf("editor access to customer \"c-%d\" is granted", i))
		if i%(maxInterned/2) == 0 {
			if got := intern(strings.Clone(apiVersion)); !sameBytes(got, common) {
				t.Fatalf("after %d per-object texts, %q has a second copy", i, apiVersion)
			}
		}
	}
	interned.Lock()
	n := len(interned.cur) + len(interned.old)
	interned.Unlock()
	if n > 2*maxInterned {
		t.Errorf("the table holds %d strings, more than %d", n, 2*maxInterned)
	}
}
