// Command local-run is what `make run` runs: the operator on a local control
// plane, on loopback, with its state in .local/ (kept across restarts).
//
// It builds the control-plane binaries if needed (hack/control-plane.sh),
// starts etcd, kube-apiserver and kube-controller-manager
// (internal/localcluster), installs what config/crd, config/rbac,
// config/policy and config/webhook render to (webhooks pointed at the manager
// on 127.0.0.1),
// gives the manager a kubeconfig with the token of its own ServiceAccount (its
// RBAC, not cluster-admin), starts a mail catcher (hack/mailcatcher) unless
// SMTP_ADDRESS is set, runs bin/manager and prints where everything is.
// Ctrl-C stops everything it started; the next run reuses the state.
//
//	go run ./hack/local-run [flags] [-- extra manager flags]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/partnerops/customer-operator/hack/mailcatcher"
	"github.com/partnerops/customer-operator/internal/localcluster"
)

const (
	fieldManager = "customer-operator-local-run"

	// The deployment's names (config/default), which the local run mirrors.
	defaultNamespace  = "customer-operator-system"
	defaultNamePrefix = "customer-operator-"
	serviceAccount    = "controller-manager" // before namePrefix

	// tokenLifetime is the lifetime of the manager's ServiceAccount token; it is
	// renewed every tokenRenewal into a file that client-go rereads.
	tokenLifetime = 24 * time.Hour
	tokenRenewal  = time.Hour
)

type options struct {
	root          string
	configDir     string
	stateDir      string
	apiServerPort int
	webhookPort   int
	managerPath   string
	noManager     bool
	smtpAddress   string
	mailSMTP      string
	mailUI        string
	metricsAddr   string
	healthAddr    string
	portalAddr    string
	managerArgs   []string
}

func main() {
	log := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "local-run: "+format+"\n", args...) }
	root, err := repoRoot()
	if err != nil {
		log("%v", err)
		os.Exit(1)
	}
	o := options{root: root}
	flag.StringVar(&o.configDir, "config-dir", filepath.Join(root, "config"), "the kustomize tree: crd, rbac, policy and webhook are installed; default gives namespace, namePrefix and transformers")
	flag.StringVar(&o.stateDir, "state-dir", filepath.Join(root, localcluster.DefaultStateDir), "state kept across runs (etcd data, certificates, kubeconfigs, logs); delete it to start afresh")
	flag.IntVar(&o.apiServerPort, "apiserver-port", 0, "kube-apiserver port on 127.0.0.1 (0: the previous run's, else 6443, else a free one)")
	flag.IntVar(&o.webhookPort, "webhook-port", 9443, "port of the manager's webhook server on 127.0.0.1")
	flag.StringVar(&o.managerPath, "manager", filepath.Join(root, "bin", "manager"), "the manager binary")
	flag.BoolVar(&o.noManager, "no-manager", false, "set everything up but print the manager's command line instead of running it (to run it in a debugger)")
	flag.StringVar(&o.mailSMTP, "mail-smtp", "127.0.0.1:1025", "SMTP address of the mail catcher")
	flag.StringVar(&o.mailUI, "mail-ui", "127.0.0.1:8025", "web UI address of the mail catcher")
	flag.StringVar(&o.metricsAddr, "metrics-bind-address", "127.0.0.1:8080", "the manager's --metrics-bind-address")
	flag.StringVar(&o.healthAddr, "health-probe-bind-address", "127.0.0.1:8081", "the manager's --health-probe-bind-address")
	flag.StringVar(&o.portalAddr, "portal-bind-address", "127.0.0.1:8082", "the manager's --portal-bind-address")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: go run ./hack/local-run [flags] [-- extra manager flags]\n\nEnvironment: SMTP_ADDRESS=host:port sends mail there (plain SMTP) instead of to a local mail catcher.\n\nFlags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	o.managerArgs = flag.Args()
	o.smtpAddress = os.Getenv("SMTP_ADDRESS")

	if err := run(o, log); err != nil {
		log("%v", err)
		os.Exit(1)
	}
}

