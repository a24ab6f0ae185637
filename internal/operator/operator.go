// Package operator wires the manager: the cache, the controllers, the webhooks and
// the portal. main.go parses flags into Options and calls New; the envtest suites
// call New too, so tests run exactly the wiring that ships.
package operator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
	"github.com/partnerops/customer-operator/internal/access"
	"github.com/partnerops/customer-operator/internal/authz"
	"github.com/partnerops/customer-operator/internal/certrotation"
	"github.com/partnerops/customer-operator/internal/invitation"
	"github.com/partnerops/customer-operator/internal/mail"
	"github.com/partnerops/customer-operator/internal/portal"
	"github.com/partnerops/customer-operator/internal/quota"
	"github.com/partnerops/customer-operator/internal/webhooks"
)

// Scheme knows the operator's kinds and the built-in ones.
var Scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(Scheme))
	utilruntime.Must(v1alpha1.AddToScheme(Scheme))
}

// Options configure the operator. Flags in main.go map one to one onto them.
type Options struct {
	// MetricsBindAddress serves Prometheus metrics ("0" disables).
	MetricsBindAddress string
	// MetricsSecure serves metrics over HTTPS and lets only scrapers through that
	// authenticate (TokenReview) and may get /metrics (SubjectAccessReview). Off
	// for the local run, where plain HTTP on loopback is what people curl.
	MetricsSecure bool
	// HealthProbeBindAddress serves /healthz and /readyz.
	HealthProbeBindAddress string
	// PprofBindAddress serves net/http/pprof ("" or "0" disables it, the default):
	// for profiling a running manager (docs/benchmarks.md), never exposed by
	// config/.
	PprofBindAddress string
	// ConcurrentReconciles is how many objects each controller reconciles at once
	// (0: DefaultConcurrentReconciles). The membership controller's value is also
	// the bound on invitations a crash can send twice (sends in flight).
	ConcurrentReconciles int
	// LeaderElect makes one replica at a time run the controllers; every replica
	// serves webhooks and the portal.
	LeaderElect bool
	// Namespace is the operator's own namespace: its leader-election Lease and the
	// Secret with the invitation key live there.
	Namespace string

	// WebhookHost, WebhookPort and WebhookCertDir configure the webhook server.
	WebhookHost    string
	WebhookPort    int
	WebhookCertDir string
	// WebhookCertRotation makes the operator issue, rotate and serve its own
	// webhook certificate (internal/certrotation) from the Secret
	// customer-operator-webhook-server-cert, and inject the caBundle. Off: the
	// certificate comes from WebhookCertDir (cert-manager, the local run, envtest).
	WebhookCertRotation bool

	// SMTPAddress (host:port), SMTPFrom, SMTPTLS (mandatory|opportunistic|none),
	// and the credential files configure outgoing mail.
	SMTPAddress string
	SMTPFrom    string
	SMTPTLS     string
	// SMTPUsername is --smtp-username; SMTPUsernameFile and SMTPPasswordFile name
	// files (mail.LoadCredentials).
	SMTPUsername     string
	SMTPUsernameFile string
	SMTPPasswordFile string

	// PortalBindAddress serves the invitation pages; PortalURL is how people reach
	// them (the base of invitation links). There is no default: while it is empty,
	// invitations are held back (a link to the manager's own localhost would reach
	// nobody, and the mail would count as sent).
	PortalBindAddress string
	PortalURL         string
	// PortalTrustedProxies are the reverse proxies (the ingress controller) whose
	// X-Forwarded-For names the client the portal rate-limits; without them every
	// client behind the proxy shares the proxy's limit.
	PortalTrustedProxies []netip.Prefix

	// InvitationTTL is how long an invitation link works.
	InvitationTTL time.Duration
	// DefaultMaxProjects caps customers without a CustomerQuota.
	DefaultMaxProjects int32
	// ReservationGrace is added to the admission timeout to make the lifetime of
	// the project slot an admitted namespace create holds until the namespace
	// exists (docs/quota.md). Default quota.DefaultGrace: 5s + 55s is
	// kube-apiserver's default --request-timeout.
	ReservationGrace time.Duration
	// UsernamePrefix is put before spec.email to make a member's default username.
	UsernamePrefix string
	// RequireProjectPrefix confines a customer's Admins to projects named
	// "<customer>-...": other names stay the partner's to give out.
	RequireProjectPrefix bool
	// MaxMembershipsPerCustomer caps the memberships a customer's Admins may
	// create (0: no cap); partners are not capped.
	MaxMembershipsPerCustomer int
	// InvitationMinInterval spaces out invitations to one address for one
	// customer (resends, a membership deleted and created again); 0: no limit.
	InvitationMinInterval time.Duration
	// MaxInvitationsPerCustomerPerHour lets a customer's invitations go out that
	// many at once and that many an hour after that (0: no limit).
	MaxInvitationsPerCustomerPerHour int

	// PartnerCacheTTL is how long a "is this requester a partner" answer is reused.
	PartnerCacheTTL time.Duration

	// Clock is the time source (tests inject a fake one). Real time when nil.
	Clock clock.Clock

	// SkipControllerNameValidation lets a process build a second manager with the
	// same controllers after the first stopped: tests that restart the operator
	// in-process. controller-runtime otherwise refuses the duplicate names.
	SkipControllerNameValidation bool
}

