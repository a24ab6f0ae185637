package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CustomerQuotaSpec is the desired state of a CustomerQuota.
type CustomerQuotaSpec struct {
	// customer is the identifier of the Customer this quota caps. It must equal
	// metadata.name, so there is at most one quota per customer. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.customer is immutable; delete and re-create the object to change it"
	Customer CustomerName `json:"customer"`

	// maxProjects is the number of projects (namespaces) the customer may have.
	// Required: 0 to 100000 (0 allows no projects). Mutable.
	// Lowering it below the current number deletes nothing: new projects are refused
	// until the customer is back under it.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	MaxProjects *int32 `json:"maxProjects"`
}

// CustomerQuotaStatus is the observed state of a CustomerQuota.
type CustomerQuotaStatus struct {
	// observedGeneration is the generation the operator last reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// used is the number of the customer's projects that are not being deleted.
	// +optional
	Used int32 `json:"used"`

	// max is the maximum in force (spec.maxProjects as last reconciled).
	// +optional
	Max int32 `json:"max"`

	// conditions: Ready, Reconciling, Stalled, WithinQuota.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CustomerQuota caps the number of projects of one customer. A customer without one
// gets the operator's --default-max-projects.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cquota,categories=partnerops
// +kubebuilder:printcolumn:name="Customer",type=string,JSONPath=`.spec.customer`
// +kubebuilder:printcolumn:name="Used",type=integer,JSONPath=`.status.used`
// +kubebuilder:printcolumn:name="Max",type=integer,JSONPath=`.spec.maxProjects`
// +kubebuilder:printcolumn:name="Within Quota",type=string,JSONPath=`.status.conditions[?(@.type=="WithinQuota")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name == self.spec.customer",message="metadata.name must equal spec.customer (one quota per customer)",fieldPath=".spec.customer",reason="FieldValueInvalid"
type CustomerQuota struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the quota.
	// +required
	Spec CustomerQuotaSpec `json:"spec"`

	// status is the observed state of the quota.
	// The default makes a new object read observedGeneration 0 < generation, so
	// kstatus (Flux) and Argo CD see it InProgress until the operator reconciles it.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status CustomerQuotaStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (q *CustomerQuota) GetConditions() []metav1.Condition { return q.Status.Conditions }

// SetConditions sets the status conditions.
func (q *CustomerQuota) SetConditions(conditions []metav1.Condition) {
	q.Status.Conditions = conditions
}

// +kubebuilder:object:root=true

// CustomerQuotaList is a list of CustomerQuotas.
type CustomerQuotaList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CustomerQuota `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CustomerQuota{}, &CustomerQuotaList{})
}