// run sets up, runs until a signal or until something dies, and stops
// everything it started, in reverse order.
func run(o options, log func(string, ...any)) (err error) {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	if !signal.Ignored(syscall.SIGHUP) { // under nohup, a closed terminal must not stop it
		signal.Notify(signals, syscall.SIGHUP)
	}
	stopWithParent()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		sig := <-signals
		log("%v: stopping (Ctrl-C again to kill everything at once)", sig)
		cancel()
		sig = <-signals
		// Children die with this process (Pdeathsig); etcd survives a kill.
		log("%v: killed", sig)
		os.Exit(130)
	}()

	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		if ctx.Err() != nil && err != nil {
			// Interrupted while starting: what failed is only the interruption.
			log("interrupted (%v)", err)
			err = nil
		}
		if len(stops) > 0 {
			log("stopped; state kept in %s", rel(o.stateDir))
		}
	}()

	if !o.noManager {
		if _, err := os.Stat(o.managerPath); err != nil {
			return fmt.Errorf("%s not found: build it first (make build), or pass --no-manager to run it yourself", rel(o.managerPath))
		}
	}
	binDir, err := controlPlaneBinaries(ctx, o.root)
	if err != nil {
		return err
	}
	if err := linkKubectl(o.root, binDir); err != nil {
		return fmt.Errorf("bin/kubectl: %w", err)
	}

	cluster, err := localcluster.Start(ctx, localcluster.Options{
		BinDir:        binDir,
		StateDir:      o.stateDir,
		APIServerPort: o.apiServerPort,
		Progress:      prefixWriter{os.Stderr},
	})
	if err != nil {
		return err
	}
	stops = append(stops, func() { log("stopping the control plane"); cluster.Stop() })

	if err := install(ctx, o, cluster, log); err != nil {
		return err
	}
	operatorKubeconfig, renewToken, err := operatorCredentials(ctx, o, cluster)
	if err != nil {
		return err
	}
	go renewToken(ctx, log)

	smtp, mailUI := o.smtpAddress, ""
	var mail *mailcatcher.Catcher
	if smtp == "" {
		mail, err = startMailCatcher(o, log)
		if err != nil {
			return err
		}
		stops = append(stops, func() { _ = mail.Close() })
		smtp, mailUI = mail.SMTPAddr(), "http://"+mail.HTTPAddr()
	}

	managerArgs := append([]string{
		"--kubeconfig=" + operatorKubeconfig,
		// Loopback, as every other listener of the local run: the quota webhook
		// writes reservations, so it is nobody else's to call.
		"--webhook-host=127.0.0.1",
		"--webhook-port=" + strconv.Itoa(o.webhookPort),
		"--webhook-cert-dir=" + webhookCertDir(o),
		"--metrics-bind-address=" + o.metricsAddr,
		"--health-probe-bind-address=" + o.healthAddr,
		"--smtp-address=" + smtp,
		"--smtp-from=customer-operator@localhost",
		"--smtp-tls=none",
		"--portal-bind-address=" + o.portalAddr,
		"--portal-url=http://" + o.portalAddr,
		"--namespace=" + namespace(o),
	}, o.managerArgs...)

	var manager *localcluster.Process
	if o.noManager {
		fmt.Fprintf(os.Stderr, "\nRun the manager yourself with:\n  %s %s\n", rel(o.managerPath), strings.Join(managerArgs, " \\\n      "))
	} else {
		log("starting the manager (output also in %s)", rel(filepath.Join(cluster.LogDir(), "manager.log")))
		manager, err = localcluster.StartProcess(localcluster.ProcessOptions{
			Name:    "manager",
			Path:    o.managerPath,
			Args:    managerArgs,
			Dir:     o.root,
			LogFile: filepath.Join(cluster.LogDir(), "manager.log"),
			Output:  os.Stdout,
		})
		if err != nil {
			return err
		}
		stops = append(stops, func() { log("stopping the manager"); manager.Stop(0) })
		if err := waitHTTP(ctx, "http://"+o.healthAddr+"/readyz", time.Minute, manager); err != nil {
			if manager.Stopped() || ctx.Err() != nil {
				return nil
			}
			select {
			case <-manager.Done():
				return manager.ExitError()
			default:
				log("the manager is not ready yet (%v); carrying on", err)
			}
		}
	}
	printSummary(o, cluster, operatorKubeconfig, smtp, mailUI)

	var managerDone, mailDone <-chan struct{}
	if manager != nil {
		managerDone = manager.Done()
	}
	if mail != nil {
		mailDone = mail.Done()
	}
	select {
	case <-ctx.Done():
		return nil
	case <-managerDone:
		return manager.ExitError()
	case <-mailDone:
		return mail.Err()
	case <-cluster.Done():
		return cluster.Err()
	}
}

