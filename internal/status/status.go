// Package status holds the condition bookkeeping shared by every reconciler, so that
// all five kinds read the same to kubectl wait, kstatus (Flux) and Argo CD:
//
//   - Ready: the operator has done its part for the current generation.
//   - Reconciling=True while it works on a newer generation (or retries an error).
//   - Stalled=True when it cannot progress without a change.
//
// Reconciling and Stalled are removed rather than set to False, as kstatus expects.
package status

import (
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// Object is an API object with status conditions.
type Object interface {
	client.Object
	GetConditions() []metav1.Condition
	SetConditions([]metav1.Condition)
}

// Set sets one condition, stamped with the object's generation. The transition time
// only moves when the status does, so an unchanged condition causes no write.
func Set(obj Object, conditionType string, status metav1.ConditionStatus, reason, message string) {
	conditions := obj.GetConditions()
	apimeta.SetStatusCondition(&conditions, metav1.Condition{
		Type:               conditionType,
		Status:             status,
		Reason:             reason,
		Message:            truncate(message),
		ObservedGeneration: obj.GetGeneration(),
	})
	obj.SetConditions(conditions)
}

// Remove removes a condition.
func Remove(obj Object, conditionType string) {
	conditions := obj.GetConditions()
	apimeta.RemoveStatusCondition(&conditions, conditionType)
	obj.SetConditions(conditions)
}

// Get returns a condition, or nil.
func Get(obj Object, conditionType string) *metav1.Condition {
	return apimeta.FindStatusCondition(obj.GetConditions(), conditionType)
}

// IsTrue reports whether a condition is True.
func IsTrue(obj Object, conditionType string) bool {
	return apimeta.IsStatusConditionTrue(obj.GetConditions(), conditionType)
}

// MarkReady records that the operator has done its part for the current generation.
func MarkReady(obj Object, message string) {
	Set(obj, v1alpha1.ReadyCondition, metav1.ConditionTrue, v1alpha1.ReconciledReason, message)
	Remove(obj, v1alpha1.ReconcilingCondition)
	Remove(obj, v1alpha1.StalledCondition)
}

// MarkStalled records that the operator cannot progress without a change to the
// object or what it references. Ready is False with the same reason.
func MarkStalled(obj Object, reason, message string) {
	Set(obj, v1alpha1.ReadyCondition, metav1.ConditionFalse, reason, message)
	Set(obj, v1alpha1.StalledCondition, metav1.ConditionTrue, reason, message)
	Remove(obj, v1alpha1.ReconcilingCondition)
}

// MarkReconciling records that the operator is still working (a transient error it
// retries, or a step that waits on the world). Ready is False with the same reason.
func MarkReconciling(obj Object, reason, message string) {
	Set(obj, v1alpha1.ReadyCondition, metav1.ConditionFalse, reason, message)
	Set(obj, v1alpha1.ReconcilingCondition, metav1.ConditionTrue, reason, message)
	Remove(obj, v1alpha1.StalledCondition)
}

// maxMessage bounds condition messages (metav1.Condition allows 32768).
const maxMessage = 1024

func truncate(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	return s[:maxMessage-3] + "..."
}
