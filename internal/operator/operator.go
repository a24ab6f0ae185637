// Package operator wires the manager: the cache, the controllers, the webhooks and
// the portal. main.go parses flags into Options and calls New; the envtest suites
// call New too, so tests run exactly the wiring that ships.
package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
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
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
	"github.com/partnerops/customer-operator/internal/authz"
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
	// HealthProbeBindAddress serves /healthz and /readyz.
	HealthProbeBindAddress string
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

	// SMTPAddress (host:port), SMTPFrom, SMTPTLS (mandatory|opportunistic|none),
	// and the credential files configure outgoing mail.
	SMTPAddress      string
	SMTPFrom         string
	SMTPTLS          string
	SMTPUsernameFile string
	SMTPPasswordFile string

	// PortalBindAddress serves the invitation pages; PortalURL is how people reach
	// them (the base of invitation links).
	PortalBindAddress string
	PortalURL         string

	// InvitationTTL is how long an invitation link works.
	InvitationTTL time.Duration
	// DefaultMaxProjects caps customers without a CustomerQuota.
	DefaultMaxProjects int32
	// UsernamePrefix is put before spec.email to make a member's default username.
	UsernamePrefix string

	// PartnerCacheTTL is how long a "is this requester a partner" answer is reused.
	PartnerCacheTTL time.Duration

	// Clock is the time source (tests inject a fake one). Real time when nil.
	Clock clock.Clock
}

// DefaultOptions are the defaults of main.go's flags.
func DefaultOptions() Options {
	return Options{
		MetricsBindAddress:     ":8080",
		HealthProbeBindAddress: ":8081",
		Namespace:              "customer-operator-system",
		WebhookPort:            9443,
		SMTPTLS:                "mandatory",
		SMTPFrom:               "customer-operator@localhost",
		PortalBindAddress:      ":8082",
		PortalURL:              "http://localhost:8082",
		InvitationTTL:          168 * time.Hour,
		DefaultMaxProjects:     10,
		PartnerCacheTTL:        10 * time.Second,
	}
}

// Validate reports options that cannot work, naming the flag.
func (o Options) Validate() error {
	var errs []error
	if o.DefaultMaxProjects < 0 {
		errs = append(errs, fmt.Errorf("--default-max-projects must be >= 0, not %d", o.DefaultMaxProjects))
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

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme,
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsBindAddress},
		HealthProbeBindAddress:  opts.HealthProbeBindAddress,
		LeaderElection:          opts.LeaderElect,
		LeaderElectionID:        "customer-operator.partnerops.io",
		LeaderElectionNamespace: opts.Namespace,
		// Every replica serves webhooks and the portal; a new leader takes over at
		// once when the old one steps down on SIGTERM.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: webhook.NewServer(webhook.Options{
			Host:    opts.WebhookHost,
			Port:    opts.WebhookPort,
			CertDir: opts.WebhookCertDir,
		}),
		Cache: cacheOptions(opts),
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}

	ctx := context.Background()
	if err := controllers.SetupIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return nil, fmt.Errorf("registering cache indexes: %w", err)
	}

	if err := (&controllers.CustomerReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("customer-operator"),
		Clock:    opts.Clock,
	}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Customer controller: %w", err)
	}

	partners := &authz.SARChecker{Client: mgr.GetClient(), TTL: opts.PartnerCacheTTL, Now: opts.Clock.Now}
	if err := webhooks.SetupWithManager(mgr, webhooks.Options{
		Reader:   mgr.GetClient(),
		Partners: partners,
	}); err != nil {
		return nil, fmt.Errorf("setting up webhooks: %w", err)
	}

	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return nil, err
	}
	return mgr, nil
}

// cacheOptions keep the informers small: only labelled (project) namespaces are
// cached, and managed fields are stripped from everything.
func cacheOptions(_ Options) cache.Options {
	hasCustomer, _ := labels.NewRequirement(v1alpha1.CustomerLabel, selection.Exists, nil)
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Namespace{}: {Label: labels.NewSelector().Add(*hasCustomer)},
		},
	}
}
