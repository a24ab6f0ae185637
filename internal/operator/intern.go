package operator

import (
	"slices"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/status"
)

// internShared makes the strings that many cached objects spell the same way
// share one copy (intern): type meta, label and annotation keys,
// finalizers, owner references' kinds, and the type, status, reason and message
// of status conditions; a membership's username shares the e-mail address's bytes
// when it is the same text. The JSON decoder gives every object its own copy of each;
// with 10,000 customers that is 40,000 copies of "customers.partnerops.io/v1alpha1"
// alone. Values that differ per object (names, UIDs, e-mail addresses) are left
// as they are: a canonical copy of those would cost more than it saves.
//
// Condition messages are interned because the operator's own say what state an
// object is in and leave what is per object (the e-mail address, the times) to
// the status fields: "the invitation is sent; access is granted once it is
// accepted" is the same text in every pending membership. The few that carry a
// per-object value (an invitation's expiry, a mail server's error) cost one
// canonical-map entry more than they would uninterned.
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
	if m, ok := obj.(*v1alpha1.CustomerMembership); ok && m.Status.Username == m.Spec.Email {
		// The username is the e-mail address unless --username-prefix is set.
		m.Status.Username = m.Spec.Email
	}
	if c, ok := obj.(status.Object); ok {
		// The slice shares its array with the object: this changes the object.
		conditions := c.GetConditions()
		for i := range conditions {
			conditions[i].Type = intern(conditions[i].Type)
			conditions[i].Status = metav1.ConditionStatus(intern(string(conditions[i].Status)))
			conditions[i].Reason = intern(conditions[i].Reason)
			conditions[i].Message = intern(conditions[i].Message)
		}
		// The decoder grows the array by doubling: a membership's three conditions
		// sit in room for four (96 bytes each). The cached copy keeps them exactly.
		if cap(conditions) > len(conditions) {
			c.SetConditions(slices.Clone(conditions))
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

// interned holds the canonical copies, strongly: unique.Make alone keeps one only
// while a Handle to it lives, and the Handle was dropped at once, so after each GC
// cycle the next object got a new copy of every string (the sharing held only
// among objects decoded between two collections, and a test of it failed when a
// GC came between two objects).
//
// Two generations of at most maxInterned strings each: when the current one is
// full it becomes the old one, and the old one is dropped; a string found in the
// old generation moves to the current one. What objects keep spelling (type meta,
// finalizers, condition types, reasons, the common messages) stays; per-object
// texts (a customer's name in a message, a time, a mail server's error) age out
// instead of filling the table, which holds at most 2 × maxInterned strings.
var interned = struct {
	sync.Mutex
	cur, old map[string]string
}{cur: map[string]string{}}

const maxInterned = 1024

func intern(s string) string {
	interned.Lock()
	defer interned.Unlock()
	if c, ok := interned.cur[s]; ok {
		return c
	}
	c, ok := interned.old[s]
	if !ok {
		c = strings.Clone(s)
	}
	if len(interned.cur) >= maxInterned {
		interned.old, interned.cur = interned.cur, make(map[string]string, maxInterned)
	}
	interned.cur[c] = c
	return c
}
