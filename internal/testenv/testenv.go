// Package testenv starts what the integration suites run against: a real
// kube-apiserver and etcd (envtest, from the binaries hack/control-plane.sh builds),
// kube-controller-manager beside them (so namespaces finish deleting, owner
// references are garbage-collected and admin/edit/view have rules), the CRDs, the
// webhook configuration and the RBAC exactly as config/default renders them, and
// an identity for the manager that has only the operator's own RBAC.
//
// A suite that cannot find the binaries fails; it never skips.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/localcluster"
	"github.com/partnerops/customer-operator/internal/operator"
)

// Names as config/default renders them.
const (
	OperatorNamespace      = "customer-operator-system"
	OperatorServiceAccount = "customer-operator-controller-manager"
	// OperatorUsername is the ServiceAccount's username; the manager authenticates
	// as it (with a client certificate), so RBAC bound to the ServiceAccount applies.
	OperatorUsername = "system:serviceaccount:" + OperatorNamespace + ":" + OperatorServiceAccount
	// PartnerClusterRole is the ClusterRole config/rbac ships for partners.
	PartnerClusterRole = "customer-operator-partner"
	fieldManager       = "customer-operator-testenv"
)

// Env is a running test control plane.
type Env struct {
	Root        string
	BinDir      string
	Environment *envtest.Environment
	// AdminConfig is system:masters.
	AdminConfig *rest.Config
	// OperatorConfig authenticates as the operator's ServiceAccount.
	OperatorConfig *rest.Config
	// Admin is an uncached client as system:masters, for assertions.
	Admin client.Client

	controllerManager *localcluster.ControllerManager
	// apiServerDir holds the API server's certificates and keys; Stop removes it.
	apiServerDir string
}

// Options select what Start brings up.
type Options struct {
	// ControllerManager starts kube-controller-manager (namespace deletion, garbage
	// collection, ClusterRole aggregation).
	ControllerManager bool
}

// Start brings up the control plane and installs config/default's CRDs, RBAC and
// webhook configuration (pointed at the local webhook server envtest prepares).
func Start(ctx context.Context, opts Options) (*Env, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	binDir, err := BinaryDir(root)
	if err != nil {
		return nil, err
	}
	rendered, err := renderDefault(root, binDir)
	if err != nil {
		return nil, err
	}
	webhookOpts, err := webhookInstallOptions(rendered)
	if err != nil {
		return nil, err
	}

	// The API server's directory is ours, not envtest's: envtest removes a directory
	// it created on every stop, and with it the serving CA and the client-cert CA,
	// so a restarted API server would no longer accept the configs handed out.
	certDir, err := os.MkdirTemp("", "testenv-apiserver-")
	if err != nil {
		return nil, err
	}
	env := &Env{Root: root, BinDir: binDir, apiServerDir: certDir}
	apiServer := &envtest.APIServer{CertDir: certDir}
	// A port of our choosing (StablePort): StartAPIServer restarts it on the same one.
	apiServerPort, err := StablePort()
	if err != nil {
		return nil, err
	}
	apiServer.SecureServing.Address, apiServer.SecureServing.Port = "127.0.0.1", strconv.Itoa(apiServerPort)
	env.Environment = &envtest.Environment{
		BinaryAssetsDirectory: binDir,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: webhookOpts,
		ControlPlane:          envtest.ControlPlane{APIServer: apiServer},
	}
	env.AdminConfig, err = env.Environment.Start()
	if err != nil {
		_ = os.RemoveAll(certDir)
		return nil, fmt.Errorf("starting envtest with binaries from %s: %w", binDir, err)
	}
	// Many concurrent requests in some tests; don't let client-side throttling decide.
	env.AdminConfig.QPS, env.AdminConfig.Burst = 500, 1000
	env.Admin, err = client.New(env.AdminConfig, client.Options{Scheme: operator.Scheme})
	if err != nil {
		return nil, errors.Join(err, env.Stop())
	}

	if err := env.applyRBAC(ctx, rendered); err != nil {
		return nil, errors.Join(err, env.Stop())
	}
	if err := WaitForKinds(ctx, env.Admin); err != nil {
		return nil, errors.Join(err, env.Stop())
	}
	operatorUser, err := env.Environment.AddUser(envtest.User{
		Name:   OperatorUsername,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + OperatorNamespace, "system:authenticated"},
	}, env.AdminConfig)
	if err != nil {
		return nil, errors.Join(err, env.Stop())
	}
	env.OperatorConfig = operatorUser.Config()
	env.OperatorConfig.QPS, env.OperatorConfig.Burst = 500, 1000

	if opts.ControllerManager {
		env.controllerManager, err = localcluster.StartControllerManager(ctx, localcluster.ControllerManagerOptions{
			BinDir:                binDir,
			Config:                env.AdminConfig,
			ServiceAccountKeyFile: filepath.Join(env.Environment.ControlPlane.APIServer.CertDir, "sa-signer.key"),
		})
		if err != nil {
			return nil, errors.Join(fmt.Errorf("starting kube-controller-manager: %w", err), env.Stop())
		}
	}
	return env, nil
}