// repoRoot is the directory of go.mod, from the working directory up.
func repoRoot() (string, error) {
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
			return "", errors.New("run from inside the repository (no go.mod found)")
		}
		dir = parent
	}
}

// controlPlaneBinaries runs hack/control-plane.sh, which builds the binaries
// once and prints their directory.
func controlPlaneBinaries(ctx context.Context, root string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "control-plane.sh"))
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/control-plane.sh: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(dir, '\n'); i >= 0 {
		dir = dir[i+1:]
	}
	return dir, nil
}

// linkKubectl makes bin/kubectl the kubectl of the control plane, so that
// `bin/kubectl --kubeconfig .local/kubeconfig ...` works.
func linkKubectl(root, binDir string) error {
	link := filepath.Join(root, "bin", "kubectl")
	target := filepath.Join("control-plane", "kubectl")
	if _, err := os.Stat(filepath.Join(root, "bin", target)); err != nil {
		if target, err = filepath.Rel(filepath.Dir(link), filepath.Join(binDir, "kubectl")); err != nil {
			return err
		}
	}
	if current, err := os.Readlink(link); err == nil && current == target {
		return nil
	}
	_ = os.Remove(link)
	return os.Symlink(target, link)
}

func webhookCertDir(o options) string { return filepath.Join(o.stateDir, "webhook-certs") }

// deployment holds config/default's namespace and namePrefix, and its
// transformers (which, for example, keep ClusterRole customer-operator-partner
// out of namePrefix), so that the local run has the same names as `make deploy`.
type deployment struct {
	Namespace    string   `json:"namespace"`
	NamePrefix   string   `json:"namePrefix"`
	Transformers []string `json:"transformers"`
}

func readDeployment(configDir string) deployment {
	d := deployment{Namespace: defaultNamespace, NamePrefix: defaultNamePrefix}
	data, err := os.ReadFile(filepath.Join(configDir, "default", "kustomization.yaml"))
	if err != nil {
		return d
	}
	var k deployment
	if yaml.Unmarshal(data, &k) != nil {
		return d
	}
	if k.Namespace != "" {
		d.Namespace = k.Namespace
	}
	if k.NamePrefix != "" {
		d.NamePrefix = k.NamePrefix
	}
	for _, t := range k.Transformers {
		if !strings.Contains(t, "://") {
			d.Transformers = append(d.Transformers, filepath.Join(configDir, "default", t))
		}
	}
	return d
}

func namespace(o options) string { return readDeployment(o.configDir).Namespace }

// installedParts are the config/ directories the local run installs, in this
// order: everything config/default deploys except the manager's Deployment
// (config/manager). Absent ones are skipped.
var installedParts = []string{"crd", "rbac", "policy", "webhook"}

