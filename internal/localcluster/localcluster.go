// Package localcluster runs a small Kubernetes control plane on loopback for
// development: etcd, kube-apiserver and kube-controller-manager, built by
// hack/control-plane.sh, with their state in a directory that is kept across
// restarts (.local/ for `make run`). It also starts kube-controller-manager
// alone against an existing API server, for envtest suites.
//
// Layout of the state directory:
//
//	cluster.json                  ports, reused on the next start
//	kubeconfig                    admin kubeconfig (group system:masters)
//	controller-manager/           kube-controller-manager's kubeconfig and serving certificates
//	etcd/                         etcd data
//	pki/                          CA, serving and client certificates, ServiceAccount signing key
//	logs/                         one log per process
//	lock                          held while a cluster runs on the directory
package localcluster

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	// DefaultStateDir is where `make run` keeps its state, relative to the repository root.
	DefaultStateDir = ".local"
	// DefaultAPIServerPort is used on first start when it is free.
	DefaultAPIServerPort = 6443
	// DefaultServiceClusterIPRange is the range of Service cluster IPs.
	DefaultServiceClusterIPRange = "10.0.0.0/24"
	// serviceAccountIssuer is the issuer of ServiceAccount tokens, as in most clusters.
	serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
)

// Options configures Start.
type Options struct {
	// BinDir holds etcd, kube-apiserver and kube-controller-manager. Required.
	BinDir string
	// StateDir keeps etcd data, certificates, keys, kubeconfigs and logs; it is
	// reused when present. Empty means DefaultStateDir.
	StateDir string
	// APIServerPort is the secure port on 127.0.0.1. Zero means the port of the
	// previous start in StateDir, else DefaultAPIServerPort, else (when that is
	// busy) any free port; the choice is kept for the next start. A port given
	// here that is busy is an error.
	APIServerPort int
	// ServiceClusterIPRange defaults to DefaultServiceClusterIPRange.
	ServiceClusterIPRange string
	// Controllers run by kube-controller-manager; nil means DefaultControllers.
	Controllers []string
	// StartTimeout bounds each component's wait for readiness; zero means two minutes.
	StartTimeout time.Duration
	// ExtraAPIServerArgs are appended to kube-apiserver's command line.
	ExtraAPIServerArgs []string
	// Progress receives one line per step; nil means silence.
	Progress io.Writer
}

// Cluster is a running local control plane.
type Cluster struct {
	stateDir      string
	kubeconfig    string
	adminConfig   *rest.Config
	apiServerPort int

	etcd, apiServer *Process
	controllers     *ControllerManager
	unlock          func()

	stopOnce sync.Once
	done     chan struct{}
	errMu    sync.Mutex
	err      error
}

// ports are the ports of a state directory, kept in cluster.json.
type ports struct {
	APIServer  int `json:"apiServerPort"`
	EtcdClient int `json:"etcdClientPort"`
	EtcdPeer   int `json:"etcdPeerPort"`
}

