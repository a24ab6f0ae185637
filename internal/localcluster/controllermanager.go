package localcluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// DefaultControllers are the kube-controller-manager controllers a local
// cluster or a test API server needs to behave like a real cluster:
// namespaces finish deleting, owned objects are garbage-collected, the
// aggregated ClusterRoles admin/edit/view get their rules, and ServiceAccounts
// (default in every namespace, token Secrets) are maintained.
var DefaultControllers = []string{
	"namespace-controller",
	"garbage-collector-controller",
	"clusterrole-aggregation-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
}

// ControllerManagerOptions configures StartControllerManager.
type ControllerManagerOptions struct {
	// BinDir holds the kube-controller-manager binary. Required.
	BinDir string
	// Config is how to reach the API server, with credentials that may do
	// everything the controllers do (system:masters). Either Config or
	// Kubeconfig is required.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file, used when Config is nil.
	Kubeconfig string
	// Dir receives the generated kubeconfig, serving certificates and, unless
	// LogFile says otherwise, the log (kube-controller-manager.log). Empty means
	// a new temporary directory, removed by Stop.
	Dir string
	// LogFile is where the process's output goes; empty means in Dir.
	LogFile string
	// Controllers to run; nil means DefaultControllers.
	Controllers []string
	// ServiceAccountKeyFile is the private key that signs ServiceAccount token
	// Secrets (the serviceaccount-token controller is idle without it). For
	// envtest: filepath.Join(testEnv.ControlPlane.APIServer.CertDir, "sa-signer.key").
	ServiceAccountKeyFile string
	// RootCAFile is published as kube-root-ca.crt in every namespace. Empty means
	// Config.CAData (written to Dir), or nothing.
	RootCAFile string
	// SecurePort is the port of its /healthz endpoint on 127.0.0.1; 0 picks a free one.
	SecurePort int
	// StartTimeout bounds the wait for readiness; zero means one minute.
	StartTimeout time.Duration
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
}

// ControllerManager is a running kube-controller-manager.
type ControllerManager struct {
	proc    *Process
	tempDir string
}

// StartControllerManager starts only kube-controller-manager against an
// existing API server, such as envtest's, which has none: without it
// namespaces never finish deleting, nothing is garbage-collected and the
// ClusterRoles admin, edit and view have no rules. It returns once the process
// serves /healthz and, when the clusterrole-aggregation controller runs, the
// ClusterRole admin has rules. ctx bounds only the start; call Stop to end it.
func StartControllerManager(ctx context.Context, opts ControllerManagerOptions) (*ControllerManager, error) {
	if opts.BinDir == "" {
		return nil, errors.New("ControllerManagerOptions.BinDir is required")
	}
	cm := &ControllerManager{}
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "kube-controller-manager-")
		if err != nil {
			return nil, err
		}
		opts.Dir, cm.tempDir = dir, dir
	}
	fail := func(err error) (*ControllerManager, error) {
		cm.Stop()
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return fail(err)
	}
	cfg := opts.Config
	kubeconfig := opts.Kubeconfig
	switch {
	case cfg != nil:
		kubeconfig = filepath.Join(opts.Dir, "kube-controller-manager.kubeconfig")
		if err := WriteKubeconfig(kubeconfig, cfg, "kube-controller-manager"); err != nil {
			return fail(fmt.Errorf("writing kubeconfig: %w", err))
		}
		if opts.RootCAFile == "" && len(cfg.CAData) > 0 {
			opts.RootCAFile = filepath.Join(opts.Dir, "root-ca.crt")
			if err := writeFileAtomic(opts.RootCAFile, cfg.CAData, 0o644); err != nil {
				return fail(err)
			}
		}
	case kubeconfig != "":
		loaded, err := restConfigFromKubeconfig(kubeconfig)
		if err != nil {
			return fail(err)
		}
		cfg = loaded
	default:
		return fail(errors.New("ControllerManagerOptions: Config or Kubeconfig is required"))
	}
	controllers := opts.Controllers
	if controllers == nil {
		controllers = DefaultControllers
	}
	if opts.LogFile == "" {
		opts.LogFile = filepath.Join(opts.Dir, "kube-controller-manager.log")
	}
	timeout := opts.StartTimeout
	if timeout == 0 {
		timeout = time.Minute
	}

	// A port picked free may be taken before the process binds it: try again.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port := opts.SecurePort
		if port == 0 {
			p, err := freePort()
			if err != nil {
				return fail(err)
			}
			port = p
		}
		args := []string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + filepath.Join(opts.Dir, "serving-certs"),
			"--leader-elect=false",
			"--use-service-account-credentials=true",
			"--controllers=" + strings.Join(controllers, ","),
		}
		if opts.ServiceAccountKeyFile != "" {
			args = append(args, "--service-account-private-key-file="+opts.ServiceAccountKeyFile)
		}
		if opts.RootCAFile != "" {
			args = append(args, "--root-ca-file="+opts.RootCAFile)
		}
		args = append(args, opts.ExtraArgs...)
		proc, err := StartProcess(ProcessOptions{
			Name:    "kube-controller-manager",
			Path:    filepath.Join(opts.BinDir, "kube-controller-manager"),
			Args:    args,
			LogFile: opts.LogFile,
		})
		if err != nil {
			return fail(err)
		}
		cm.proc = proc
		waitCtx, cancel := context.WithTimeout(ctx, timeout)
		lastErr = waitForControllerManager(waitCtx, proc, cfg, port, slices.Contains(controllers, "clusterrole-aggregation-controller") || slices.Contains(controllers, "clusterrole-aggregation"))
		cancel()
		if lastErr == nil {
			return cm, nil
		}
		proc.Stop(5 * time.Second)
		if opts.SecurePort != 0 || !strings.Contains(tailFile(proc.LogFile(), 30), "address already in use") {
			break
		}
	}
	return fail(lastErr)
}

func waitForControllerManager(ctx context.Context, proc *Process, cfg *rest.Config, port int, wantAggregation bool) error {
	httpClient := &http.Client{
		Timeout: 2 * time.Second,
		// Its serving certificate is self-signed; this only probes liveness.
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // local health probe
	}
	healthz := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	err := waitUntil(ctx, proc.Name(), []*Process{proc}, func(ctx context.Context) error {
		return httpOK(ctx, httpClient, healthz)
	})
	if err != nil || !wantAggregation {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	// The clearest sign that controllers run, not only that the process serves.
	return waitUntil(ctx, "aggregated rules of ClusterRole admin", []*Process{proc}, func(ctx context.Context) error {
		role, err := cs.RbacV1().ClusterRoles().Get(ctx, "admin", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if role.AggregationRule != nil && len(role.Rules) == 0 {
			return errors.New("ClusterRole admin has no rules yet")
		}
		return nil
	})
}

// LogFile returns the path of kube-controller-manager's log.
func (cm *ControllerManager) LogFile() string { return cm.proc.LogFile() }

// Done is closed when the process has exited.
func (cm *ControllerManager) Done() <-chan struct{} { return cm.proc.Done() }

// Stop ends the process (SIGTERM, then SIGKILL after DefaultStopTimeout) and
// removes its temporary directory, if it made one. Safe on a nil or stopped manager.
func (cm *ControllerManager) Stop() {
	if cm == nil {
		return
	}
	if cm.proc != nil {
		cm.proc.Stop(0)
	}
	if cm.tempDir != "" {
		_ = os.RemoveAll(cm.tempDir)
	}
}