// install applies what config/crd, config/rbac, config/policy and
// config/webhook render to, with config/default's namespace, namePrefix and
// transformers, by server-side apply. The webhooks call the manager on
// 127.0.0.1 with a local CA.
func install(ctx context.Context, o options, cluster *localcluster.Cluster, log func(string, ...any)) error {
	cfg := cluster.AdminConfig()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	dep := readDeployment(o.configDir)

	caBundle, err := localcluster.EnsureServingCerts(webhookCertDir(o), "127.0.0.1", "localhost")
	if err != nil {
		return fmt.Errorf("webhook certificates: %w", err)
	}

	// The namespace comes first: once the webhook configuration exists, only
	// its matchConditions let it be created while the manager is down.
	if err := ensureNamespace(ctx, cs, dep.Namespace); err != nil {
		return err
	}

	for _, part := range installedParts {
		dir := filepath.Join(o.configDir, part)
		if _, err := os.Stat(dir); err != nil {
			log("%s not found: skipped", rel(dir))
			continue
		}
		objs, err := render(o, dep, part)
		if err != nil {
			return err
		}
		for _, obj := range objs {
			pointWebhooksAtLocalManager(obj, o.webhookPort, caBundle)
		}
		log("applying %d objects from %s", len(objs), rel(dir))
		if err := applyAll(ctx, dyn, mapper, dep.Namespace, objs); err != nil {
			return fmt.Errorf("applying %s: %w", rel(dir), err)
		}
		if part == "crd" {
			if err := waitEstablished(ctx, dyn, objs); err != nil {
				return err
			}
			mapper.Reset()
		}
	}
	// Normally config/rbac has it; without it there is no token to mint.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: dep.NamePrefix + serviceAccount, Namespace: dep.Namespace}}
	if _, err := cs.CoreV1().ServiceAccounts(dep.Namespace).Create(ctx, sa, metav1.CreateOptions{FieldManager: fieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, name string) error {
	if _, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{}); err == nil {
		return nil
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/name": "customer-operator"}}}
	_, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{FieldManager: fieldManager})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// render builds config/<part> through a kustomization that adds config/default's
// namespace, namePrefix and transformers, written under the state directory.
func render(o options, dep deployment, part string) ([]*unstructured.Unstructured, error) {
	dir := filepath.Join(o.stateDir, "render", part)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	kustomization := map[string]any{
		"apiVersion": "kustomize.config.k8s.io/v1beta1",
		"kind":       "Kustomization",
		"namespace":  dep.Namespace,
		"namePrefix": dep.NamePrefix,
	}
	src := filepath.Join(o.configDir, part)
	if hasKustomization(src) {
		kustomization["resources"] = []string{relTo(dir, src)}
	} else {
		// Plain YAML files, applied as they are.
		files, _ := filepath.Glob(filepath.Join(src, "*.yaml"))
		sort.Strings(files)
		var res []string
		for _, f := range files {
			res = append(res, relTo(dir, f))
		}
		kustomization["resources"] = res
	}
	var transformers []string
	for _, t := range dep.Transformers {
		transformers = append(transformers, relTo(dir, t))
	}
	if len(transformers) > 0 {
		kustomization["transformers"] = transformers
	}
	data, err := yaml.Marshal(kustomization)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), data, 0o644); err != nil {
		return nil, err
	}
	kubectl := filepath.Join(o.root, "bin", "kubectl")
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", "--load-restrictor=LoadRestrictionsNone", dir)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl kustomize %s (for %s): %w: %s", rel(dir), rel(src), err, strings.TrimSpace(stderr.String()))
	}
	return decodeYAML(out)
}