// Start starts etcd, kube-apiserver and kube-controller-manager with their
// state in opts.StateDir, writes the admin kubeconfig to <StateDir>/kubeconfig
// and returns once the API server is ready and the controllers run. ctx bounds
// only the start: the processes run until Stop (or until the calling process
// dies: on Linux they are killed with it).
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.BinDir == "" {
		return nil, errors.New("Options.BinDir is required")
	}
	for _, bin := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("%s not found in %s (build it with hack/control-plane.sh): %w", bin, opts.BinDir, err)
		}
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.ServiceClusterIPRange == "" {
		opts.ServiceClusterIPRange = DefaultServiceClusterIPRange
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	stateDir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	pki, logs := filepath.Join(stateDir, "pki"), filepath.Join(stateDir, "logs")
	for _, d := range []string{stateDir, pki, logs} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	c := &Cluster{stateDir: stateDir, kubeconfig: filepath.Join(stateDir, "kubeconfig"), done: make(chan struct{})}
	if c.unlock, err = lockStateDir(filepath.Join(stateDir, "lock")); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	p, err := choosePorts(filepath.Join(stateDir, "cluster.json"), opts.APIServerPort)
	if err != nil {
		return nil, err
	}
	c.apiServerPort = p.APIServer

	if err := c.ensurePKI(pki, opts.ServiceClusterIPRange); err != nil {
		return nil, fmt.Errorf("certificates in %s: %w", pki, err)
	}

	fmt.Fprintf(progress, "starting etcd (127.0.0.1:%d, data in %s)\n", p.EtcdClient, filepath.Join(stateDir, "etcd"))
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", p.EtcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", p.EtcdPeer)
	c.etcd, err = StartProcess(ProcessOptions{
		Name: "etcd",
		Path: filepath.Join(opts.BinDir, "etcd"),
		Args: []string{
			"--name=local",
			"--data-dir=" + filepath.Join(stateDir, "etcd"),
			"--listen-client-urls=" + etcdURL,
			"--advertise-client-urls=" + etcdURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=local=" + peerURL,
		},
		LogFile: filepath.Join(logs, "etcd.log"),
	})
	if err != nil {
		return nil, err
	}
	if err := c.wait(ctx, opts.StartTimeout, "etcd", func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, etcdURL+"/health")
	}); err != nil {
		return nil, err
	}

	fmt.Fprintf(progress, "starting kube-apiserver (https://127.0.0.1:%d)\n", p.APIServer)
	apiArgs := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// Nothing runs in pods, so nothing needs the kubernetes Service's endpoints
		// (and the reconciler refuses a loopback address).
		"--endpoint-reconciler-type=none",
		"--secure-port=" + strconv.Itoa(p.APIServer),
		"--tls-cert-file=" + filepath.Join(pki, "apiserver.crt"),
		"--tls-private-key-file=" + filepath.Join(pki, "apiserver.key"),
		"--client-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + serviceAccountIssuer,
		"--service-account-key-file=" + filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(pki, "sa.key"),
		"--service-cluster-ip-range=" + opts.ServiceClusterIPRange,
		"--allow-privileged=true",
	}
	c.apiServer, err = StartProcess(ProcessOptions{
		Name:    "kube-apiserver",
		Path:    filepath.Join(opts.BinDir, "kube-apiserver"),
		Args:    append(apiArgs, opts.ExtraAPIServerArgs...),
		LogFile: filepath.Join(logs, "kube-apiserver.log"),
	})
	if err != nil {
		return nil, err
	}
	readyClient, err := rest.HTTPClientFor(c.adminConfig)
	if err != nil {
		return nil, err
	}
	readyClient.Timeout = 5 * time.Second
	if err := c.wait(ctx, opts.StartTimeout, "kube-apiserver", func(ctx context.Context) error {
		return httpOK(ctx, readyClient, c.adminConfig.Host+"/readyz")
	}); err != nil {
		return nil, err
	}
	if err := WriteKubeconfig(c.kubeconfig, c.adminConfig, "customer-operator-local"); err != nil {
		return nil, err
	}

	fmt.Fprintln(progress, "starting kube-controller-manager")
	cmConfig := rest.CopyConfig(c.adminConfig)
	cmConfig.CertData, cmConfig.KeyData = nil, nil
	cmConfig.CertFile, cmConfig.KeyFile = filepath.Join(pki, "controller-manager.crt"), filepath.Join(pki, "controller-manager.key")
	cmKubeconfig := filepath.Join(stateDir, "controller-manager", "kubeconfig")
	if err := WriteKubeconfig(cmKubeconfig, cmConfig, "kube-controller-manager"); err != nil {
		return nil, err
	}
	c.controllers, err = StartControllerManager(ctx, ControllerManagerOptions{
		BinDir:                opts.BinDir,
		Kubeconfig:            cmKubeconfig,
		Dir:                   filepath.Join(stateDir, "controller-manager"),
		LogFile:               filepath.Join(logs, "kube-controller-manager.log"),
		Controllers:           opts.Controllers,
		ServiceAccountKeyFile: filepath.Join(pki, "sa.key"),
		RootCAFile:            filepath.Join(pki, "ca.crt"),
		StartTimeout:          opts.StartTimeout,
	})
	if err != nil {
		return nil, err
	}
	go c.watch()
	return c, nil
}

// ensurePKI keeps the cluster CA, the API server's serving certificate, the
// client certificates and the ServiceAccount signing key, reusing what exists.
func (c *Cluster) ensurePKI(pki, serviceRange string) error {
	ca, err := ensureCA(pki, "ca", "customer-operator-local-ca")
	if err != nil {
		return err
	}
	_, ipnet, err := net.ParseCIDR(serviceRange)
	if err != nil {
		return fmt.Errorf("service cluster IP range: %w", err)
	}
	firstServiceIP := make(net.IP, len(ipnet.IP))
	copy(firstServiceIP, ipnet.IP)
	firstServiceIP[len(firstServiceIP)-1]++
	if _, err := ensureLeaf(pki, "apiserver", ca, leafSpec{
		commonName: "kube-apiserver",
		dnsNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		ips:        []net.IP{net.ParseIP("127.0.0.1").To4(), net.IPv6loopback, firstServiceIP},
		usage:      x509.ExtKeyUsageServerAuth,
	}); err != nil {
		return err
	}
	admin, err := ensureLeaf(pki, "admin", ca, leafSpec{
		commonName:   "local-admin",
		organization: []string{"system:masters"},
		usage:        x509.ExtKeyUsageClientAuth,
	})
	if err != nil {
		return err
	}
	// kube-controller-manager's own identity: it creates the controllers'
	// ServiceAccounts and their tokens (the controllers themselves run as those,
	// --use-service-account-credentials, as in kubeadm and kind).
	if _, err := ensureLeaf(pki, "controller-manager", ca, leafSpec{
		commonName:   "system:kube-controller-manager",
		organization: []string{"system:masters"},
		usage:        x509.ExtKeyUsageClientAuth,
	}); err != nil {
		return err
	}
	if err := ensureServiceAccountKey(filepath.Join(pki, "sa.key"), filepath.Join(pki, "sa.pub")); err != nil {
		return err
	}
	adminKey, err := os.ReadFile(filepath.Join(pki, "admin.key"))
	if err != nil {
		return err
	}
	c.adminConfig = &rest.Config{
		Host: fmt.Sprintf("https://127.0.0.1:%d", c.apiServerPort),
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   ca.certPEM,
			CertData: admin.certPEM,
			KeyData:  adminKey,
		},
	}
	return nil
}

