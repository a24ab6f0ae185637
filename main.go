/*
Copyright 2026 The customer-operator Authors.

Licensed under the Apache License, Version 2.0.
*/

// Command manager runs customer-operator: the controllers, the admission webhooks
// and the invitation portal.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/partnerops/customer-operator/internal/memlimit"
	"github.com/partnerops/customer-operator/internal/operator"
)

func main() {
	opts := operator.DefaultOptions()
	flag.StringVar(&opts.MetricsBindAddress, "metrics-bind-address", opts.MetricsBindAddress,
		`The address the metrics endpoint binds to ("0" disables it).`)
	flag.BoolVar(&opts.MetricsSecure, "metrics-secure", opts.MetricsSecure,
		"Serve metrics over HTTPS to authenticated and authorized scrapers only (TokenReview, SubjectAccessReview).")
	flag.StringVar(&opts.HealthProbeBindAddress, "health-probe-bind-address", opts.HealthProbeBindAddress,
		"The address the /healthz and /readyz endpoints bind to.")
	flag.StringVar(&opts.PprofBindAddress, "pprof-bind-address", opts.PprofBindAddress,
		`The address net/http/pprof binds to ("" or "0" disables it; keep it on loopback).`)
	flag.IntVar(&opts.ConcurrentReconciles, "concurrent-reconciles", opts.ConcurrentReconciles,
		"How many objects each controller reconciles at once; for memberships also the most invitations a crash can send twice.")
	flag.BoolVar(&opts.LeaderElect, "leader-elect", opts.LeaderElect,
		"Run the controllers in one replica at a time (every replica serves webhooks and the portal).")
	flag.StringVar(&opts.Namespace, "namespace", envOr("POD_NAMESPACE", opts.Namespace),
		"The operator's own namespace (leader election, invitation key Secret). Defaults to $POD_NAMESPACE.")
	flag.StringVar(&opts.WebhookHost, "webhook-host", opts.WebhookHost, "The address the webhook server binds to.")
	flag.IntVar(&opts.WebhookPort, "webhook-port", opts.WebhookPort, "The port the webhook server listens on.")
	flag.StringVar(&opts.WebhookCertDir, "webhook-cert-dir", opts.WebhookCertDir,
		"The directory with the webhook server's tls.crt and tls.key.")
	flag.BoolVar(&opts.WebhookCertRotation, "webhook-cert-rotation", envBool("WEBHOOK_CERT_ROTATION", opts.WebhookCertRotation),
		"Issue and rotate the webhook certificate in the Secret customer-operator-webhook-server-cert and inject the "+
			"caBundle, instead of reading --webhook-cert-dir. Defaults to $WEBHOOK_CERT_ROTATION (off when unset).")
	flag.StringVar(&opts.SMTPAddress, "smtp-address", envOr("SMTP_ADDRESS", opts.SMTPAddress),
		"The SMTP server (host:port) invitations are sent through. Defaults to $SMTP_ADDRESS.")
	flag.StringVar(&opts.SMTPFrom, "smtp-from", envOr("SMTP_FROM", opts.SMTPFrom), "The From address of mails.")
	flag.StringVar(&opts.SMTPTLS, "smtp-tls", opts.SMTPTLS,
		"TLS policy towards the SMTP server: mandatory (STARTTLS required), opportunistic, or none.")
	flag.StringVar(&opts.SMTPUsername, "smtp-username", opts.SMTPUsername,
		"The SMTP username (not a secret). Or --smtp-username-file; with neither, $SMTP_USERNAME.")
	flag.StringVar(&opts.SMTPUsernameFile, "smtp-username-file", opts.SMTPUsernameFile,
		"A file holding the SMTP username (else --smtp-username or $SMTP_USERNAME). A missing file counts as unset.")
	flag.StringVar(&opts.SMTPPasswordFile, "smtp-password-file", opts.SMTPPasswordFile,
		"A file holding the SMTP password (else $SMTP_PASSWORD); never a flag value. A missing file counts as unset "+
			"(an optional key of a mounted Secret).")
	flag.StringVar(&opts.PortalBindAddress, "portal-bind-address", opts.PortalBindAddress,
		"The address the invitation portal binds to.")
	// Trimmed: a Secret key made with --from-file usually ends in a newline.
	flag.StringVar(&opts.PortalURL, "portal-url", strings.TrimSpace(envOr("PORTAL_URL", opts.PortalURL)),
		"The portal's external URL: invitation links are <portal-url>/invitations/<token>. Defaults to $PORTAL_URL; "+
			"while neither is set, invitations are held back.")
	flag.Func("portal-trusted-proxies",
		"Comma-separated CIDRs or addresses of the reverse proxies (the ingress controller's pods) in front of the portal: "+
			"behind them the portal rate-limits the client X-Forwarded-For names, not the proxy. Empty: the TCP peer is the client.",
		func(value string) error {
			proxies, err := operator.ParseTrustedProxies(value)
			opts.PortalTrustedProxies = append(opts.PortalTrustedProxies, proxies...)
			return err
		})
	flag.DurationVar(&opts.InvitationTTL, "invitation-ttl", opts.InvitationTTL, "How long an invitation link works.")
	flag.DurationVar(&opts.InvitationMinInterval, "invitation-min-interval", opts.InvitationMinInterval,
		"Mail one address at most one invitation per this interval for a customer, however often it is re-sent or its membership re-created; 0: no limit.")
	flag.IntVar(&opts.MaxInvitationsPerCustomerPerHour, "max-invitations-per-customer-per-hour", opts.MaxInvitationsPerCustomerPerHour,
		fmt.Sprintf("Let a customer's invitation e-mails go out at most this many at once and this many an hour after that (up to %d); 0: no limit.",
			operator.MaxMaxInvitationsPerCustomerPerHour))
	flag.Func("default-max-projects",
		fmt.Sprintf("The project quota of a customer without a CustomerQuota: 0 to %d (default %d).",
			operator.MaxDefaultMaxProjects, opts.DefaultMaxProjects),
		func(value string) (err error) {
			opts.DefaultMaxProjects, err = operator.ParseDefaultMaxProjects(value)
			return err
		})
	flag.BoolVar(&opts.RequireProjectPrefix, "require-project-prefix", opts.RequireProjectPrefix,
		"Let a customer's Admins create only projects named <customer>-<name> (partners name namespaces freely); config/manager sets it.")
	flag.IntVar(&opts.MaxMembershipsPerCustomer, "max-memberships-per-customer", opts.MaxMembershipsPerCustomer,
		"The most memberships a customer may have for its Admins to create another (each is an invitation e-mail); 0: no cap. Partners are not capped.")
	flag.StringVar(&opts.UsernamePrefix, "username-prefix", opts.UsernamePrefix,
		"Put before spec.email to make a member's Kubernetes username (match your authenticator's prefix).")
	memoryLimitRatio := 0.9
	flag.Float64Var(&memoryLimitRatio, "memory-limit-ratio", memoryLimitRatio,
		"Set the Go runtime's soft memory limit to this share of the container's memory limit, read again every 30s (0 disables; $GOMEMLIMIT wins).")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()

	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	// API request latency by verb, as Kubernetes' own controllers export it: what
	// the admission webhook and the controllers wait for (docs/benchmarks.md).
	metrics.RegisterRESTClientMetrics(metrics.MetricRequestLatency)
	setupLog := ctrl.Log.WithName("setup")
	ctx := ctrl.SetupSignalHandler()
	softLimit, why, err := memlimit.Apply(ctx, memoryLimitRatio, ctrl.Log.WithName("memlimit"))
	if err != nil {
		setupLog.Error(err, "Unable to set the memory limit")
		os.Exit(2)
	}
	setupLog.Info("Go memory limit", "bytes", softLimit, "from", why)
	if len(opts.PortalTrustedProxies) == 0 {
		setupLog.Info("The portal rate-limits by TCP peer: behind an ingress, set --portal-trusted-proxies, or every user shares the ingress's limit")
	} else {
		setupLog.Info("The portal rate-limits by the X-Forwarded-For client behind trusted proxies", "proxies", opts.PortalTrustedProxies)
	}
	if opts.PortalURL == "" {
		// A fresh install's state: say it once here, not only in each membership.
		setupLog.Info("No --portal-url (or $PORTAL_URL): invitations are held back (Invited=False, PortalURLNotSet) until it is set and the manager restarted")
	}

	cfg, err := ctrl.GetConfig()
	if err != nil {
		setupLog.Error(err, "Unable to load a kubeconfig")
		os.Exit(1)
	}
	mgr, err := operator.New(cfg, opts)
	if err != nil {
		setupLog.Error(err, "Unable to set up the manager")
		os.Exit(1)
	}
	setupLog.Info("Starting manager")
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "Manager stopped with an error")
		os.Exit(1)
	}
}

// envBool reads a boolean variable; an unparsable value stops the manager rather
// than silently picking a certificate source.
func envBool(name string, fallback bool) bool {
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return fallback
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "$%s must be true or false, not %q\n", name, v)
		os.Exit(2)
	}
	return b
}

func envOr(name, fallback string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return fallback
}
