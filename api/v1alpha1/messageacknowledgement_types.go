package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MessageAcknowledgementSpec is the desired state of a MessageAcknowledgement.
type MessageAcknowledgementSpec struct {
	// message is the name of the CustomerMessage acknowledged. Immutable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.message is immutable; delete and re-create the object to change it"
	Message string `json:"message"`

	// user is the Kubernetes username of who acknowledges. Admission requires it to
	// equal the requesting user. Immutable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.user is immutable; delete and re-create the object to change it"
	User string `json:"user"`
}

// MessageAcknowledgementStatus is the observed state of a MessageAcknowledgement.
type MessageAcknowledgementStatus struct {
	// observedGeneration is the generation the operator last reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MessageAcknowledgement is one user's acknowledgement of one CustomerMessage,
// created by that user. The operator makes the message its owner, so it is
// garbage-collected with the message.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cack,categories=partnerops
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.spec.message`
// +kubebuilder:printcolumn:name="User",type=string,JSONPath=`.spec.user`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MessageAcknowledgement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the acknowledgement.
	// +required
	Spec MessageAcknowledgementSpec `json:"spec"`

	// status is the observed state of the acknowledgement.
	// The default makes a new object read observedGeneration 0 < generation, so
	// kstatus (Flux) and Argo CD see it InProgress until the operator reconciles it.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status MessageAcknowledgementStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (a *MessageAcknowledgement) GetConditions() []metav1.Condition { return a.Status.Conditions }

// SetConditions sets the status conditions.
func (a *MessageAcknowledgement) SetConditions(conditions []metav1.Condition) {
	a.Status.Conditions = conditions
}

// +kubebuilder:object:root=true

// MessageAcknowledgementList is a list of MessageAcknowledgements.
type MessageAcknowledgementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MessageAcknowledgement `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MessageAcknowledgement{}, &MessageAcknowledgementList{})
}