// Stop ends everything Start started.
func (e *Env) Stop() error {
	if e.controllerManager != nil {
		e.controllerManager.Stop()
	}
	err := e.Environment.Stop()
	if e.apiServerDir != "" {
		err = errors.Join(err, os.RemoveAll(e.apiServerDir))
	}
	return err
}

// KillAPIServer ends kube-apiserver with SIGKILL, as a crash or an OOM kill would,
// and waits until it is gone. etcd keeps running with its data; so do the
// certificates, so StartAPIServer can bring the same API server back.
func (e *Env) KillAPIServer() error {
	pid, err := e.apiServerPID()
	if err != nil {
		return err
	}
	proc, err := os.FindProcess(pid)
	if err == nil {
		err = proc.Kill() // SIGKILL
		_ = proc.Release()
	}
	if err != nil {
		return fmt.Errorf("killing kube-apiserver (pid %d): %w", pid, err)
	}
	// envtest waits for its child; once reaped, the port is free for the restart.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver (pid %d) still there 30s after SIGKILL", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartAPIServer starts kube-apiserver again after KillAPIServer, on the same
// address, with the same serving certificate, client-certificate CA,
// service-account keys and etcd: AdminConfig, OperatorConfig, the users added and
// every kubeconfig written from them keep working. It returns once /healthz is OK.
func (e *Env) StartAPIServer() error {
	// The same *APIServer keeps its port, its CertAuthn (the client CA) and the CA
	// of its serving certificate; with CertDir set by us, Start finds apiserver.crt
	// and the service-account keys there and generates nothing new.
	s := e.Environment.ControlPlane.APIServer
	logPath := filepath.Join(e.apiServerDir, "kube-apiserver-restarted.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	s.Out, s.Err = logFile, logFile
	defer func() { s.Out, s.Err = nil, nil }()
	// The port lies below the ephemeral range (StablePort), so a client that keeps
	// dialling the dead port cannot be given it as its own source port (a TCP
	// self-connect), as happened with a port envtest chose; another process may
	// still hold it for a moment: try again.
	for attempt := 1; ; attempt++ {
		if err = s.Start(); err == nil {
			return nil
		}
		if attempt == 3 {
			log, _ := os.ReadFile(logPath)
			if len(log) > 4000 {
				log = log[len(log)-4000:]
			}
			return fmt.Errorf("restarting kube-apiserver on %s: %w; its log ends:\n%s", s.SecureServing.HostPort(), err, log)
		}
		time.Sleep(time.Second)
	}
}

// apiServerPID finds the running kube-apiserver: envtest keeps its process to
// itself, so it is looked up as this process's child running kube-apiserver on
// this environment's secure port.
func (e *Env) apiServerPID() (int, error) {
	portArg := "--secure-port=" + e.Environment.ControlPlane.APIServer.SecureServing.Port
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("finding kube-apiserver's process (needs /proc): %w", err)
	}
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if filepath.Base(args[0]) != "kube-apiserver" || !slices.Contains(args[1:], portArg) {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "status"))
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(status)) {
			if ppid, ok := strings.CutPrefix(line, "PPid:"); ok && strings.TrimSpace(ppid) == strconv.Itoa(os.Getpid()) {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no kube-apiserver with %s among this process's children", portArg)
}

// WebhookOptions returns the webhook server's host, port and cert dir, to put
// into operator.Options.
func (e *Env) WebhookOptions() (host string, port int, certDir string) {
	w := e.Environment.WebhookInstallOptions
	return w.LocalServingHost, w.LocalServingPort, w.LocalServingCertDir
}

// ConfigAs returns a config that impersonates a user with groups (always including
// system:authenticated, as a real authenticator adds it).
func (e *Env) ConfigAs(user string, groups ...string) *rest.Config {
	cfg := rest.CopyConfig(e.AdminConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
	return cfg
}

// ClientAs returns an uncached client that impersonates a user.
func (e *Env) ClientAs(user string, groups ...string) (client.Client, error) {
	return client.New(e.ConfigAs(user, groups...), client.Options{Scheme: operator.Scheme})
}

// RepoRoot finds the repository root (the directory with go.mod) above the
// working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// BinaryDir finds kube-apiserver, etcd, kubectl and kube-controller-manager: in
// $KUBEBUILDER_ASSETS, else in bin/control-plane (hack/control-plane.sh). Missing
// binaries are an error that says how to build them.
func BinaryDir(root string) (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		dir = filepath.Join(root, "bin", "control-plane")
	}
	for _, name := range []string{"kube-apiserver", "etcd", "kubectl", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("control-plane binary %s missing in %s (run hack/control-plane.sh or make test): %w", name, dir, err)
		}
	}
	return dir, nil
}

