package status

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Patcher remembers an object as it was read, so that a reconciler can write back
// only what it changed: the status subresource with an optimistic lock (other
// writers, such as the quota webhook, share it) and nothing at all when the status
// is unchanged, which keeps steady-state resyncs free of API writes.
type Patcher struct {
	before client.Object
}

// NewPatcher snapshots obj.
func NewPatcher(obj client.Object) *Patcher {
	return &Patcher{before: obj.DeepCopyObject().(client.Object)}
}

// PatchStatus writes obj's status if it differs from the snapshot. A conflict
// (someone else wrote in between) is returned, so the reconcile is retried on the
// fresh object rather than overwriting the other writer.
func (p *Patcher) PatchStatus(ctx context.Context, c client.Client, obj client.Object) error {
	keepTransitionTimes(p.before, obj)
	changed, err := statusChanged(p.before, obj)
	if err != nil || !changed {
		return err
	}
	patch := alwaysPresent{client.MergeFromWithOptions(p.before, client.MergeFromWithOptimisticLock{})}
	if err := c.Status().Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("patching status: %w", err)
	}
	p.before = obj.DeepCopyObject().(client.Object)
	return nil
}

// keepTransitionTimes gives each condition whose status is still the snapshot's the
// snapshot's lastTransitionTime: a reconcile that set a condition one way and then
// back (Ready True, then False again when a later step failed) has not made it
// transition, and must not write a new time on every pass.
func keepTransitionTimes(before, after client.Object) {
	b, ok := before.(Object)
	a, ok2 := after.(Object)
	if !ok || !ok2 {
		return
	}
	conditions := a.GetConditions()
	for i := range conditions {
		old := apimeta.FindStatusCondition(b.GetConditions(), conditions[i].Type)
		if old != nil && old.Status == conditions[i].Status {
			conditions[i].LastTransitionTime = old.LastTransitionTime
		}
	}
	a.SetConditions(conditions)
}

func statusChanged(before, after client.Object) (bool, error) {
	b, err := runtime.DefaultUnstructuredConverter.ToUnstructured(before)
	if err != nil {
		return false, err
	}
	a, err := runtime.DefaultUnstructuredConverter.ToUnstructured(after)
	if err != nil {
		return false, err
	}
	return !equality.Semantic.DeepEqual(b["status"], a["status"]), nil
}

// alwaysPresent is a merge patch that also carries every status field the API type
// always serializes (a JSON tag without omitempty: the counters projects, members,
// used, max, recipients, pending), changed or not. A merge patch leaves out what did
// not change, and the decoder cannot tell a counter the API server never stored from
// a stored 0, so a counter that stayed 0 from the start would never be written:
// `kubectl get` would show its column blank and `-o jsonpath='{.status.used}'` print
// nothing where the API promises 0. The fields carry the reconciler's own values, and
// the patch's optimistic lock still refuses a write from a stale read.
type alwaysPresent struct {
	client.Patch
}

func (p alwaysPresent) Data(obj client.Object) ([]byte, error) {
	data, err := p.Patch.Data(obj)
	if err != nil {
		return nil, err
	}
	fields := alwaysSerialized(obj)
	if len(fields) == 0 {
		return data, nil
	}
	var patch map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // numbers pass through as they are
	if err := dec.Decode(&patch); err != nil {
		return nil, fmt.Errorf("reading the status patch: %w", err)
	}
	st, _ := patch["status"].(map[string]any)
	if st == nil {
		st = map[string]any{}
		patch["status"] = st
	}
	for name, value := range fields {
		if _, ok := st[name]; !ok {
			st[name] = value
		}
	}
	return json.Marshal(patch)
}

// alwaysSerialized returns the scalar fields of obj's status whose JSON tag has
// neither omitempty nor omitzero, by JSON name.
func alwaysSerialized(obj client.Object) map[string]any {
	v := reflect.ValueOf(obj)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	st := v.Elem().FieldByName("Status")
	if !st.IsValid() || st.Kind() != reflect.Struct {
		return nil
	}
	fields := map[string]any{}
	for i := 0; i < st.NumField(); i++ {
		f := st.Type().Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		opts = "," + opts + ","
		if name == "" || name == "-" || strings.Contains(opts, ",omitempty,") || strings.Contains(opts, ",omitzero,") {
			continue
		}
		switch f.Type.Kind() {
		case reflect.Bool, reflect.Int, reflect.Int32, reflect.Int64, reflect.String:
			fields[name] = st.Field(i).Interface()
		}
	}
	return fields
}
