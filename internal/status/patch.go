package status

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
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
	changed, err := statusChanged(p.before, obj)
	if err != nil || !changed {
		return err
	}
	patch := client.MergeFromWithOptions(p.before, client.MergeFromWithOptimisticLock{})
	if err := c.Status().Patch(ctx, obj, patch); err != nil {
		return fmt.Errorf("patching status: %w", err)
	}
	p.before = obj.DeepCopyObject().(client.Object)
	return nil
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
