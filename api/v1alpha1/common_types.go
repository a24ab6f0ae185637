package v1alpha1

// The label, annotation and finalizer names of the API. They are part of the
// contract with users and GitOps repositories: never rename them.
const (
	// CustomerLabel marks a Namespace as a project of the customer it names.
	CustomerLabel = GroupName + "/customer"

	// ResendInvitationAnnotation on a CustomerMembership starts a new invitation
	// round (a new link, the old one dead) whenever its value changes.
	ResendInvitationAnnotation = GroupName + "/resend-invitation"

	// CustomerFinalizer holds a deleted Customer until its projects are gone and
	// what the operator made for it has been removed.
	CustomerFinalizer = GroupName + "/finalizer"

	// GroupName is the API group of these kinds.
	GroupName = "customers.partnerops.io"
)

// CustomerName is a reference to a Customer by its identifier (its metadata.name):
// a DNS-1123 label of at most 63 characters (lower-case letters, digits and '-',
// starting and ending with a letter or digit).
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:XValidation:rule="self.matches(\"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$\")",message="must be a customer identifier: lower-case letters, digits and '-', starting and ending with a letter or digit"
type CustomerName string

// Role is a member's role within a customer. Each maps to a ClusterRole in the
// customer's projects: Admin to admin, Editor to edit, Viewer to view.
// +kubebuilder:validation:Enum=Admin;Editor;Viewer
// +kubebuilder:validation:MaxLength=16
type Role string

const (
	// RoleAdmin administers the customer's projects and may invite colleagues.
	RoleAdmin Role = "Admin"
	// RoleEditor may change workloads in the customer's projects.
	RoleEditor Role = "Editor"
	// RoleViewer may read the customer's projects.
	RoleViewer Role = "Viewer"
)

// Roles lists every Role, highest privilege first.
var Roles = []Role{RoleAdmin, RoleEditor, RoleViewer}

// ClusterRoleName is the ClusterRole a Role is bound to in each project.
func (r Role) ClusterRoleName() string {
	switch r {
	case RoleAdmin:
		return "admin"
	case RoleEditor:
		return "edit"
	case RoleViewer:
		return "view"
	}
	return ""
}
