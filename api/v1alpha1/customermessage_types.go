package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReadPolicy says when a message counts as resolved.
// +kubebuilder:validation:Enum=AllMustRead;SingleRead
// +kubebuilder:validation:MaxLength=16
type ReadPolicy string

const (
	// AllMustRead: every recipient must acknowledge the message.
	AllMustRead ReadPolicy = "AllMustRead"
	// SingleRead: the first acknowledgement resolves the message for everyone.
	SingleRead ReadPolicy = "SingleRead"
)

// NotifyMode says whether recipients are told of a new message by e-mail.
// +kubebuilder:validation:Enum=None;Email
// +kubebuilder:validation:MaxLength=16
type NotifyMode string

const (
	// NotifyNone sends no e-mail; recipients see the message in their inbox.
	NotifyNone NotifyMode = "None"
	// NotifyEmail sends each recipient one e-mail about the message.
	NotifyEmail NotifyMode = "Email"
)

// CustomerMessageSpec is the desired state of a CustomerMessage.
// +kubebuilder:validation:XValidation:rule="has(self.readPolicy) == has(oldSelf.readPolicy)",message="spec.readPolicy is immutable: it cannot be set or unset after creation; delete and re-create the object to change it",fieldPath=".readPolicy"
type CustomerMessageSpec struct {
	// customer is the identifier of the Customer whose users receive the message.
	// Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.customer is immutable; delete and re-create the object to change it"
	Customer CustomerName `json:"customer"`

	// title is the message's one-line subject. Required: 1 to 200 characters, not
	// only whitespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=200
	// +kubebuilder:validation:XValidation:rule="self.trim() != ''",message="must not be empty",reason=FieldValueRequired
	Title string `json:"title"`

	// body is the message's text. Required: at least 1 character and at most 16 KiB
	// (16384 bytes of UTF-8; a character outside ASCII takes 2 to 4 of them).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=16384
	// +kubebuilder:validation:XValidation:rule="size(bytes(self)) <= 16384",message="spec.body must be at most 16384 bytes (16 KiB) in UTF-8"
	Body string `json:"body"`

	// roles addresses the message to members of these roles only. Empty: every member.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=3
	Roles []Role `json:"roles,omitempty"`

	// readPolicy says when the message is resolved: AllMustRead (default), every
	// recipient must acknowledge; SingleRead, the first acknowledgement resolves it
	// for everyone. Immutable.
	// +optional
	// +kubebuilder:default=AllMustRead
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.readPolicy is immutable; delete and re-create the object to change it"
	ReadPolicy ReadPolicy `json:"readPolicy,omitempty"`

	// notify says whether recipients get an e-mail about the message: None (default),
	// no e-mail, they see it in their inbox; or Email, the operator mails each
	// recipient the title and body once (status.notice.sent lists the addresses sent
	// to, at most 1000), while the message is open (not resolved). Mutable: switching
	// to Email after publication mails every current recipient not yet in
	// status.notice.sent, as long as the message is open; switching back to None
	// stops further mails.
	// +optional
	// +kubebuilder:default=None
	Notify NotifyMode `json:"notify,omitempty"`
}

// Acknowledgement records one user's acknowledgement of a message.
type Acknowledgement struct {
	// user is the Kubernetes username that acknowledged.
	// +required
	// +kubebuilder:validation:MaxLength=512
	User string `json:"user"`

	// time is when the acknowledgement was created.
	// +required
	Time metav1.Time `json:"time"`
}

// AcknowledgementReservation holds one user's acknowledgement between its admission
// and the moment the MessageAcknowledgement exists.
type AcknowledgementReservation struct {
	// user is the Kubernetes username whose acknowledgement was admitted.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	User string `json:"user"`

	// expiresAt is when the reservation lapses if the acknowledgement has not
	// appeared: the admission timeout plus a grace period after it was made.
	// +required
	ExpiresAt metav1.Time `json:"expiresAt"`
}

