package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// InvitationMode says how a membership becomes active.
// +kubebuilder:validation:Enum=Email;None
// +kubebuilder:validation:MaxLength=16
type InvitationMode string

const (
	// InvitationEmail sends the person an invitation e-mail; the membership grants
	// access once they accept it in the portal.
	InvitationEmail InvitationMode = "Email"
	// InvitationNone makes the membership active at once, without e-mail. Only
	// partners may create such memberships (a partner "adding themselves").
	InvitationNone InvitationMode = "None"
)

// CustomerMembershipSpec is the desired state of a CustomerMembership.
// +kubebuilder:validation:XValidation:rule="has(self.username) == has(oldSelf.username)",message="spec.username is immutable: it cannot be set or unset after creation; delete and re-create the object to change it",fieldPath=".username"
// +kubebuilder:validation:XValidation:rule="has(self.invitation) == has(oldSelf.invitation)",message="spec.invitation is immutable: it cannot be set or unset after creation; delete and re-create the object to change it",fieldPath=".invitation"
type CustomerMembershipSpec struct {
	// customer is the identifier of the Customer this membership belongs to. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.customer is immutable; delete and re-create the object to change it"
	Customer CustomerName `json:"customer"`

	// email is the person's e-mail address: where the invitation goes, and (with
	// --username-prefix) their Kubernetes username unless spec.username is set.
	// Compared case-insensitively and stored lower-case. ASCII only: letters, digits
	// and .!#$%&'*+/=?^_{|}~- before the @, a domain of dot-separated DNS labels
	// after it; required, 3 to 254 characters. Immutable.
	// +required
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=254
	// +kubebuilder:validation:XValidation:rule="self.matches(\"^[a-zA-Z0-9.!#$%&'*+/=?^_{|}~-]+@[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?([.][a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+$\")",message="spec.email must be an e-mail address of ASCII characters, such as name@example.com"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.email is immutable; delete and re-create the object to change it"
	Email string `json:"email"`

	// username is the person's Kubernetes username, as the cluster's authenticator
	// reports it. Defaults to --username-prefix followed by spec.email. Only partners
	// may set a value other than the default, a ServiceAccount's
	// "system:serviceaccount:<namespace>:<name>" for example; a customer's Admin
	// may not, least of all one that starts with "system:". At most 512
	// characters. Immutable.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.username is immutable; delete and re-create the object to change it"
	Username string `json:"username,omitempty"`

	// role is the person's role within the customer, required: Admin, Editor or
	// Viewer. While the membership is active, each binds a ClusterRole in every
	// project of the customer: Admin to admin (and lets them manage the customer's
	// memberships and create its projects), Editor to edit, Viewer to view. Mutable:
	// a change rebinds their access.
	// +required
	Role Role `json:"role"`

	// invitation says how the membership becomes active: Email (default) sends an
	// invitation link that the person must accept; None makes it active at once
	// (partners only). Immutable.
	// +optional
	// +kubebuilder:default=Email
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.invitation is immutable; delete and re-create the object to change it"
	Invitation InvitationMode `json:"invitation,omitempty"`
}

// InvitationStatus records the invitation of the current round. It is written before
// the e-mail is sent, so that a restarted or second operator knows what was attempted.
type InvitationStatus struct {
	// round counts invitation rounds, starting at 1. A new value of the
	// customers.partnerops.io/resend-invitation annotation starts a new round: a new
	// link, the old one dead.
	// +optional
	Round int32 `json:"round,omitempty"`

	// resendRequest is the value of the resend-invitation annotation that started
	// the current round (empty for the first round).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	ResendRequest string `json:"resendRequest,omitempty"`

	// sentTime is when the e-mail of the current round was accepted by the SMTP server.
	// +optional
	SentTime *metav1.Time `json:"sentTime,omitempty"`

	// expiryTime is when the link of the current round stops working.
	// +optional
	ExpiryTime *metav1.Time `json:"expiryTime,omitempty"`

	// attempts is the number of delivery attempts made in the current round.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// lastAttemptTime is when the last delivery attempt started.
	// +optional
	LastAttemptTime *metav1.Time `json:"lastAttemptTime,omitempty"`

	// lastError is the error of the last failed attempt, if any.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LastError string `json:"lastError,omitempty"`
}

// CustomerMembershipStatus is the observed state of a CustomerMembership.
type CustomerMembershipStatus struct {
	// observedGeneration is the generation the operator last reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// username is the Kubernetes username the membership grants access to.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Username string `json:"username,omitempty"`

	// invitation records the invitation of the current round (invitation Email).
	// +optional
	Invitation *InvitationStatus `json:"invitation,omitempty"`

	// acceptedTime is when the person accepted the invitation.
	// +optional
	AcceptedTime *metav1.Time `json:"acceptedTime,omitempty"`

	// acceptedRound is the invitation round whose link was used to accept.
	// +optional
	AcceptedRound int32 `json:"acceptedRound,omitempty"`

	// conditions: Ready, Reconciling, Stalled, Invited, Accepted.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CustomerMembership is one person's access to one customer, with its invitation.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cmember,categories=partnerops
// +kubebuilder:printcolumn:name="Customer",type=string,JSONPath=`.spec.customer`
// +kubebuilder:printcolumn:name="Email",type=string,JSONPath=`.spec.email`
// +kubebuilder:printcolumn:name="Role",type=string,JSONPath=`.spec.role`
// +kubebuilder:printcolumn:name="Invited",type=string,JSONPath=`.status.conditions[?(@.type=="Invited")].status`,priority=1
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Invitation Expires",type=string,JSONPath=`.status.invitation.expiryTime`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CustomerMembership struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the membership.
	// +required
	Spec CustomerMembershipSpec `json:"spec"`

	// status is the observed state of the membership.
	// The default makes a new object read observedGeneration 0 < generation, so
	// kstatus (Flux) and Argo CD see it InProgress until the operator reconciles it.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status CustomerMembershipStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (m *CustomerMembership) GetConditions() []metav1.Condition { return m.Status.Conditions }

// SetConditions sets the status conditions.
func (m *CustomerMembership) SetConditions(conditions []metav1.Condition) {
	m.Status.Conditions = conditions
}

// +kubebuilder:object:root=true

// CustomerMembershipList is a list of CustomerMemberships.
type CustomerMembershipList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CustomerMembership `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CustomerMembership{}, &CustomerMembershipList{})
}
