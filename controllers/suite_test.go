package controllers_test

import (
	"context"
	"net"
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
	// Invitations go to a real SMTP server in this process; the portal listens on
	// a fixed free port so that the links in its mails open it.
	mailServer, err = mailtest.NewServer()
	Expect(err).NotTo(HaveOccurred())
	opts.SMTPAddress, opts.SMTPTLS = mailServer.Addr(), "none"
	portalAddr := freeLocalAddr()
	opts.PortalBindAddress, opts.PortalURL = portalAddr, "http://"+portalAddr
	// Specs restart the manager in-process (restartManager).
	opts.SkipControllerNameValidation = true
	managerOptions = opts
	startManager(opts)
	_ = ctrl.Log
})

// startManager runs the operator with opts until stopManager or the end of the suite.
func startManager(opts operator.Options) {
	GinkgoHelper()
	mgr, err := operator.New(env.OperatorConfig, opts)
	Expect(err).NotTo(HaveOccurred())
	mgrCtx, mgrCancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer GinkgoRecover()
		defer close(done)
		Expect(mgr.Start(mgrCtx)).To(Succeed())
	}()
	stopManager = func() {
		mgrCancel()
		<-done
	}
	Eventually(func() error {
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

// freeLocalAddr returns a loopback address with a port that was free a moment ago.
func freeLocalAddr() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().String()
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
