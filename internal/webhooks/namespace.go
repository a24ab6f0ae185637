package webhooks

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
	"github.com/partnerops/customer-operator/internal/access"
	"github.com/partnerops/customer-operator/internal/authz"
	"github.com/partnerops/customer-operator/internal/members"
	"github.com/partnerops/customer-operator/internal/quota"
	"github.com/partnerops/customer-operator/internal/validation"
)

// The project webhook. matchConditions (config/webhook/namespace_webhook_patch.yaml)
// keep system namespaces and the operator's own away from it, so that it can fail
// closed without ever locking the cluster out of them.
//
// +kubebuilder:webhook:path=/validate--v1-namespace,mutating=false,failurePolicy=fail,sideEffects=NoneOnDryRun,groups="",resources=namespaces;namespaces/status;namespaces/finalize,verbs=create;update,versions=v1,name=vnamespace.customers.partnerops.io,admissionReviewVersions=v1,timeoutSeconds=5
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customers,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customers/status,verbs=get;patch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customerquotas,verbs=get;list;watch
// +kubebuilder:rbac:groups=customers.partnerops.io,resources=customermemberships,verbs=get;list;watch

// membershipUsernameIndex indexes the active Admin CustomerMemberships by the
// username they grant (members.Username with --username-prefix), to tell whether a
// requester is an Admin of any customer. Only those: an index entry costs memory
// per membership, and no other membership can let anyone create a project.
const membershipUsernameIndex = "customers.partnerops.io/username"

var namespacesResource = schema.GroupResource{Resource: "namespaces"}

// Metadata a non-partner may put on a project. Labels drive policy (pod security,
// NetworkPolicies and meshes that select namespaces, monitoring, GitOps tracking),
// so only labels known to be harmless are allowed; partners may set anything.
var (
	projectLabelsAllowed = sets.New(
		v1alpha1.CustomerLabel,
		corev1.LabelMetadataName, // set by the API server itself
	)
	projectAnnotationsAllowed = sets.New(
		corev1.LastAppliedConfigAnnotation, // kubectl apply / create --save-config
		"kubernetes.io/description",
	)
)

const podSecurityLabelPrefix = "pod-security.kubernetes.io/"

// ProjectSlots decides project quota (quota.Ledger).
type ProjectSlots interface {
	// Reserve decides and, if admitted, reserves a slot for the namespace.
	Reserve(ctx context.Context, customer string, slot quota.Slot) (quota.Decision, error)
	// Check decides without reserving (dry-run).
	Check(ctx context.Context, customer string, slot quota.Slot) (quota.Decision, error)
}

// NamespaceValidator admits projects: namespaces labelled
// customers.partnerops.io/customer (DESIGN.md, Projects). A CREATE of a project,
// and an UPDATE that adds, changes or removes the label (through namespaces,
// namespaces/status or namespaces/finalize), is admitted only for an existing
// customer that is not being deleted, by a partner or (CREATE only) an active Admin
// of that customer, with no privileged metadata from a non-partner, and within the
// customer's quota, for which a slot is reserved before admitting. Every other
// namespace write passes untouched, except that a customer's Admin cannot use the
// cluster-wide create right the operator gives them for anything but projects.
type NamespaceValidator struct {
	// Cache reads memberships (by index) from the manager's cache.
	Cache client.Reader
	// APIReader reads namespaces as stored, on the rare paths that need it.
	APIReader client.Reader
	// Partners decides who is a partner; asked only when the cache cannot decide.
	Partners authz.PartnerChecker
	// Slots decides quota and reserves slots.
	Slots ProjectSlots
	// UsernamePrefix is --username-prefix.
	UsernamePrefix string
	// RequireProjectPrefix confines a customer's Admins to projects named
	// "<customer>-...": a name like argocd or another customer's globex-web, taken
	// by an Admin first, would later receive what the partner installs or syncs
	// there, with the Admin holding admin rights (and any RoleBinding they made)
	// inside. Partners name namespaces freely.
	RequireProjectPrefix bool
}

var _ admission.Validator[*corev1.Namespace] = &NamespaceValidator{}