// DefaultConcurrentReconciles is the default of --concurrent-reconciles.
const DefaultConcurrentReconciles = 8

// DefaultOptions are the defaults of main.go's flags.
func DefaultOptions() Options {
	return Options{
		MetricsBindAddress:     ":8080",
		HealthProbeBindAddress: ":8081",
		ConcurrentReconciles:   DefaultConcurrentReconciles,
		Namespace:              "customer-operator-system",
		WebhookPort:            9443,
		SMTPTLS:                "mandatory",
		SMTPFrom:               "customer-operator@localhost",
		PortalBindAddress:      ":8082",
		InvitationTTL:          168 * time.Hour,
		DefaultMaxProjects:     10,
		ReservationGrace:       quota.DefaultGrace,
		PartnerCacheTTL:        10 * time.Second,

		MaxMembershipsPerCustomer: DefaultMaxMembershipsPerCustomer,
		InvitationMinInterval:     5 * time.Minute,

		MaxInvitationsPerCustomerPerHour: DefaultMaxInvitationsPerCustomerPerHour,
	}
}

// DefaultMaxMembershipsPerCustomer is --max-memberships-per-customer's default:
// far more people than one customer account has, far fewer than would make its
// RBAC objects (one ClusterRole names every membership) large or its Admins a
// mass mailer.
const DefaultMaxMembershipsPerCustomer = 500

// DefaultMaxInvitationsPerCustomerPerHour is
// --max-invitations-per-customer-per-hour's default, twice
// DefaultMaxMembershipsPerCustomer: a partner's onboarding of a customer's people
// goes out at once (test/faults sends 500 for one customer), an Admin who keeps
// replacing memberships with new addresses mails at most that many an hour.
const DefaultMaxInvitationsPerCustomerPerHour = 2 * DefaultMaxMembershipsPerCustomer

// MaxMaxInvitationsPerCustomerPerHour is the largest
// --max-invitations-per-customer-per-hour.
const MaxMaxInvitationsPerCustomerPerHour = 100000

// Validate reports options that cannot work, naming the flag.
func (o Options) Validate() error {
	var errs []error
	if o.DefaultMaxProjects < 0 {
		errs = append(errs, fmt.Errorf("--default-max-projects must be >= 0, not %d", o.DefaultMaxProjects))
	}
	if o.ReservationGrace < 0 {
		errs = append(errs, fmt.Errorf("the reservation grace period must not be negative, not %s", o.ReservationGrace))
	}
	if o.ConcurrentReconciles < 0 {
		errs = append(errs, fmt.Errorf("--concurrent-reconciles must be positive, not %d", o.ConcurrentReconciles))
	}
	if o.InvitationTTL <= 0 {
		errs = append(errs, fmt.Errorf("--invitation-ttl must be positive, not %s", o.InvitationTTL))
	}
	switch o.SMTPTLS {
	case "mandatory", "opportunistic", "none":
	default:
		errs = append(errs, fmt.Errorf("--smtp-tls must be mandatory, opportunistic or none, not %q", o.SMTPTLS))
	}
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace must name the operator's namespace"))
	}
	if o.InvitationMinInterval < 0 {
		errs = append(errs, fmt.Errorf("--invitation-min-interval must not be negative (0: no limit), not %s", o.InvitationMinInterval))
	}
	if o.MaxInvitationsPerCustomerPerHour < 0 || o.MaxInvitationsPerCustomerPerHour > MaxMaxInvitationsPerCustomerPerHour {
		errs = append(errs, fmt.Errorf("--max-invitations-per-customer-per-hour must be from 0 (no limit) to %d, not %d",
			MaxMaxInvitationsPerCustomerPerHour, o.MaxInvitationsPerCustomerPerHour))
	}
	if o.MaxMembershipsPerCustomer < 0 {
		errs = append(errs, fmt.Errorf("--max-memberships-per-customer must be >= 0 (0: no cap), not %d", o.MaxMembershipsPerCustomer))
	}
	if o.PortalURL != "" {
		if _, err := invitation.Link(o.PortalURL, "x"); err != nil {
			errs = append(errs, fmt.Errorf("--portal-url: %w", err))
		}
	}
	return errors.Join(errs...)
}