func hasKustomization(dir string) bool {
	for _, name := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

func decodeYAML(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// pointWebhooksAtLocalManager replaces the Service of every webhook (and of
// any CRD conversion webhook) by https://127.0.0.1:<port><path>, with caBundle
// the local webhook CA.
func pointWebhooksAtLocalManager(obj *unstructured.Unstructured, port int, caBundle []byte) {
	ca := base64.StdEncoding.EncodeToString(caBundle)
	rewrite := func(clientConfig map[string]any) {
		path := "/"
		if svc, ok := clientConfig["service"].(map[string]any); ok {
			if p, ok := svc["path"].(string); ok && p != "" {
				path = p
			}
		}
		delete(clientConfig, "service")
		clientConfig["url"] = fmt.Sprintf("https://127.0.0.1:%d%s", port, path)
		clientConfig["caBundle"] = ca
	}
	gvk := obj.GroupVersionKind()
	switch {
	case gvk.Group == "admissionregistration.k8s.io" && (gvk.Kind == "ValidatingWebhookConfiguration" || gvk.Kind == "MutatingWebhookConfiguration"):
		webhooks, _, _ := unstructured.NestedSlice(obj.Object, "webhooks")
		for _, w := range webhooks {
			if cc, ok := w.(map[string]any)["clientConfig"].(map[string]any); ok {
				rewrite(cc)
			}
		}
		_ = unstructured.SetNestedSlice(obj.Object, webhooks, "webhooks")
	case gvk.Group == "apiextensions.k8s.io" && gvk.Kind == "CustomResourceDefinition":
		if cc, ok, _ := unstructured.NestedMap(obj.Object, "spec", "conversion", "webhook", "clientConfig"); ok {
			rewrite(cc)
			_ = unstructured.SetNestedMap(obj.Object, cc, "spec", "conversion", "webhook", "clientConfig")
		}
	}
}

// applyAll server-side applies objs, in order, with the local run's field manager.
func applyAll(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, defaultNS string, objs []*unstructured.Unstructured) error {
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
			ns := obj.GetNamespace()
			if ns == "" {
				ns = defaultNS
				obj.SetNamespace(ns)
			}
			ri = dyn.Resource(mapping.Resource).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: fieldManager, Force: true}); err != nil {
			return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
		}
	}
	return nil
}

// waitEstablished waits until every CRD among objs serves its resources.
func waitEstablished(ctx context.Context, dyn dynamic.Interface, objs []*unstructured.Unstructured) error {
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, obj := range objs {
		if obj.GetKind() != "CustomResourceDefinition" {
			continue
		}
		for {
			crd, err := crds.Get(ctx, obj.GetName(), metav1.GetOptions{})
			if err == nil && hasTrueCondition(crd, "Established") {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("CRD %s not established: %w", obj.GetName(), ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

func hasTrueCondition(obj *unstructured.Unstructured, condType string) bool {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == condType && m["status"] == "True" {
			return true
		}
	}
	return false
}

// operatorCredentials writes .local/operator.kubeconfig, which authenticates
// as the manager's ServiceAccount with a token file, and returns a function
// that keeps the token fresh while the local run lasts.
func operatorCredentials(ctx context.Context, o options, cluster *localcluster.Cluster) (string, func(context.Context, func(string, ...any)), error) {
	dep := readDeployment(o.configDir)
	cs, err := kubernetes.NewForConfig(cluster.AdminConfig())
	if err != nil {
		return "", nil, err
	}
	tokenFile := filepath.Join(o.stateDir, "operator.token")
	mint := func(ctx context.Context) error {
		seconds := int64(tokenLifetime.Seconds())
		tr, err := cs.CoreV1().ServiceAccounts(dep.Namespace).CreateToken(ctx, dep.NamePrefix+serviceAccount,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds}}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("token for ServiceAccount %s/%s: %w", dep.Namespace, dep.NamePrefix+serviceAccount, err)
		}
		tmp := tokenFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(tr.Status.Token), 0o600); err != nil {
			return err
		}
		return os.Rename(tmp, tokenFile)
	}
	if err := mint(ctx); err != nil {
		return "", nil, err
	}
	admin := cluster.AdminConfig()
	operator := &rest.Config{
		Host:            admin.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: admin.CAData},
		BearerTokenFile: tokenFile,
	}
	path := filepath.Join(o.stateDir, "operator.kubeconfig")
	if err := localcluster.WriteKubeconfig(path, operator, "customer-operator-local-operator"); err != nil {
		return "", nil, err
	}
	renew := func(ctx context.Context, log func(string, ...any)) {
		t := time.NewTicker(tokenRenewal)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := mint(ctx); err != nil && ctx.Err() == nil {
					log("renewing the manager's token: %v", err)
				}
			}
		}
	}
	return path, renew, nil
}

