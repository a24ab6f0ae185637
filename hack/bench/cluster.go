package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/partnerops/customer-operator/internal/localcluster"
	"github.com/partnerops/customer-operator/internal/mail/mailtest"
	"github.com/partnerops/customer-operator/internal/operator"
	"github.com/partnerops/customer-operator/internal/testenv"
)

const (
	namespaceWebhook = "vnamespace.customers.partnerops.io"
	fieldManager     = "customer-operator-bench"
)

// bench holds what every phase uses: the control plane (envtest's etcd and
// kube-apiserver plus kube-controller-manager, fresh state in a temporary
// directory), an admin client, the SMTP sink and the manager process.
type bench struct {
	s       settings
	log     func(string, ...any)
	workDir string
	env     *testenv.Env
	// admin is an uncached client as system:masters without client-side rate
	// limiting, so that the bench, not client-go, decides the load.
	admin      client.Client
	adminCfg   *rest.Config
	sink       *mailtest.Server
	managerBin string
	kubeconfig string

	metricsAddr, healthAddr, portalAddr string
	// pprofAddr serves the manager's net/http/pprof (loopback).
	pprofAddr     string
	manager       *localcluster.Process
	managerStarts int
	// cgroup, when set, holds the manager's memory limit (BENCH_MANAGER_MEMORY_LIMIT).
	cgroup *memoryCgroup

	// webhooks are the configurations as installed, restored after the floor
	// runs without them.
	validating []admissionregistrationv1.ValidatingWebhookConfiguration
	mutating   []admissionregistrationv1.MutatingWebhookConfiguration

	allowAll     *allowAllServer
	cancelAllow  context.CancelFunc
	allowAllPath string
}

func (b *bench) start(ctx context.Context) error {
	var err error
	b.log("building the manager (go build -o %s .)", filepath.Join(b.workDir, "manager"))
	b.managerBin = filepath.Join(b.workDir, "manager")
	build := exec.CommandContext(ctx, "go", "build", "-o", b.managerBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the manager: %w", err)
	}

	b.log("starting etcd, kube-apiserver and kube-controller-manager")
	b.env, err = testenv.Start(ctx, testenv.Options{ControllerManager: true})
	if err != nil {
		return err
	}
	b.adminCfg = rest.CopyConfig(b.env.AdminConfig)
	b.adminCfg.QPS, b.adminCfg.Burst = -1, 0
	b.admin, err = client.New(b.adminCfg, client.Options{Scheme: operator.Scheme})
	if err != nil {
		return err
	}
	if err := testenv.WaitForKinds(ctx, b.admin); err != nil {
		return err
	}
	b.kubeconfig = filepath.Join(b.workDir, "operator.kubeconfig")
	if err := writeKubeconfig(b.env.OperatorConfig, b.kubeconfig); err != nil {
		return err
	}

	var vlist admissionregistrationv1.ValidatingWebhookConfigurationList
	if err := b.admin.List(ctx, &vlist); err != nil {
		return err
	}
	b.validating = vlist.Items
	var mlist admissionregistrationv1.MutatingWebhookConfigurationList
	if err := b.admin.List(ctx, &mlist); err != nil {
		return err
	}
	b.mutating = mlist.Items

	b.sink, err = mailtest.NewServer()
	if err != nil {
		return err
	}
	for _, addr := range []*string{&b.metricsAddr, &b.healthAddr, &b.portalAddr, &b.pprofAddr} {
		if *addr, err = freeAddr(); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) stop() {
	if b.manager != nil {
		b.manager.Stop(0)
	}
	if b.cgroup != nil {
		if cg, err := b.cgroup.read(); err == nil {
			b.log("the manager's memory cgroup: peak %d bytes of %d, limit hit %d times, %d OOM kills", cg.Peak, b.cgroup.limit, cg.Failcnt, cg.OOMKills)
		}
		if err := b.cgroup.remove(); err != nil {
			b.log("removing %s: %v", b.cgroup.dir, err)
		}
	}
	if b.cancelAllow != nil {
		b.cancelAllow()
	}
	if b.sink != nil {
		_ = b.sink.Close()
	}
	if b.env != nil {
		if err := b.env.Stop(); err != nil {
			b.log("stopping the control plane: %v", err)
		}
	}
}

// writeKubeconfig writes the operator identity's client certificate into a
// kubeconfig for the manager binary's --kubeconfig.
func writeKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["bench"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["operator"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken,
	}
	kc.Contexts["bench"] = &clientcmdapi.Context{Cluster: "bench", AuthInfo: "operator"}
	kc.CurrentContext = "bench"
	return clientcmd.WriteToFile(*kc, path)
}

// freeAddr picks a loopback address below the kernel's ephemeral port range
// (testenv.StableAddr): the restart phase binds the same addresses again, and no
// outgoing connection can take such a port in between.
func freeAddr() (string, error) { return testenv.StableAddr() }

// startManager runs the manager binary as the operator's ServiceAccount (its
// RBAC only), with webhooks on envtest's serving address, and waits until it is
// ready. A separate process, so that its RSS is the manager's alone.
func (b *bench) startManager(ctx context.Context) error {
	host, port, certDir := b.env.WebhookOptions()
	b.managerStarts++
	args := []string{
		"--kubeconfig=" + b.kubeconfig,
		"--namespace=" + testenv.OperatorNamespace,
		"--webhook-host=" + host,
		"--webhook-port=" + strconv.Itoa(port),
		"--webhook-cert-dir=" + certDir,
		"--metrics-bind-address=" + b.metricsAddr,
		"--pprof-bind-address=" + b.pprofAddr,
		"--health-probe-bind-address=" + b.healthAddr,
		"--portal-bind-address=" + b.portalAddr,
		"--portal-url=http://" + b.portalAddr,
		"--smtp-address=" + b.sink.Addr(),
		"--smtp-tls=none",
	}
	args = append(args, b.s.ManagerArgs...)
	path := b.managerBin
	if b.cgroup != nil {
		path, args = b.cgroup.wrap(path, args)
	}
	var err error
	b.manager, err = localcluster.StartProcess(localcluster.ProcessOptions{
		Name:    "manager",
		Path:    path,
		Args:    args,
		Env:     append(os.Environ(), b.s.ManagerEnv...),
		LogFile: filepath.Join(b.workDir, fmt.Sprintf("manager-%d.log", b.managerStarts)),
	})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-b.manager.Done():
			return b.manager.ExitError()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := scrapeClient.Get("http://" + b.healthAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("manager not ready after 2m; log in %s", b.manager.LogFile())
		}
	}
}