// NoticeStatus records the e-mail notice of a message: each recipient's address
// once it was handed to the SMTP server, so that nobody gets it twice, and the last
// failure while some are still to be sent.
type NoticeStatus struct {
	// sent lists the addresses the notice was sent to, each once.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=254
	Sent []string `json:"sent,omitempty"`

	// refused lists the addresses whose mail server refused the notice for good (a
	// 5xx reply to the recipient or to the message): they are not tried again.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=254
	Refused []string `json:"refused,omitempty"`

	// attempts counts the delivery attempts since the last one that sent everything.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// lastAttemptTime is when the last delivery attempt started. It is recorded
	// before any mail goes out.
	// +optional
	LastAttemptTime *metav1.Time `json:"lastAttemptTime,omitempty"`

	// lastError is the error of the last failed delivery, if any.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LastError string `json:"lastError,omitempty"`
}

// CustomerMessageStatus is the observed state of a CustomerMessage.
type CustomerMessageStatus struct {
	// observedGeneration is the generation the operator last reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// publishedTime is when the operator first found recipients for the message.
	// +optional
	PublishedTime *metav1.Time `json:"publishedTime,omitempty"`

	// recipients is the number of users the message is addressed to.
	// +optional
	Recipients int32 `json:"recipients"`

	// pending is the number of recipients whose acknowledgement is still needed
	// (0 once the message is resolved).
	// +optional
	Pending int32 `json:"pending"`

	// acknowledgedBy lists who acknowledged, and when, oldest first; each user once.
	// +optional
	// +listType=map
	// +listMapKey=user
	// +kubebuilder:validation:MaxItems=5000
	AcknowledgedBy []Acknowledgement `json:"acknowledgedBy,omitempty"`

	// reservations hold the acknowledgements admitted but not yet stored: the
	// admission webhook records each one here, with optimistic concurrency, before it
	// admits it, so that a user acknowledges once and a SingleRead message is
	// resolved by exactly one user even when acknowledgements race. The controller
	// releases a reservation once its acknowledgement exists or it expires.
	// +optional
	// +listType=map
	// +listMapKey=user
	// +kubebuilder:validation:MaxItems=1000
	Reservations []AcknowledgementReservation `json:"reservations,omitempty"`

	// notice records the e-mail notice to the recipients (spec.notify Email).
	// +optional
	Notice *NoticeStatus `json:"notice,omitempty"`

	// conditions: Ready, Reconciling, Stalled, Resolved, Notified (spec.notify Email).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CustomerMessage is a notice from the partner to a customer's users, which they must
// acknowledge as its read policy says.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=cmsg,categories=partnerops
// +kubebuilder:printcolumn:name="Customer",type=string,JSONPath=`.spec.customer`
// +kubebuilder:printcolumn:name="Title",type=string,JSONPath=`.spec.title`
// +kubebuilder:printcolumn:name="Policy",type=string,JSONPath=`.spec.readPolicy`
// +kubebuilder:printcolumn:name="Pending",type=integer,JSONPath=`.status.pending`
// +kubebuilder:printcolumn:name="Resolved",type=string,JSONPath=`.status.conditions[?(@.type=="Resolved")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type CustomerMessage struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired state of the message.
	// +required
	Spec CustomerMessageSpec `json:"spec"`

	// status is the observed state of the message.
	// The default makes a new object read observedGeneration 0 < generation, so
	// kstatus (Flux) and Argo CD see it InProgress until the operator reconciles it.
	// +optional
	// +kubebuilder:default={observedGeneration: 0}
	Status CustomerMessageStatus `json:"status,omitempty"`
}

// GetConditions returns the status conditions.
func (m *CustomerMessage) GetConditions() []metav1.Condition { return m.Status.Conditions }

// SetConditions sets the status conditions.
func (m *CustomerMessage) SetConditions(conditions []metav1.Condition) {
	m.Status.Conditions = conditions
}

// +kubebuilder:object:root=true

// CustomerMessageList is a list of CustomerMessages.
type CustomerMessageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CustomerMessage `json:"items"`
}

func init() {
	SchemeBuilder.Register(&CustomerMessage{}, &CustomerMessageList{})
}
