package operator

import (
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// internShared makes the strings that many cached objects spell the same way
// share one copy (unique.Make): type meta, label and annotation keys,
// finalizers, owner references' kinds, and the type, status and reason of
// status conditions. The JSON decoder gives every object its own copy of each;
// with 10,000 customers that is 40,000 copies of "customers.partnerops.io/v1alpha1"
// alone. Values that differ per object (names, messages, e-mail addresses) are
// left as they are: a canonical copy of those would cost more than it saves.
func internShared(obj metav1.Object) {
	// Typed objects only: meta.TypeAccessor would build the strings anew.
	if ro, ok := obj.(runtime.Object); ok {
		if tm, ok := ro.GetObjectKind().(*metav1.TypeMeta); ok {
			tm.APIVersion, tm.Kind = intern(tm.APIVersion), intern(tm.Kind)
		}
	}
	internKeys(obj.GetLabels())
	internKeys(obj.GetAnnotations())
	if fs := obj.GetFinalizers(); len(fs) > 0 {
		for i := range fs {
			fs[i] = intern(fs[i])
		}
	}
	if refs := obj.GetOwnerReferences(); len(refs) > 0 {
		for i := range refs {
			refs[i].APIVersion, refs[i].Kind = intern(refs[i].APIVersion), intern(refs[i].Kind)
		}
	}
	if c, ok := obj.(interface{ GetConditions() []metav1.Condition }); ok {
		// The slice shares its array with the object: this changes the object.
		conditions := c.GetConditions()
		for i := range conditions {
			conditions[i].Type = intern(conditions[i].Type)
			conditions[i].Status = metav1.ConditionStatus(intern(string(conditions[i].Status)))
			conditions[i].Reason = intern(conditions[i].Reason)
		}
	}
}

// internKeys replaces the keys of m by their canonical copies: assigning to a key
// that is there already stores the new key's string too.
func internKeys(m map[string]string) {
	for k, v := range m {
		m[intern(k)] = v
	}
}

func intern(s string) string { return unique.Make(s).Value() }