func (b *bench) stopManager() {
	b.manager.Stop(30 * time.Second)
}

func (b *bench) metrics(ctx context.Context) (metrics, error) {
	return scrape(ctx, "http://"+b.metricsAddr+"/metrics")
}

// waitIdle waits until the manager has no queued or running work and has not
// reconciled anything for quiet.
func (b *bench) waitIdle(ctx context.Context, quiet, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last float64 = -1
	since := time.Now()
	for {
		m, err := b.metrics(ctx)
		if err != nil {
			return err
		}
		n := m.reconciles("")
		if m.busy() || n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("manager not idle after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// removeWebhooks deletes every webhook configuration (for the floor, which
// measures the API server alone).
func (b *bench) removeWebhooks(ctx context.Context) error {
	for i := range b.validating {
		if err := client.IgnoreNotFound(b.admin.Delete(ctx, b.validating[i].DeepCopy())); err != nil {
			return err
		}
	}
	for i := range b.mutating {
		if err := client.IgnoreNotFound(b.admin.Delete(ctx, b.mutating[i].DeepCopy())); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) restoreWebhooks(ctx context.Context) error {
	for i := range b.validating {
		c := b.validating[i].DeepCopy()
		c.ResourceVersion, c.UID = "", ""
		if err := b.admin.Create(ctx, c); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	for i := range b.mutating {
		c := b.mutating[i].DeepCopy()
		c.ResourceVersion, c.UID = "", ""
		if err := b.admin.Create(ctx, c); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// admissionMode is who answers the namespace webhook.
type admissionMode string

const (
	modeNone     admissionMode = "no webhook"
	modeAllowAll admissionMode = "allow-all webhook"
	modeOurs     admissionMode = "our webhook"
)

// setNamespaceWebhook points the namespace webhook at nothing (the entry is
// removed), at the allow-all server, or at the manager, leaving every other
// field (timeouts, matchConditions, CA bundle) as installed.
func (b *bench) setNamespaceWebhook(ctx context.Context, mode admissionMode) error {
	for i := range b.validating {
		orig := &b.validating[i]
		var hooks []admissionregistrationv1.ValidatingWebhook
		found := false
		for _, w := range orig.Webhooks {
			if w.Name != namespaceWebhook {
				hooks = append(hooks, *w.DeepCopy())
				continue
			}
			found = true
			switch mode {
			case modeNone:
				continue
			case modeAllowAll:
				w = *w.DeepCopy()
				url := "https://" + b.allowAll.addr + b.allowAllPath
				w.ClientConfig.URL = &url
				w.ClientConfig.Service = nil
			}
			hooks = append(hooks, w)
		}
		if !found {
			continue
		}
		current := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := b.admin.Get(ctx, client.ObjectKeyFromObject(orig), current); err != nil {
			return err
		}
		current.Webhooks = hooks
		return b.admin.Update(ctx, current)
	}
	return errors.New("no webhook configuration has " + namespaceWebhook)
}

// allowAllServer admits everything, served exactly as the manager serves its
// webhooks: controller-runtime's webhook server with the same certificate.
type allowAllServer struct {
	addr string
	hits atomic.Int64
}

func (b *bench) startAllowAll(ctx context.Context) error {
	_, _, certDir := b.env.WebhookOptions()
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	srv := webhook.NewServer(webhook.Options{Host: host, Port: port, CertDir: certDir})
	a := &allowAllServer{addr: addr}
	b.allowAllPath = "/allow"
	srv.Register(b.allowAllPath, &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		a.hits.Add(1)
		return admission.Allowed("")
	})})
	ctx, cancel := context.WithCancel(ctx)
	b.cancelAllow = cancel
	go func() {
		if err := srv.Start(ctx); err != nil {
			b.log("allow-all webhook server: %v", err)
		}
	}()
	b.allowAll = a
	deadline := time.Now().Add(30 * time.Second)
	for srv.StartedChecker()(nil) != nil {
		if time.Now().After(deadline) {
			return errors.New("allow-all webhook server did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