// setupNamespaceWebhook registers the project webhook and the cache index it reads.
func setupNamespaceWebhook(mgr ctrl.Manager, opts Options) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &v1alpha1.CustomerMembership{}, membershipUsernameIndex,
		func(o client.Object) []string {
			m := o.(*v1alpha1.CustomerMembership)
			if m.Spec.Role != v1alpha1.RoleAdmin || !members.IsActive(m) {
				return nil
			}
			return []string{members.Username(m, opts.UsernamePrefix)}
		}); err != nil {
		return fmt.Errorf("indexing memberships by username: %w", err)
	}
	grace := opts.ReservationGrace
	if grace <= 0 {
		grace = quota.DefaultGrace
	}
	ledger := &quota.Ledger{
		APIReader:          mgr.GetAPIReader(),
		Client:             mgr.GetClient(),
		Cache:              opts.Reader,
		DefaultMaxProjects: opts.DefaultMaxProjects,
		TTL:                quota.AdmissionTimeout + grace,
		OperatorNamespace:  opts.OperatorNamespace,
		Now:                opts.Now,
	}
	return ctrl.NewWebhookManagedBy(mgr, &corev1.Namespace{}).
		WithValidator(observe[*corev1.Namespace]("namespace", &NamespaceValidator{
			Cache:          opts.Reader,
			APIReader:      mgr.GetAPIReader(),
			Partners:       opts.Partners,
			Slots:          ledger,
			UsernamePrefix: opts.UsernamePrefix,

			RequireProjectPrefix: opts.RequireProjectPrefix,
		})).Complete()
}

// ValidateCreate implements admission.Validator.
func (v *NamespaceValidator) ValidateCreate(ctx context.Context, ns *corev1.Namespace) (admission.Warnings, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	user := req.UserInfo
	customer, labelled := ns.Labels[v1alpha1.CustomerLabel]
	if !labelled {
		return nil, v.validatePlainCreate(ctx, ns, user)
	}
	if err := badCustomerLabel(ns.Name, customer); err != nil {
		return nil, err
	}

	// An Admin creating a plain project is decided from the cache alone; the
	// authorizer is asked only when that is not enough.
	admin, err := v.isAdminOf(ctx, customer, user.Username)
	if err != nil {
		return nil, err
	}
	violations := projectMetadataViolations(ns)
	if v.RequireProjectPrefix {
		nameViolation, err := v.projectNameViolation(ctx, ns.Name, customer)
		if err != nil {
			return nil, err
		}
		if nameViolation != nil {
			violations = append(violations, nameViolation)
		}
	}
	if !admin || len(violations) > 0 {
		partner, err := v.isPartner(ctx, user)
		if err != nil {
			return nil, err
		}
		switch {
		case !partner && !admin:
			return nil, denyNamespace(ns.Name, "%q is not an Admin of customer %q (label %s): only partners and the customer's active Admin members may create its projects",
				user.Username, customer, v1alpha1.CustomerLabel)
		case !partner:
			return nil, denyNamespace(ns.Name, "%s", violations.ToAggregate())
		}
	}
	return nil, v.admitProject(ctx, req, customer, quota.Slot{Namespace: ns.Name}, true)
}

// ValidateUpdate implements admission.Validator. Only a change of the customer label
// is a matter for this webhook: anything else passes at once.
func (v *NamespaceValidator) ValidateUpdate(ctx context.Context, old, ns *corev1.Namespace) (admission.Warnings, error) {
	oldCustomer, wasProject := old.Labels[v1alpha1.CustomerLabel]
	customer, isProject := ns.Labels[v1alpha1.CustomerLabel]
	if wasProject == isProject && oldCustomer == customer {
		return nil, nil
	}
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	partner, err := v.isPartner(ctx, req.UserInfo)
	if err != nil {
		return nil, err
	}
	if !partner {
		// Labelling another team's namespace into a customer, or moving a project to
		// another customer, would take over namespaces and slots: partners only.
		switch {
		case !isProject:
			return nil, denyNamespace(ns.Name, "only a partner may remove label %s from namespace %q (a project of customer %q)",
				v1alpha1.CustomerLabel, ns.Name, oldCustomer)
		case !wasProject:
			return nil, denyNamespace(ns.Name, "only a partner may make the existing namespace %q a project of customer %q (label %s)",
				ns.Name, customer, v1alpha1.CustomerLabel)
		default:
			return nil, denyNamespace(ns.Name, "only a partner may move namespace %q from customer %q to customer %q (label %s)",
				ns.Name, oldCustomer, customer, v1alpha1.CustomerLabel)
		}
	}
	if !isProject {
		return nil, nil
	}
	if err := badCustomerLabel(ns.Name, customer); err != nil {
		return nil, err
	}
	// The old object's version tells the ledger that a cached copy of the namespace
	// as a project of this customer (a label removed or moved and now put back) is
	// out of date, so that it reserves a slot instead of finding one counted.
	return nil, v.admitProject(ctx, req, customer, quota.Slot{Namespace: ns.Name, After: old.ResourceVersion}, false)
}