// renderDefault renders config/default with kubectl's built-in kustomize.
func renderDefault(root, binDir string) ([]*unstructured.Unstructured, error) {
	cmd := exec.Command(filepath.Join(binDir, "kubectl"), "kustomize", filepath.Join(root, "config", "default"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("rendering config/default: %w: %s", err, stderr.String())
	}
	return DecodeYAML(out)
}

// DecodeYAML splits a multi-document YAML stream into objects.
func DecodeYAML(data []byte) ([]*unstructured.Unstructured, error) {
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		obj := &unstructured.Unstructured{}
		if err := decoder.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(obj.Object) > 0 {
			objs = append(objs, obj)
		}
	}
}

// webhookInstallOptions writes the rendered webhook configurations for envtest,
// which points their clientConfig at its local webhook server.
func webhookInstallOptions(objs []*unstructured.Unstructured) (envtest.WebhookInstallOptions, error) {
	var opts envtest.WebhookInstallOptions
	for _, obj := range objs {
		switch obj.GetKind() {
		case "ValidatingWebhookConfiguration":
			var cfg admissionregistrationv1.ValidatingWebhookConfiguration
			if err := convert(obj, &cfg); err != nil {
				return opts, err
			}
			opts.ValidatingWebhooks = append(opts.ValidatingWebhooks, &cfg)
		case "MutatingWebhookConfiguration":
			var cfg admissionregistrationv1.MutatingWebhookConfiguration
			if err := convert(obj, &cfg); err != nil {
				return opts, err
			}
			opts.MutatingWebhooks = append(opts.MutatingWebhooks, &cfg)
		}
	}
	if len(opts.ValidatingWebhooks) == 0 {
		return opts, errors.New("config/default renders no ValidatingWebhookConfiguration")
	}
	// Chosen here rather than by envtest: suites restart the manager on this port.
	port, err := StablePort()
	if err != nil {
		return opts, err
	}
	opts.LocalServingHost, opts.LocalServingPort = "127.0.0.1", port
	return opts, nil
}

func convert(obj *unstructured.Unstructured, into any) error {
	data, err := yaml.Marshal(obj.Object)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(data, into)
}

// rbacKinds are the kinds of config/default that make up the operator's identity
// and rights (and the partner role tests bind users to).
var rbacKinds = map[string]bool{
	"Namespace": true, "ServiceAccount": true,
	"ClusterRole": true, "ClusterRoleBinding": true, "Role": true, "RoleBinding": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
}

// applyRBAC applies the namespace, ServiceAccount and RBAC of config/default, and
// the ValidatingAdmissionPolicies, with server-side apply.
func (e *Env) applyRBAC(ctx context.Context, objs []*unstructured.Unstructured) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, obj := range objs {
		if !rbacKinds[obj.GetKind()] {
			continue
		}
		obj.SetManagedFields(nil)
		if err := e.Admin.Patch(ctx, obj, client.Apply, client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
	}
	return nil
}

// WaitForKinds lists each of the operator's kinds with c until all of them
// succeed. envtest waits for the CRDs to appear in discovery, but the API
// server's discovery has been seen, on a busy machine, to answer once more without
// a kind just after (the client then reports "Resource kind ... not found"); a
// suite's first specs must not depend on that race.
func WaitForKinds(ctx context.Context, c client.Client) error {
	lists := []client.ObjectList{&v1alpha1.CustomerList{}, &v1alpha1.CustomerQuotaList{},
		&v1alpha1.CustomerMembershipList{}, &v1alpha1.CustomerMessageList{}, &v1alpha1.MessageAcknowledgementList{}}
	deadline := time.Now().Add(time.Minute)
	for _, list := range lists {
		for {
			err := c.List(ctx, list, client.Limit(1))
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the API server does not serve %T after a minute: %w", list, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}
