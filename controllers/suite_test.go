package controllers_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/partnerops/customer-operator/internal/mail/mailtest"
	"github.com/partnerops/customer-operator/internal/operator"
	"github.com/partnerops/customer-operator/internal/testenv"
)

// The suite runs the real kube-apiserver, etcd and kube-controller-manager, with the
// manager in-process, authenticated as the operator's ServiceAccount with only the
// RBAC config/default ships (missing RBAC fails a test), and its webhook server
// registered through the rendered webhook configuration. Assertions read through
// uncached clients.
var (
	env    *testenv.Env
	admin  client.Client
	ctx    context.Context
	cancel context.CancelFunc

	// mailServer receives the operator's mail (SMTP on loopback).
	mailServer *mailtest.Server
	// managerOptions are the options the suite's manager runs with.
	managerOptions operator.Options
	// stopManager stops the running manager and waits for it.
	stopManager func()
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	RunSpecs(t, "Controllers Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	ctx, cancel = context.WithCancel(context.Background())

	var err error
	env, err = testenv.Start(ctx, testenv.Options{ControllerManager: true})
	Expect(err).NotTo(HaveOccurred(), "the control plane must start: these tests never skip")
	admin = env.Admin

	opts := operator.DefaultOptions()
	opts.MetricsBindAddress = "0"
	opts.HealthProbeBindAddress = "0"
	opts.PortalBindAddress = "127.0.0.1:0"
	opts.Namespace = testenv.OperatorNamespace
	opts.WebhookHost, opts.WebhookPort, opts.WebhookCertDir = env.WebhookOptions()
	// A project create that was admitted and then failed frees its slot after
	// 5s + this grace: short, so the spec that proves it waits seconds, not a minute.
	opts.ReservationGrace = 5 * time.Second
	// As config/manager runs it: a customer's Admins name projects <customer>-<name>.
	opts.RequireProjectPrefix = true
	// Specs re-send invitations at will; the spec of --invitation-min-interval
	// restarts the manager with it.
	opts.InvitationMinInterval = 0
	// Likewise --max-invitations-per-customer-per-hour: its spec sets it.
	opts.MaxInvitationsPerCustomerPerHour = 0
	// Invitations go to a real SMTP server in this process; the portal listens on
	// a fixed free port so that the links in its mails open it.
	// On a stable port: a spec stops and restarts it (an outage), and a port from
	// the kernel's range for outgoing connections could be taken meanwhile.
	mailServer, err = mailtest.NewServer(mailtest.WithAddr(freeLocalAddr()))
	Expect(err).NotTo(HaveOccurred())
	opts.SMTPAddress, opts.SMTPTLS = mailServer.Addr(), "none"
	portalAddr := freeLocalAddr()
	opts.PortalBindAddress, opts.PortalURL = portalAddr, "http://"+portalAddr
	// As behind an ingress on this host: the portal rate-limits the client that
	// X-Forwarded-For names (the spec that checks it sends one).
	opts.PortalTrustedProxies, err = operator.ParseTrustedProxies("127.0.0.1")
	Expect(err).NotTo(HaveOccurred())
	// Specs restart the manager in-process (restartManager).
	opts.SkipControllerNameValidation = true
	managerOptions = opts
	startManager(opts)
	_ = ctrl.Log
})

// managerFailure is set when a manager the suite started stops by itself (a
// runnable failed, a port was taken): every later spec would then fail quickly at
// its first webhook call, so the next spec aborts the suite naming the cause.
var managerFailure atomic.Pointer[error]

// Aborts the suite once the manager has stopped by itself, with why.
var _ = BeforeEach(func() {
	if err := managerFailure.Load(); err != nil {
		AbortSuite((*err).Error())
	}
})

// startManager runs the operator with opts until stopManager or the end of the suite.
func startManager(opts operator.Options) {
	GinkgoHelper()
	mgr, err := operator.New(env.OperatorConfig, opts)
	Expect(err).NotTo(HaveOccurred())
	mgrCtx, mgrCancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var startErr error
	go func() {
		defer close(done)
		startErr = mgr.Start(mgrCtx)
		if mgrCtx.Err() == nil {
			err := fmt.Errorf("the manager stopped by itself at %s: %v", time.Now().Format(time.RFC3339Nano), startErr)
			managerFailure.Store(&err)
		}
	}()
	stopManager = func() {
		GinkgoHelper()
		mgrCancel()
		<-done
		Expect(startErr).NotTo(HaveOccurred(), "the manager must stop cleanly, within its graceful-shutdown timeout")
	}
	Eventually(func() error {
		if err := managerFailure.Load(); err != nil {
			return StopTrying("the manager did not start").Wrap(*err)
		}
		return mgr.GetWebhookServer().StartedChecker()(nil)
	}).Should(Succeed())
}

// restartManager stops the running manager and starts a new one with fresh caches,
// as after a crash or a rollout; mutate adjusts its options (nil: the suite's).
func restartManager(mutate func(*operator.Options)) {
	GinkgoHelper()
	stopManager()
	opts := managerOptions
	if mutate != nil {
		mutate(&opts)
	}
	startManager(opts)
}

// freeLocalAddr returns a loopback address with a port that was free a moment ago,
// below the ephemeral range, so that a restarted manager gets it back.
func freeLocalAddr() string {
	GinkgoHelper()
	addr, err := testenv.StableAddr()
	Expect(err).NotTo(HaveOccurred())
	return addr
}

var _ = AfterSuite(func() {
	if cancel != nil {
		cancel()
	}
	if stopManager != nil {
		stopManager()
	}
	if mailServer != nil {
		Expect(mailServer.Close()).To(Succeed())
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})