// ValidateDelete implements admission.Validator; the webhook is not registered for
// DELETE (the Customer's finalizer and counts handle deleted projects).
func (v *NamespaceValidator) ValidateDelete(context.Context, *corev1.Namespace) (admission.Warnings, error) {
	return nil, nil
}

// projectNameViolation checks a project's name against --require-project-prefix:
// it must start with "<customer>-", and not with the prefix of another customer
// whose name starts with this one's (acme's Admin may not take acme-eu-web, the
// name customer acme-eu's projects would have).
func (v *NamespaceValidator) projectNameViolation(ctx context.Context, name, customer string) (*field.Error, error) {
	path := field.NewPath("metadata", "name")
	prefix := customer + "-"
	if !strings.HasPrefix(name, prefix) {
		return field.Invalid(path, name, fmt.Sprintf(
			"a customer's Admins may create only projects named %s<name> (--require-project-prefix); other names are for a partner to create", prefix)), nil
	}
	for i := len(prefix); i < len(name); i++ {
		if name[i] != '-' {
			continue
		}
		other := name[:i]
		err := v.Cache.Get(ctx, client.ObjectKey{Name: other}, &v1alpha1.Customer{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, apierrors.NewInternalError(fmt.Errorf("reading customer %q: %w", other, err))
		}
		return field.Invalid(path, name, fmt.Sprintf(
			"names starting with %s- are for the projects of customer %q (--require-project-prefix); choose another name after %s", other, other, prefix)), nil
	}
	return nil, nil
}

// validatePlainCreate keeps a customer's Admins, whose cluster-wide right to create
// namespaces comes from the operator, to projects: they may not create a namespace
// without the customer label. Anyone else's plain namespaces are not this
// webhook's business.
func (v *NamespaceValidator) validatePlainCreate(ctx context.Context, ns *corev1.Namespace, user authenticationv1.UserInfo) error {
	customers, err := v.adminOf(ctx, user.Username)
	if err != nil || len(customers) == 0 {
		return err
	}
	partner, err := v.isPartner(ctx, user)
	if err != nil || partner {
		return err
	}
	return denyNamespace(ns.Name, "namespace %q has no label %s: a customer's Admins may create only projects, so label it with the customer (%s)",
		ns.Name, v1alpha1.CustomerLabel, strings.Join(customers, ", "))
}

// admitProject decides the quota: it reserves a slot (or, for a dry-run, only
// checks that one is free).
func (v *NamespaceValidator) admitProject(ctx context.Context, req admission.Request, customer string, slot quota.Slot, create bool) error {
	name := slot.Namespace
	slots := v.Slots.Reserve
	if req.DryRun != nil && *req.DryRun {
		slots = v.Slots.Check
	}
	decision, err := slots(ctx, customer, slot)
	if err != nil {
		return apierrors.NewInternalError(fmt.Errorf("could not decide the project quota of customer %q, retry: %w", customer, err))
	}
	if decision.Allowed() {
		return nil
	}
	if create && decision.Outcome == quota.OverQuota {
		// Re-applying a namespace that exists is not a quota matter: admit it, and the
		// API server answers AlreadyExists. Only on this (rare) path is it read.
		exists, err := v.exists(ctx, name)
		if err != nil || exists {
			return err
		}
	}
	if decision.Outcome == quota.TooManyPending {
		return apierrors.NewTooManyRequests(decision.Message(), 1)
	}
	return denyNamespace(name, "%s", decision.Message())
}

// exists reports whether a live namespace of that name exists.
func (v *NamespaceValidator) exists(ctx context.Context, name string) (bool, error) {
	var ns corev1.Namespace
	if err := v.APIReader.Get(ctx, client.ObjectKey{Name: name}, &ns); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, apierrors.NewInternalError(fmt.Errorf("reading namespace %q: %w", name, err))
	}
	return ns.DeletionTimestamp.IsZero(), nil
}