// startMailCatcher starts the mail catcher in this process, with its messages
// in .local/mail (kept: the operator never sends an invitation twice).
func startMailCatcher(o options, log func(string, ...any)) (*mailcatcher.Catcher, error) {
	logFile, err := os.OpenFile(filepath.Join(o.stateDir, "logs", "mailcatcher.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	c, err := mailcatcher.Start(mailcatcher.Options{
		SMTPAddr: o.mailSMTP,
		HTTPAddr: o.mailUI,
		Dir:      filepath.Join(o.stateDir, "mail"),
		Log:      logFile,
	})
	if err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("mail catcher: %w (another one running? set SMTP_ADDRESS to use it)", err)
	}
	log("mail catcher: SMTP %s, web UI http://%s", c.SMTPAddr(), c.HTTPAddr())
	return c, nil
}

// waitHTTP polls url until it answers 200, p exits, ctx ends or timeout passes.
func waitHTTP(ctx context.Context, url string, timeout time.Duration, p *localcluster.Process) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var lastErr error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return lastErr
		case <-p.Done():
			return fmt.Errorf("%s exited", p.Name())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func printSummary(o options, cluster *localcluster.Cluster, operatorKubeconfig, smtp, mailUI string) {
	w := bufio.NewWriter(os.Stderr)
	defer w.Flush()
	logs := cluster.LogDir()
	line := strings.Repeat("─", 72)
	fmt.Fprintf(w, "\n%s\n customer-operator local run — Ctrl-C stops it; state is kept in %s\n%s\n", line, rel(o.stateDir), line)
	fmt.Fprintf(w, " API server           %s\n", cluster.APIServerURL())
	fmt.Fprintf(w, " admin kubeconfig     %s\n", rel(cluster.KubeconfigPath()))
	fmt.Fprintf(w, " operator kubeconfig  %s (ServiceAccount %s/%s%s, not admin)\n", rel(operatorKubeconfig), namespace(o), readDeployment(o.configDir).NamePrefix, serviceAccount)
	if mailUI != "" {
		fmt.Fprintf(w, " mail (web UI)        %s   (SMTP %s)\n", mailUI, smtp)
	} else {
		fmt.Fprintf(w, " mail                 sent to SMTP_ADDRESS=%s\n", smtp)
	}
	fmt.Fprintf(w, " invitation portal    http://%s\n", o.portalAddr)
	fmt.Fprintf(w, " webhooks             https://127.0.0.1:%d (certificates in %s)\n", o.webhookPort, rel(webhookCertDir(o)))
	fmt.Fprintf(w, " metrics / health     %s / http://%s/readyz\n", o.metricsAddr, o.healthAddr)
	catcher := ",mailcatcher"
	if mailUI == "" {
		catcher = "" // SMTP_ADDRESS: no mail catcher runs
	}
	fmt.Fprintf(w, " logs                 %s/{etcd,kube-apiserver,kube-controller-manager%s,manager}.log\n", rel(logs), catcher)
	fmt.Fprintf(w, "\n Try:\n")
	fmt.Fprintf(w, "   export KUBECONFIG=%s\n", cluster.KubeconfigPath())
	fmt.Fprintf(w, "   bin/kubectl apply -f config/samples/\n")
	fmt.Fprintf(w, "   bin/kubectl get partnerops\n")
	fmt.Fprintf(w, "   bin/kubectl wait --for=condition=Ready customer/<name>\n")
	fmt.Fprintf(w, "   bin/kubectl --kubeconfig %s auth can-i --list   # what the operator may do\n", rel(operatorKubeconfig))
	fmt.Fprintf(w, " Reset everything: stop, then rm -rf %s\n%s\n\n", rel(o.stateDir), line)
}

// rel shortens path relative to the working directory when it is below it.
func rel(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	r, err := filepath.Rel(wd, path)
	if err != nil || strings.HasPrefix(r, "..") {
		return path
	}
	return r
}

// relTo is path relative to dir, for kustomization resources (which must be relative).
func relTo(dir, path string) string {
	r, err := filepath.Rel(dir, path)
	if err != nil {
		return path
	}
	return r
}

// prefixWriter marks the control plane's progress lines as the local run's.
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte("local-run: "), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}