// wait waits for check to pass while the cluster's processes run.
func (c *Cluster) wait(ctx context.Context, timeout time.Duration, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return waitUntil(ctx, what, c.processes(), check)
}

func (c *Cluster) processes() []*Process {
	var ps []*Process
	for _, p := range []*Process{c.etcd, c.apiServer} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	if c.controllers != nil && c.controllers.proc != nil {
		ps = append(ps, c.controllers.proc)
	}
	return ps
}

// watch records the first process that exits without Stop.
func (c *Cluster) watch() {
	procs := c.processes()
	exited := make(chan *Process, len(procs))
	for _, p := range procs {
		go func() { <-p.Done(); exited <- p }()
	}
	p := <-exited
	if !p.Stopped() {
		c.errMu.Lock()
		c.err = p.ExitError()
		c.errMu.Unlock()
	}
	close(c.done)
}

// Done is closed when one of the cluster's processes has exited, after Stop or not.
func (c *Cluster) Done() <-chan struct{} { return c.done }

// Err says which process exited on its own, and how; nil while all run or after Stop.
func (c *Cluster) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// AdminConfig returns a new rest.Config for the admin user (group system:masters).
func (c *Cluster) AdminConfig() *rest.Config { return rest.CopyConfig(c.adminConfig) }

// KubeconfigPath returns the path of the admin kubeconfig.
func (c *Cluster) KubeconfigPath() string { return c.kubeconfig }

// StateDir returns the absolute path of the state directory.
func (c *Cluster) StateDir() string { return c.stateDir }

// LogDir returns the directory of the processes' logs.
func (c *Cluster) LogDir() string { return filepath.Join(c.stateDir, "logs") }

// APIServerURL returns the API server's URL.
func (c *Cluster) APIServerURL() string { return c.adminConfig.Host }

// Stop stops kube-controller-manager, kube-apiserver and etcd, in that order,
// each with SIGTERM and, after DefaultStopTimeout, SIGKILL, and releases the
// state directory. Safe to call more than once.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		c.controllers.Stop()
		if c.apiServer != nil {
			c.apiServer.Stop(0)
		}
		if c.etcd != nil {
			c.etcd.Stop(0)
		}
		if c.unlock != nil {
			c.unlock()
		}
	})
}

// choosePorts returns the ports kept in path, replacing those that are busy,
// and keeps the result there.
func choosePorts(path string, apiServerPort int) (ports, error) {
	var p ports
	if data, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(data, &p)
	}
	switch {
	case apiServerPort != 0:
		if !portFree(apiServerPort) {
			return p, fmt.Errorf("port %d on 127.0.0.1 is busy", apiServerPort)
		}
		p.APIServer = apiServerPort
	case p.APIServer != 0 && portFree(p.APIServer):
	case portFree(DefaultAPIServerPort):
		p.APIServer = DefaultAPIServerPort
	default:
		free, err := freePort()
		if err != nil {
			return p, err
		}
		p.APIServer = free
	}
	taken := map[int]bool{p.APIServer: true}
	for _, port := range []*int{&p.EtcdClient, &p.EtcdPeer} {
		if *port != 0 && !taken[*port] && portFree(*port) {
			taken[*port] = true
			continue
		}
		for {
			free, err := freePort()
			if err != nil {
				return p, err
			}
			if !taken[free] {
				*port, taken[free] = free, true
				break
			}
		}
	}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return p, err
	}
	return p, writeFileAtomic(path, append(data, '\n'), 0o644)
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// freePort picks a port for a component of the local cluster: below the ephemeral
// range, so that it is still free when the next `make run` starts the component
// again on the port its state file remembers.
func freePort() (int, error) { return StablePort() }

// waitUntil polls check until it passes, ctx ends, or one of procs exits.
func waitUntil(ctx context.Context, what string, procs []*Process, check func(context.Context) error) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range procs {
			select {
			case <-p.Done():
				return fmt.Errorf("waiting for %s: %w", what, p.ExitError())
			default:
			}
		}
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v)", what, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

func httpOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return nil
}

func restConfigFromKubeconfig(path string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", path, err)
	}
	return cfg, nil
}