// isAdminOf reports whether username is an active Admin member of customer, by
// the rules that grant Admins their rights (internal/access).
func (v *NamespaceValidator) isAdminOf(ctx context.Context, customer, username string) (bool, error) {
	var list v1alpha1.CustomerMembershipList
	if err := v.Cache.List(ctx, &list, client.MatchingFields{controllers.MembershipCustomerIndex: customer},
		client.UnsafeDisableDeepCopy); err != nil {
		return false, apierrors.NewInternalError(fmt.Errorf("listing the memberships of customer %q: %w", customer, err))
	}
	for _, m := range access.ActiveMembers(list.Items, v.UsernamePrefix) {
		if m.Username == username && m.Role == v1alpha1.RoleAdmin {
			return true, nil
		}
	}
	return false, nil
}

// adminOf returns the customers of which username is an active Admin member.
func (v *NamespaceValidator) adminOf(ctx context.Context, username string) ([]string, error) {
	var list v1alpha1.CustomerMembershipList
	if err := v.Cache.List(ctx, &list, client.MatchingFields{membershipUsernameIndex: username},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("listing the memberships of %q: %w", username, err))
	}
	customers := sets.New[string]()
	for i := range list.Items {
		m := &list.Items[i]
		if m.Spec.Role == v1alpha1.RoleAdmin && members.IsActive(m) {
			customers.Insert(string(m.Spec.Customer))
		}
	}
	return sets.List(customers), nil
}

func (v *NamespaceValidator) isPartner(ctx context.Context, user authenticationv1.UserInfo) (bool, error) {
	partner, err := v.Partners.IsPartner(ctx, user)
	if err != nil {
		return false, apierrors.NewInternalError(err)
	}
	return partner, nil
}

// projectMetadataViolations lists what a non-partner may not put on a project:
// pod-security labels (a customer's Admin must not make a privileged namespace),
// labels and annotations outside the allow-list, owner references and finalizers.
func projectMetadataViolations(ns *corev1.Namespace) field.ErrorList {
	var errs field.ErrorList
	labelsPath := field.NewPath("metadata", "labels")
	for _, key := range sortedKeys(ns.Labels) {
		switch {
		case strings.HasPrefix(key, podSecurityLabelPrefix):
			errs = append(errs, field.Forbidden(labelsPath.Key(key),
				"only partners may set "+podSecurityLabelPrefix+"* labels: a project runs under the pod security the cluster gives it"))
		case !projectLabelsAllowed.Has(key):
			errs = append(errs, field.Forbidden(labelsPath.Key(key),
				"only partners may set labels other than "+strings.Join(sets.List(projectLabelsAllowed), ", ")+" on a project"))
		}
	}
	annotationsPath := field.NewPath("metadata", "annotations")
	for _, key := range sortedKeys(ns.Annotations) {
		if !projectAnnotationsAllowed.Has(key) {
			errs = append(errs, field.Forbidden(annotationsPath.Key(key),
				"only partners may set annotations other than "+strings.Join(sets.List(projectAnnotationsAllowed), ", ")+" on a project"))
		}
	}
	if len(ns.OwnerReferences) > 0 {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "ownerReferences"),
			"only partners may set owner references on a project"))
	}
	if len(ns.Finalizers) > 0 {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "finalizers"),
			"only partners may set finalizers on a project"))
	}
	for i, f := range ns.Spec.Finalizers {
		if f != corev1.FinalizerKubernetes {
			errs = append(errs, field.Forbidden(field.NewPath("spec", "finalizers").Index(i),
				"only partners may set finalizers on a project"))
		}
	}
	return errs
}

// badCustomerLabel refuses a customer label that cannot name a Customer: empty, or
// no DNS-1123 label (a Customer's name is one). Said as such, rather than as "does
// not exist" or "not an Admin of", which would send the user looking for a Customer
// that can never be created.
func badCustomerLabel(name, customer string) error {
	errs := validation.ValidateCustomerName(customer, field.NewPath("metadata", "labels").Key(v1alpha1.CustomerLabel))
	if len(errs) == 0 {
		return nil
	}
	return denyNamespace(name, "%s (the label's value is a Customer's identifier)", errs.ToAggregate())
}

// denyNamespace is a 403 on the namespace whose message is only what was refused
// and why: the API server prefixes it with the webhook's name, and kubectl shows
// "Error from server (Forbidden): admission webhook ... denied the request: <message>".
func denyNamespace(name, format string, args ...any) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusForbidden,
		Reason:  metav1.StatusReasonForbidden,
		Details: &metav1.StatusDetails{Name: name, Kind: namespacesResource.Resource},
		Message: fmt.Sprintf(format, args...),
	}}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