// New builds the manager with every controller, webhook and server registered.
func New(cfg *rest.Config, opts Options) (ctrl.Manager, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.ConcurrentReconciles == 0 {
		opts.ConcurrentReconciles = DefaultConcurrentReconciles
	}

	var rotator *certrotation.Rotator
	var webhookTLS []func(*tls.Config)
	if opts.WebhookCertRotation {
		// Secrets and webhook configurations are not cached: read them directly.
		direct, err := client.New(cfg, client.Options{Scheme: Scheme})
		if err != nil {
			return nil, fmt.Errorf("creating a client for certificate rotation: %w", err)
		}
		rotator, err = certrotation.New(certrotation.Options{
			Client:             direct,
			Namespace:          opts.Namespace,
			ValidatingWebhooks: []string{certrotation.DefaultValidatingWebhookConfName},
			MutatingWebhooks:   []string{certrotation.DefaultMutatingWebhookConfName},
			Clock:              opts.Clock,
		})
		if err != nil {
			return nil, err
		}
		webhookTLS = append(webhookTLS, rotator.TLSOption)
	}
	metricsOpts := metricsserver.Options{BindAddress: opts.MetricsBindAddress}
	if opts.MetricsSecure {
		metricsOpts.SecureServing = true
		metricsOpts.FilterProvider = authz.MetricsFilter
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme,
		Metrics:                 metricsOpts,
		HealthProbeBindAddress:  opts.HealthProbeBindAddress,
		PprofBindAddress:        opts.PprofBindAddress,
		LeaderElection:          opts.LeaderElect,
		LeaderElectionID:        "customer-operator.partnerops.io",
		LeaderElectionNamespace: opts.Namespace,
		// Every replica serves webhooks and the portal; a new leader takes over at
		// once when the old one steps down on SIGTERM.
		LeaderElectionReleaseOnCancel: true,
		// The runnables get this long to end after SIGTERM: the portal first (up to
		// portal.ShutdownTimeout), then the controllers, whose mail out is finished
		// and recorded within controllers.StoppingGrace; the lease is released after
		// them. config/manager's grace period (40 s) covers the preStop sleep (5 s)
		// plus this.
		GracefulShutdownTimeout: &gracefulShutdown,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    opts.WebhookHost,
			Port:    opts.WebhookPort,
			CertDir: opts.WebhookCertDir,
			TLSOpts: webhookTLS,
		}),
		Cache: cacheOptions(opts),
		Controller: config.Controller{
			SkipNameValidation:      &opts.SkipControllerNameValidation,
			MaxConcurrentReconciles: opts.ConcurrentReconciles,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}

	ctx := context.Background()
	if err := controllers.SetupIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return nil, fmt.Errorf("registering cache indexes: %w", err)
	}

	if err := (&controllers.CustomerReconciler{
		APIReader: mgr.GetAPIReader(),
		Client:    mgr.GetClient(),
		Recorder:  boundedRecorder{mgr.GetEventRecorder("customer-operator")},
		Clock:     opts.Clock,

		OperatorNamespace:  opts.Namespace,
		DefaultMaxProjects: opts.DefaultMaxProjects,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Customer controller: %w", err)
	}
	if err := (&controllers.CustomerQuotaReconciler{
		Client:            mgr.GetClient(),
		Recorder:          boundedRecorder{mgr.GetEventRecorder("customer-operator")},
		OperatorNamespace: opts.Namespace,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the CustomerQuota controller: %w", err)
	}

	// One sender (one SMTP connection pool) for invitations and message notices,
	// counted whatever it is, so that the mail alerts see every failure.
	smtpSender, err := newSender(opts)
	if err != nil {
		return nil, err
	}
	sender := mail.WithMetrics(smtpSender)

	if err := (&controllers.CustomerMessageReconciler{
		Client:         mgr.GetClient(),
		Recorder:       boundedRecorder{mgr.GetEventRecorder("customer-operator")},
		Clock:          opts.Clock,
		UsernamePrefix: opts.UsernamePrefix,
		Sender:         sender,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the CustomerMessage controller: %w", err)
	}
	if err := (&controllers.MessageAcknowledgementReconciler{
		Client: mgr.GetClient(),
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the MessageAcknowledgement controller: %w", err)
	}

	if err := setupMemberships(ctx, mgr, cfg, opts, sender); err != nil {
		return nil, err
	}

	partners := &authz.SARChecker{Client: mgr.GetClient(), TTL: opts.PartnerCacheTTL, Now: opts.Clock.Now}
	if err := webhooks.SetupWithManager(mgr, webhooks.Options{
		Reader:         mgr.GetClient(),
		Partners:       partners,
		UsernamePrefix: opts.UsernamePrefix,
		Now:            opts.Clock.Now,

		DefaultMaxProjects: opts.DefaultMaxProjects,
		ReservationGrace:   opts.ReservationGrace,
		OperatorNamespace:  opts.Namespace,

		RequireProjectPrefix:      opts.RequireProjectPrefix,
		MaxMembershipsPerCustomer: opts.MaxMembershipsPerCustomer,
	}); err != nil {
		return nil, fmt.Errorf("setting up webhooks: %w", err)
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return nil, err
	}
	// Every replica answers admission and the portal from its cache, leader or not.
	// A standby runs no controller, so nothing else would start the informers of the
	// kinds that only controllers watch: without this, the first webhook call on a
	// standby to read a Customer or a CustomerQuota started that informer and waited
	// for its whole LIST, inside the API server's 5 s admission timeout.
	servedFromCache := []client.Object{
		&v1alpha1.Customer{}, &v1alpha1.CustomerQuota{}, &v1alpha1.CustomerMembership{},
		&v1alpha1.CustomerMessage{}, &v1alpha1.MessageAcknowledgement{}, &corev1.Namespace{},
	}
	var informers []cache.Informer
	for _, obj := range servedFromCache {
		informer, err := mgr.GetCache().GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return nil, fmt.Errorf("starting the informer of %T: %w", obj, err)
		}
		informers = append(informers, informer)
	}
	// Not ready before those informers have synced: the webhook server listens
	// before they have listed, and a call routed to a replica whose informers have
	// not waits for them (a full LIST at 10,000 customers takes seconds). Only
	// these: an informer the leader's controllers start later (RBAC) has no part in
	// admission, and one that could not sync must not empty the webhook Service.
	if err := mgr.AddReadyzCheck("informers", informersSyncedCheck(informers)); err != nil {
		return nil, err
	}
	if rotator != nil {
		// Every replica, leader or not; not ready until the API server trusts it.
		if err := mgr.Add(rotator); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("webhook-certificate", rotator.ReadyCheck); err != nil {
			return nil, err
		}
	}
	if closer, ok := smtpSender.(io.Closer); ok {
		// QUIT the pooled SMTP connections once the controllers have stopped.
		return closeAfterStop{Manager: mgr, closer: closer}, nil
	}
	return mgr, nil
}

// gracefulShutdown is the manager's GracefulShutdownTimeout (controller-runtime's
// default, set so that controllers.StoppingGrace can be checked against it).
var gracefulShutdown = 30 * time.Second

// informersSyncedCheck is a readiness check that passes once every one of
// informers has synced; it does not wait.
func informersSyncedCheck(informers []cache.Informer) healthz.Checker {
	return func(*http.Request) error {
		for _, informer := range informers {
			if !informer.HasSynced() {
				return errors.New("the informers the webhooks and the portal read have not synced yet")
			}
		}
		return nil
	}
}

// cacheOptions keep the informers small: only labelled (project) namespaces are
// cached, and stripForCache takes from every object what no reader uses.
func cacheOptions(_ Options) cache.Options {
	hasCustomer, _ := labels.NewRequirement(v1alpha1.CustomerLabel, selection.Exists, nil)
	managedByOperator := labels.SelectorFromSet(labels.Set{access.ManagedByLabel: access.ManagedByValue})
	resync := controllers.ResyncPeriod
	return cache.Options{
		// Explicit, because the membership controller relies on it to come back to
		// invitations that expire beyond controllers.ExpiryHorizon.
		SyncPeriod:       &resync,
		DefaultTransform: stripForCache,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Namespace{}: {Label: labels.NewSelector().Add(*hasCustomer)},
			// Only the RBAC the operator made (the access controller's), not the
			// cluster's: reading other RBAC through the cache finds nothing.
			&rbacv1.RoleBinding{}:        {Label: managedByOperator},
			&rbacv1.ClusterRole{}:        {Label: managedByOperator},
			&rbacv1.ClusterRoleBinding{}: {Label: managedByOperator},
		},
	}
}

// lastAppliedAnnotation is where client-side `kubectl apply` (and Argo CD without
// server-side apply) keeps a full copy of the applied object.
const lastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration"

// stripForCache drops from every cached object what no reader of the cache uses:
// managed fields, the last-applied copy of the object (which roughly doubles the
// size of objects applied client-side from Git), and, on the operator's own kinds,
// every label and annotation outside its own prefix (GitOps tools' tracking
// labels and annotations, kustomize's common labels: the operator reads none of
// them from its kinds, and selects none of its kinds by label). The controllers
// write with patches computed against their cached copy (and server-side apply
// for RBAC), so what is not in the cache is never written back, nor removed. What
// is kept shares the strings every object spells the same way (internShared).
func stripForCache(in any) (any, error) {
	obj, err := meta.Accessor(in)
	if err != nil {
		return in, nil
	}
	// Checked for nil first: kubernetes/kubernetes#124337.
	if obj.GetManagedFields() != nil {
		obj.SetManagedFields(nil)
	}
	if ownKind(in) {
		obj.SetLabels(keepOwn(obj.GetLabels()))
		obj.SetAnnotations(keepOwn(obj.GetAnnotations()))
	} else if annotations := obj.GetAnnotations(); annotations[lastAppliedAnnotation] != "" {
		kept := make(map[string]string, len(annotations)-1)
		for k, v := range annotations {
			if k != lastAppliedAnnotation {
				kept[k] = v
			}
		}
		if len(kept) == 0 {
			kept = nil
		}
		obj.SetAnnotations(kept)
	}
	internShared(obj)
	return in, nil
}

// ownKind tells the operator's own kinds from the Namespaces and RBAC it caches,
// whose labels it does read.
func ownKind(in any) bool {
	switch in.(type) {
	case *v1alpha1.Customer, *v1alpha1.CustomerQuota, *v1alpha1.CustomerMembership,
		*v1alpha1.CustomerMessage, *v1alpha1.MessageAcknowledgement:
		return true
	}
	return false
}

// ownPrefix is where the operator's labels and annotations live
// (customers.partnerops.io/resend-invitation, …).
const ownPrefix = v1alpha1.GroupName + "/"

// keepOwn returns m without the keys outside ownPrefix: m itself when nothing
// goes, nil when nothing stays.
func keepOwn(m map[string]string) map[string]string {
	foreign := 0
	for k := range m {
		if !strings.HasPrefix(k, ownPrefix) {
			foreign++
		}
	}
	switch {
	case foreign == 0:
		return m
	case foreign == len(m):
		return nil
	}
	kept := make(map[string]string, len(m)-foreign)
	for k, v := range m {
		if strings.HasPrefix(k, ownPrefix) {
			kept[k] = v
		}
	}
	return kept
}

// setupMemberships wires the membership side: the invitation key (read, or created
// by the first replica, before anything uses it), the membership controller (with
// the shared mail sender), the access controller, and the invitation portal.
func setupMemberships(ctx context.Context, mgr ctrl.Manager, cfg *rest.Config, opts Options, sender mail.Sender) error {
	// The cache is not running yet, and Secrets are not cached at all.
	direct, err := client.New(cfg, client.Options{Scheme: Scheme})
	if err != nil {
		return fmt.Errorf("creating a client for the invitation key: %w", err)
	}
	keyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	key, err := invitation.EnsureKey(keyCtx, direct, opts.Namespace, invitation.DefaultKeySecretName)
	if err != nil {
		return err
	}

	if err := (&controllers.CustomerMembershipReconciler{
		Client:         mgr.GetClient(),
		APIReader:      mgr.GetAPIReader(),
		Recorder:       boundedRecorder{mgr.GetEventRecorder("customer-operator")},
		Clock:          opts.Clock,
		Sender:         sender,
		Links:          controllers.TokenLinks{Key: key, PortalURL: opts.PortalURL},
		InvitationTTL:  opts.InvitationTTL,
		UsernamePrefix: opts.UsernamePrefix,

		MaxConcurrentReconciles: opts.ConcurrentReconciles,
		Recent: &controllers.RecentInvitations{
			Interval:           opts.InvitationMinInterval,
			PerCustomerPerHour: opts.MaxInvitationsPerCustomerPerHour,
		},
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the CustomerMembership controller: %w", err)
	}
	if err := (&controllers.AccessReconciler{
		Client:            mgr.GetClient(),
		APIReader:         mgr.GetAPIReader(),
		UsernamePrefix:    opts.UsernamePrefix,
		OperatorNamespace: opts.Namespace,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the access controller: %w", err)
	}

	// The acceptance page, on its own listener, on every replica.
	server, err := portal.New(portal.Options{
		BindAddress:    opts.PortalBindAddress,
		Key:            key,
		Store:          &portal.ClientStore{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader()},
		Clock:          opts.Clock,
		TrustedProxies: opts.PortalTrustedProxies,
	})
	if err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("portal", server.ListeningCheck); err != nil {
		return err
	}
	return mgr.Add(server)
}

// newSender is the SMTP sender of --smtp-*. Without --smtp-address every send
// fails with an error that says so, which memberships show in status (Invited=False,
// SendFailed) and retry, so a forgotten flag is visible rather than fatal.
func newSender(opts Options) (mail.Sender, error) {
	if opts.SMTPAddress == "" {
		return mail.SenderFunc(func(context.Context, mail.Message) error {
			return errors.New("no SMTP server configured: set --smtp-address (or $SMTP_ADDRESS)")
		}), nil
	}
	username, password, err := mail.LoadCredentials(opts.SMTPUsername, opts.SMTPUsernameFile, opts.SMTPPasswordFile)
	if err != nil {
		return nil, err
	}
	sender, err := mail.NewSMTPSender(mail.Config{
		Address:  opts.SMTPAddress,
		From:     opts.SMTPFrom,
		TLS:      mail.TLSPolicy(opts.SMTPTLS),
		Username: username,
		Password: password,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring the SMTP sender: %w", err)
	}
	return sender, nil
}

// closeAfterStop is the manager, with a Start that closes the mail sender (QUIT
// on its pooled SMTP connections, after the sends in flight) once the manager has
// stopped. Not a runnable: the manager stops those that need no leader election
// before the controllers, whose reconciles in flight would then fail to send
// ("SMTP sender is closed") and record SendFailed on the way out.
type closeAfterStop struct {
	ctrl.Manager
	closer io.Closer
}

func (m closeAfterStop) Start(ctx context.Context) error {
	err := m.Manager.Start(ctx)
	if closeErr := m.closer.Close(); closeErr != nil {
		// The mails were sent; only the goodbye failed (a server already gone).
		m.GetLogger().Error(closeErr, "Closing the SMTP connections")
	}
	return err
}

// MaxDefaultMaxProjects is the largest --default-max-projects: the same bound as
// a CustomerQuota's spec.maxProjects.
const MaxDefaultMaxProjects = 100000

// ParseDefaultMaxProjects reads --default-max-projects: a whole number from 0 to
// MaxDefaultMaxProjects. The error says what is wanted; the flag package names
// the flag and the value.
func ParseDefaultMaxProjects(value string) (int32, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 32)
	if err != nil || n < 0 || n > MaxDefaultMaxProjects {
		return 0, fmt.Errorf("want a whole number from 0 to %d, as a CustomerQuota's spec.maxProjects", MaxDefaultMaxProjects)
	}
	return int32(n), nil
}

// ParseTrustedProxies reads --portal-trusted-proxies: comma-separated CIDRs or
// single addresses (a /32 or /128).
func ParseTrustedProxies(value string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(value, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if prefix, err := netip.ParsePrefix(item); err == nil {
			out = append(out, prefix.Masked())
			continue
		}
		addr, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR (10.0.0.0/8) nor an IP address", item)
		}
		out = append(out, netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()))
	}
	return out, nil
}
