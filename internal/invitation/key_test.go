package invitation

import (
	"bytes"
	"context"
	"errors"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

const testNamespace = "customer-operator-system"

func keySecret(key []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: DefaultKeySecretName},
		Data:       map[string][]byte{KeySecretDataKey: key},
	}
}

func TestEnsureKeyCreatesOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	c := fake.NewClientBuilder().Build()

	key, err := EnsureKey(ctx, c, testNamespace, DefaultKeySecretName)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(key).To(HaveLen(MinKeyLen))
	g.Expect(key).NotTo(Equal(make([]byte, MinKeyLen)), "random, not zero")

	var secret corev1.Secret
	g.Expect(c.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: DefaultKeySecretName}, &secret)).To(Succeed())
	g.Expect(secret.Data[KeySecretDataKey]).To(Equal(key))

	again, err := EnsureKey(ctx, c, testNamespace, DefaultKeySecretName)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(again).To(Equal(key), "a restart keeps the key, so outstanding links keep working")
}

func TestEnsureKeyUsesExisting(t *testing.T) {
	g := NewWithT(t)
	existing := bytes.Repeat([]byte{7}, 48)
	c := fake.NewClientBuilder().WithObjects(keySecret(existing)).Build()

	key, err := EnsureKey(context.Background(), c, testNamespace, DefaultKeySecretName)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(key).To(Equal(existing))
}

func TestEnsureKeyRefusesShortKey(t *testing.T) {
	g := NewWithT(t)
	c := fake.NewClientBuilder().WithObjects(keySecret([]byte("short"))).Build()

	_, err := EnsureKey(context.Background(), c, testNamespace, DefaultKeySecretName)
	g.Expect(err).To(MatchError(ContainSubstring("need at least 32")))
}

// TestEnsureKeyLosesCreateRace: another replica creates the Secret between our read
// and our create. We must end up with its key, not ours.
func TestEnsureKeyLosesCreateRace(t *testing.T) {
	g := NewWithT(t)
	winner := bytes.Repeat([]byte{9}, MinKeyLen)
	c := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := cl.Create(ctx, keySecret(winner)); err != nil { // the other replica
				return err
			}
			return cl.Create(ctx, obj, opts...)
		},
	}).Build()

	key, err := EnsureKey(context.Background(), c, testNamespace, DefaultKeySecretName)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(key).To(Equal(winner))
}

func TestEnsureKeyReportsErrors(t *testing.T) {
	g := NewWithT(t)
	boom := errors.New("boom")
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, DefaultKeySecretName, boom)
	tests := map[string]interceptor.Funcs{
		"get fails": {Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return forbidden
		}},
		"create fails": {Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
			return forbidden
		}},
	}
	for name, funcs := range tests {
		t.Run(name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithInterceptorFuncs(funcs).Build()
			_, err := EnsureKey(context.Background(), c, testNamespace, DefaultKeySecretName)
			g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "wrapped, not swallowed: %v", err)
			g.Expect(err).To(MatchError(ContainSubstring(testNamespace + "/" + DefaultKeySecretName)))
		})
	}
}
