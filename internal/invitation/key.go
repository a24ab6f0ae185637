package invitation

import (
	"context"
	"crypto/rand"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const (
	// DefaultKeySecretName is the Secret, in the operator's namespace, that holds the
	// HMAC key of invitation tokens.
	DefaultKeySecretName = "customer-operator-invitation-key"

	// KeySecretDataKey is the key of the HMAC key within the Secret's data.
	KeySecretDataKey = "key"
)

// EnsureKey returns the invitation key kept in the Secret namespace/name, creating
// the Secret with 32 random bytes when it does not exist yet. Every replica calls it
// at start-up; when two race to create it, the loser reads the winner's key, so all
// replicas sign with the same key.
//
// Pass an uncached client (the manager's cache is not running yet at start-up, and
// caching Secrets would need list/watch on them); it needs get and create on
// Secrets in that namespace. The key is read once, at start-up: rotating it is
// deleting the Secret and then restarting every replica (docs/operations.md), after
// which every outstanding link stops working and a resend-invitation makes new ones.
func EnsureKey(ctx context.Context, c client.Client, namespace, name string) ([]byte, error) {
	key, err := readKey(ctx, c, namespace, name)
	if err == nil || !apierrors.IsNotFound(err) {
		return key, err
	}

	secret, err := newKeySecret(namespace, name)
	if err != nil {
		return nil, err
	}
	switch err := c.Create(ctx, secret); {
	case err == nil:
		return secret.Data[KeySecretDataKey], nil
	case apierrors.IsAlreadyExists(err):
		// Another replica created it between our read and our create: use theirs.
		return readKey(ctx, c, namespace, name)
	default:
		return nil, fmt.Errorf("creating invitation key Secret %s/%s: %w", namespace, name, err)
	}
}

func readKey(ctx context.Context, c client.Client, namespace, name string) ([]byte, error) {
	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, err
		}
		return nil, fmt.Errorf("reading invitation key Secret %s/%s: %w", namespace, name, err)
	}
	key := secret.Data[KeySecretDataKey]
	if len(key) < MinKeyLen {
		// Never replace a short key silently: that would kill every outstanding link
		// without anyone having asked for it.
		return nil, fmt.Errorf("invitation key Secret %s/%s: data[%q] has %d bytes, need at least %d; delete the Secret to generate a new key",
			namespace, name, KeySecretDataKey, len(key), MinKeyLen)
	}
	return key, nil
}

func newKeySecret(namespace, name string) (*corev1.Secret, error) {
	key := make([]byte, MinKeyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generating invitation key: %w", err)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace,
			Name:      name,
			Labels: map[string]string{
				"app.kubernetes.io/name":       "customer-operator",
				"app.kubernetes.io/component":  "invitation-key",
				"app.kubernetes.io/managed-by": "customer-operator",
			},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{KeySecretDataKey: key},
	}, nil
}
