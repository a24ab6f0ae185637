package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CustomerSpec is the desired state of a Customer.
type CustomerSpec struct {
	// identifier is the customer's immutable identifier. It must equal
	// metadata.name, so that etcd itself keeps identifiers unique and immutable.
	// A DNS-1123 label: lower-case letters, digits and '-', at most 63 characters.
	// Every other object refers to the customer by it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches(\"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$\")",message="spec.identifier must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.identifier is immutable; delete and re-create the object to change it"
	Identifier string `json:"identifier"`

	// displayName is the name people see, in invitations, the portal and the plugin.
	// Required: 1 to 256 characters, not only whitespace. Mutable.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.trim() != ''",message="must not be empty",reason=FieldValueRequired
	DisplayName string `json:"displayName"`
}

// ProjectReservation holds one project slot of a customer between the admission of
// a namespace create (or of a relabel into the customer) and the moment the
// namespace is a project (then it counts as used).
type ProjectReservation struct {
	// namespace is the name of the namespace the slot is reserved for.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`

	// expiresAt is when the reservation lapses if the namespace has not appeared:
	// the admission timeout plus a grace period after it was made.
	// +required
	ExpiresAt metav1.Time `json:"expiresAt"`

	// afterResourceVersion is set when the slot is for an existing namespace being
	// labelled into this customer (an UPDATE): the namespace's resourceVersion before
	// that update; or for a create of a name whose deleted namespace a cache still
	// showed: that copy's resourceVersion. The slot passes to status.projects only
	// when the namespace is seen as a project in a newer version, so that a cache
	// still showing an earlier time the name belonged to this customer does not
	// release it.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AfterResourceVersion string `json:"afterResourceVersion,omitempty"`
}

// CustomerStatus is the observed state of a Customer.
type CustomerStatus struct {
	// observedGeneration is the generation the operator last reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// projects is the number of project namespaces of this customer that are not
	// being deleted.
	// +optional
	Projects int32 `json:"projects"`

	// maxProjects is the number of projects the customer may have: its
	// CustomerQuota's spec.maxProjects, or the operator's --default-max-projects
	// when it has none.
	// +optional
	MaxProjects int32 `json:"maxProjects"`

	// members is the number of active memberships (accepted, or invitation None).
	// +optional
	Members int32 `json:"members"`

	// reservations are the project slots held by admitted namespace creates that
	// have not appeared yet. Written by the admission webhook with optimistic
	// concurrency; released by the controller.
	// +optional
	// +listType=map
	// +listMapKey=namespace
	// +kubebuilder:validation:MaxItems=1000
	Reservations []ProjectReservation `json:"reservations,omitempty"`

	// conditions: Ready, Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Customer is a managed customer account. Its metadata.name is its identifier.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cust,categories=partnerops
// +kubebuilder:printcolumn:name="Display Name",type=string,JSONPath=`.spec.displayName`
// +kubebuilder:printcolumn:name="Projects",type=integer,JSONPath=`.status.projects`
// +kubebuilder:printcolumn:name="Max Projects",type=integer,JSONPath=`.status.maxProjects`
// +kubebuilder:printcolumn:name="Members",type=integer,JSONPath=`.status.members`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.spec.identifier == self.metadata.name",message="spec.identifier must equal metadata.name",fieldPath=".spec.identifier",reason="FieldValueInvalid"
type Customer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the customer.
	// +required
	Spec CustomerSpec `json:"spec"`

	// status is the observed state of the customer.
	// The default makes a new object read observedGeneration 0 < generation, so
	// kstatus (Flux) and Argo CD see it InProgress until the operator reconciles it.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status CustomerStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (c *Customer) GetConditions() []metav1.Condition { return c.Status.Conditions }

// SetConditions sets the status conditions.
func (c *Customer) SetConditions(conditions []metav1.Condition) { c.Status.Conditions = conditions }

// +kubebuilder:object:root=true

// CustomerList is a list of Customers.
type CustomerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Customer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Customer{}, &CustomerList{})
}
