package v1alpha1

// Condition types shared by every kind. They follow kstatus' conventions so that
// `kubectl wait --for=condition=Ready`, Flux (kstatus) and Argo CD read health alike.
const (
	// ReadyCondition is True when the operator has done its part for the current
	// generation. A person's pending action (accepting an invitation, acknowledging a
	// message) does not hold it back: that has its own condition.
	ReadyCondition = "Ready"

	// ReconcilingCondition is True while the operator works on a newer generation.
	// It is removed, never set to False.
	ReconcilingCondition = "Reconciling"

	// StalledCondition is True when the operator cannot progress without a change
	// (a bad reference, a permanent error). It is removed, never set to False.
	StalledCondition = "Stalled"
)

// Condition types of single kinds.
const (
	// InvitedCondition (CustomerMembership) is True once the invitation e-mail of the
	// current round was handed to the SMTP server; False with the reason while it cannot be.
	InvitedCondition = "Invited"

	// AcceptedCondition (CustomerMembership) is True once the person accepted the
	// invitation, or at once for invitation None.
	AcceptedCondition = "Accepted"

	// WithinQuotaCondition (CustomerQuota) is False when the customer has more
	// projects than spec.maxProjects allows (after the quota was lowered).
	WithinQuotaCondition = "WithinQuota"

	// ResolvedCondition (CustomerMessage) is True once the message's read policy is
	// satisfied.
	ResolvedCondition = "Resolved"

	// NotifiedCondition (CustomerMessage with spec.notify Email) is True once every
	// recipient was sent the e-mail notice; False with the reason while some are not.
	NotifiedCondition = "Notified"
)

// Condition reasons. Reasons are CamelCase and stable: alerts and scripts match them.
const (
	// ReconciledReason: the operator has done its part for the current generation.
	ReconciledReason = "Reconciled"
	// ProgressingReason: the operator is working on a newer generation.
	ProgressingReason = "Progressing"
	// DeletingReason: the object is being deleted and its clean-up is under way.
	DeletingReason = "Deleting"
	// ReconcileErrorReason: a transient error; the operator retries with backoff.
	ReconcileErrorReason = "ReconcileError"

	// CustomerNotFoundReason: the referenced Customer does not exist; nothing is granted.
	CustomerNotFoundReason = "CustomerNotFound"
	// CustomerDeletingReason: the referenced Customer is being deleted.
	CustomerDeletingReason = "CustomerDeleting"
	// MessageNotFoundReason: the referenced CustomerMessage does not exist.
	MessageNotFoundReason = "MessageNotFound"
	// DuplicateReason: an older object already covers the same key (a duplicate that
	// raced past admission); this one grants or counts nothing.
	DuplicateReason = "Duplicate"
	// HasProjectsReason: a deleted Customer waits for its projects to be deleted.
	HasProjectsReason = "HasProjects"

	// InvitationSentReason: the invitation e-mail of the current round was sent.
	InvitationSentReason = "InvitationSent"
	// InvitationPendingReason: the invitation e-mail is about to be sent.
	InvitationPendingReason = "InvitationPending"
	// SendFailedReason: the SMTP server refused or could not be reached; retried with backoff.
	SendFailedReason = "SendFailed"
	// PortalURLNotSetReason: no --portal-url is set, so invitations are held back
	// until the manager runs with one.
	PortalURLNotSetReason = "PortalURLNotSet"
	// InvitationNotRequiredReason: invitation None sends no e-mail.
	InvitationNotRequiredReason = "InvitationNotRequired"
	// AwaitingAcceptanceReason: the invitation was sent and waits for the person.
	AwaitingAcceptanceReason = "AwaitingAcceptance"
	// InvitationExpiredReason: the invitation link expired before it was accepted;
	// change the resend-invitation annotation to send a new one.
	InvitationExpiredReason = "InvitationExpired"
	// AcceptedReason: the person accepted the invitation.
	AcceptedReason = "InvitationAccepted"
	// AddedDirectlyReason: invitation None: active without an invitation.
	AddedDirectlyReason = "AddedDirectly"
	// GrantingAccessReason: the membership is active and its RBAC is being applied.
	GrantingAccessReason = "GrantingAccess"

	// WithinQuotaReason: used <= max.
	WithinQuotaReason = "WithinQuota"
	// OverQuotaReason: used > max; new projects are refused, nothing is deleted.
	OverQuotaReason = "OverQuota"

	// AwaitingAcknowledgementReason: some recipients have not acknowledged yet.
	AwaitingAcknowledgementReason = "AwaitingAcknowledgement"
	// AcknowledgedReason: the read policy is satisfied.
	AcknowledgedReason = "Acknowledged"
	// NoRecipientsReason: the message has no recipients (yet).
	NoRecipientsReason = "NoRecipients"
	// NoticeSentReason: every recipient was sent the e-mail notice.
	NoticeSentReason = "NoticeSent"
	// NoticePendingReason: some recipients are still to be sent the e-mail notice.
	NoticePendingReason = "NoticePending"
	// NoticeLimitReachedReason: status.notice.sent is full, so the recipients after
	// its first 1000 addresses get no e-mail notice.
	NoticeLimitReachedReason = "NoticeLimitReached"
	// NoticeRefusedReason: every recipient was tried, and the mail servers of some
	// refused the notice for good (status.notice.refused); they are not tried again.
	NoticeRefusedReason = "NoticeRefused"
)
