package controllers_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

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
	mgr, err := operator.New(env.OperatorConfig, opts)
	Expect(err).NotTo(HaveOccurred())

	go func() {
		defer GinkgoRecover()
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	Eventually(func() error {
		return mgr.GetWebhookServer().StartedChecker()(nil)
	}).Should(Succeed())
	_ = ctrl.Log
})

var _ = AfterSuite(func() {
	if cancel != nil {
		cancel()
	}
	if env != nil {
		Expect(env.Stop()).To(Succeed())
	}
})
