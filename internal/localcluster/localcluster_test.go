package localcluster

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// binDir finds the control-plane binaries like the envtest suites do:
// KUBEBUILDER_ASSETS, else bin/control-plane at the repository root. The test
// fails without them: a skipped test proves nothing.
func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		root, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(root)
			if parent == root {
				t.Fatal("repository root (go.mod) not found")
			}
			root = parent
		}
		dir = filepath.Join(root, "bin", "control-plane")
	}
	for _, bin := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			t.Fatalf("%s missing in %s: run hack/control-plane.sh (or set KUBEBUILDER_ASSETS): %v", bin, dir, err)
		}
	}
	return dir
}

func TestClusterBehavesLikeARealOneAndKeepsItsState(t *testing.T) {
	g := NewWithT(t)
	bins := binDir(t)
	state := t.TempDir()
	port, err := freePort()
	g.Expect(err).NotTo(HaveOccurred())
	ctx := t.Context()

	c, err := Start(ctx, Options{BinDir: bins, StateDir: state, APIServerPort: port})
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(c.Stop)
	g.Expect(c.KubeconfigPath()).To(BeAnExistingFile())
	cs := kubernetes.NewForConfigOrDie(c.AdminConfig())

	t.Run("the namespace controller finishes deletions", func(t *testing.T) {
		g := NewWithT(t)
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		_, err = cs.CoreV1().ConfigMaps("doomed").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "content"}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(cs.CoreV1().Namespaces().Delete(ctx, "doomed", metav1.DeleteOptions{})).To(Succeed())
		g.Eventually(func() bool {
			_, err := cs.CoreV1().Namespaces().Get(ctx, "doomed", metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		}).WithTimeout(time.Minute).Should(BeTrue(), "namespace doomed is still there")
	})

	t.Run("the garbage collector removes dependents", func(t *testing.T) {
		g := NewWithT(t)
		owner, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner"}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		_, err = cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name:            "dependent",
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}},
		}}, metav1.CreateOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		background := metav1.DeletePropagationBackground
		g.Expect(cs.CoreV1().ConfigMaps("default").Delete(ctx, "owner", metav1.DeleteOptions{PropagationPolicy: &background})).To(Succeed())
		g.Eventually(func() bool {
			_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "dependent", metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		}).WithTimeout(time.Minute).Should(BeTrue(), "the dependent ConfigMap was not garbage-collected")
	})

	t.Run("ClusterRole admin has aggregated rules", func(t *testing.T) {
		g := NewWithT(t)
		role, err := cs.RbacV1().ClusterRoles().Get(ctx, "admin", metav1.GetOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(role.Rules).NotTo(BeEmpty())
	})

	t.Run("ServiceAccount tokens can be requested", func(t *testing.T) {
		g := NewWithT(t)
		g.Eventually(func() error {
			_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
			return err
		}).WithTimeout(time.Minute).Should(Succeed(), "the serviceaccount controller made no default ServiceAccount")
		// TokenRequest is exercised by hack/local-run; here it is enough that the
		// API server signs with the key kept in the state directory.
		g.Expect(filepath.Join(state, "pki", "sa.key")).To(BeAnExistingFile())
	})

	// Data to find again after a restart.
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kept"}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	_, err = cs.CoreV1().ConfigMaps("kept").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Data:       map[string]string{"answer": "42"},
	}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	caBefore, err := os.ReadFile(filepath.Join(state, "pki", "ca.crt"))
	g.Expect(err).NotTo(HaveOccurred())
	pids := []int{c.etcd.Pid(), c.apiServer.Pid(), c.controllers.proc.Pid()}

	c.Stop()
	for _, pid := range pids {
		g.Expect(syscall.Kill(pid, 0)).To(MatchError(syscall.ESRCH), "process %d is still running after Stop", pid)
	}
	g.Expect(c.Err()).NotTo(HaveOccurred(), "Stop is not a failure")

	t.Run("a restart on the same state directory keeps data, port and CA", func(t *testing.T) {
		g := NewWithT(t)
		again, err := Start(ctx, Options{BinDir: bins, StateDir: state})
		g.Expect(err).NotTo(HaveOccurred())
		t.Cleanup(again.Stop)
		g.Expect(again.APIServerURL()).To(Equal(c.APIServerURL()))
		caAfter, err := os.ReadFile(filepath.Join(state, "pki", "ca.crt"))
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(bytes.Equal(caBefore, caAfter)).To(BeTrue(), "the CA was replaced")

		cs := kubernetes.NewForConfigOrDie(again.AdminConfig())
		cm, err := cs.CoreV1().ConfigMaps("kept").Get(ctx, "data", metav1.GetOptions{})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(cm.Data).To(HaveKeyWithValue("answer", "42"))

		// While it runs, nobody else may use its state directory.
		second, err := Start(ctx, Options{BinDir: bins, StateDir: state})
		if err == nil {
			second.Stop()
		}
		g.Expect(err).To(MatchError(ContainSubstring("locked")))
	})
}

func TestStartControllerManagerNextToEnvtest(t *testing.T) {
	g := NewWithT(t)
	bins := binDir(t)
	ctx := t.Context()
	ctrllog.SetLogger(logr.Discard()) // envtest's own logs are not under test
	testEnv := &envtest.Environment{BinaryAssetsDirectory: bins}
	cfg, err := testEnv.Start()
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = testEnv.Stop() })
	cs := kubernetes.NewForConfigOrDie(cfg)
	role, err := cs.RbacV1().ClusterRoles().Get(ctx, "admin", metav1.GetOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(role.Rules).To(BeEmpty(), "envtest alone aggregates nothing")

	cm, err := StartControllerManager(ctx, ControllerManagerOptions{
		BinDir:                bins,
		Config:                cfg,
		ServiceAccountKeyFile: filepath.Join(testEnv.ControlPlane.APIServer.CertDir, "sa-signer.key"),
	})
	g.Expect(err).NotTo(HaveOccurred())
	dir := filepath.Dir(cm.LogFile())
	pid := cm.proc.Pid()
	defer func() {
		cm.Stop()
		g.Expect(syscall.Kill(pid, 0)).To(MatchError(syscall.ESRCH), "kube-controller-manager still runs after Stop")
		g.Expect(dir).NotTo(BeADirectory(), "Stop leaves its temporary directory")
	}()

	role, err = cs.RbacV1().ClusterRoles().Get(ctx, "admin", metav1.GetOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(role.Rules).NotTo(BeEmpty())
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "doomed"}}, metav1.CreateOptions{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cs.CoreV1().Namespaces().Delete(ctx, "doomed", metav1.DeleteOptions{})).To(Succeed())
	g.Eventually(func() bool {
		_, err := cs.CoreV1().Namespaces().Get(ctx, "doomed", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}).WithTimeout(time.Minute).Should(BeTrue(), "namespace doomed is still there")
}
