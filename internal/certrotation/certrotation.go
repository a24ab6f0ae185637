// Package certrotation issues and rotates the webhook server's certificate without
// cert-manager: a self-signed CA and a serving certificate for the webhook Service,
// kept in one Secret that every replica reads (so every replica serves the same
// certificate), with the CA written into the webhook configurations' caBundle.
//
// The manager serves the certificate from memory (GetCertificate), not from the
// mounted Secret, so a rotation takes effect as soon as a replica reads the Secret
// instead of after the kubelet's next volume sync.
//
// github.com/open-policy-agent/cert-controller does the same, but its newest
// release (v0.16.0) is built against controller-runtime v0.23 and k8s v0.35, two
// minor versions behind this module; this package is small enough to own.
package certrotation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Names as config/default renders them.
const (
	DefaultSecretName                = "customer-operator-webhook-server-cert"
	DefaultServiceName               = "customer-operator-webhook-service"
	DefaultValidatingWebhookConfName = "customer-operator-validating-webhook-configuration"
	DefaultMutatingWebhookConfName   = "customer-operator-mutating-webhook-configuration"
)

// Keys of the Secret. tls.crt/tls.key/ca.crt are what cert-manager writes too, so
// the overlays mount the same Secret layout.
const (
	keyCACert  = "ca.crt"
	keyCAKey   = "ca.key"
	keyTLSCert = corev1.TLSCertKey
	keyTLSKey  = corev1.TLSPrivateKeyKey
)

// Defaults of the lifetimes.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
	// DefaultRenewBefore renews a certificate when this much of its life is left.
	DefaultRenewBefore = 90 * 24 * time.Hour
	// DefaultCheckInterval is how often every replica re-reads the Secret and the
	// webhook configurations (repairing a caBundle someone reset).
	DefaultCheckInterval = 10 * time.Minute
)

// Options configure a Rotator.
type Options struct {
	// Client must read Secrets and webhook configurations uncached (the manager
	// does not cache them).
	Client    client.Client
	Namespace string
	// SecretName holds the CA and serving certificate.
	SecretName string
	// Hosts are the certificate's DNS names and IP addresses; default the webhook
	// Service's in-cluster names.
	Hosts []string
	// ValidatingWebhooks and MutatingWebhooks are the configurations whose every
	// webhook gets the CA as caBundle.
	ValidatingWebhooks []string
	MutatingWebhooks   []string

	CAValidity, CertValidity, RenewBefore, CheckInterval time.Duration
	Clock                                                clock.Clock
}

// Rotator keeps the Secret's certificate valid, the caBundles in place, and serves
// the current certificate to the webhook server. It runs on every replica.
type Rotator struct {
	opts Options

	mu       sync.RWMutex
	cert     *tls.Certificate
	injected bool
}

// New returns a Rotator with defaults filled in.
func New(opts Options) (*Rotator, error) {
	if opts.Client == nil || opts.Namespace == "" {
		return nil, errors.New("certrotation: a client and the operator's namespace are required")
	}
	if opts.SecretName == "" {
		opts.SecretName = DefaultSecretName
	}
	if len(opts.Hosts) == 0 {
		svc := DefaultServiceName + "." + opts.Namespace + ".svc"
		opts.Hosts = []string{svc, svc + ".cluster.local"}
	}
	if opts.CAValidity == 0 {
		opts.CAValidity = DefaultCAValidity
	}
	if opts.CertValidity == 0 {
		opts.CertValidity = DefaultCertValidity
	}
	if opts.RenewBefore == 0 {
		opts.RenewBefore = DefaultRenewBefore
	}
	if opts.CheckInterval == 0 {
		opts.CheckInterval = DefaultCheckInterval
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.RenewBefore >= opts.CertValidity || opts.RenewBefore >= opts.CAValidity {
		return nil, errors.New("certrotation: RenewBefore must be shorter than the validities")
	}
	return &Rotator{opts: opts}, nil
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (r *Rotator) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.cert == nil {
		return nil, errors.New("the webhook certificate is not issued yet")
	}
	return r.cert, nil
}

// TLSOption plugs the Rotator into webhook.Options.TLSOpts; controller-runtime then
// does not watch the cert dir.
func (r *Rotator) TLSOption(cfg *tls.Config) { cfg.GetCertificate = r.GetCertificate }

// ReadyCheck is a healthz.Checker: not ready until this replica serves a
// certificate and the caBundles trust it, so no Service endpoint points at a
// replica that API server requests would fail against.
func (r *Rotator) ReadyCheck(_ *http.Request) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	switch {
	case r.cert == nil:
		return errors.New("webhook certificate not issued yet")
	case !r.injected:
		return errors.New("webhook caBundle not injected yet")
	}
	return nil
}

// NeedLeaderElection is false: every replica serves webhooks and needs the
// certificate. The Secret's optimistic lock settles races between them.
func (r *Rotator) NeedLeaderElection() bool { return false }

// Start reconciles at once, then every CheckInterval (sooner after an error), until
// ctx ends.
func (r *Rotator) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("certrotation")
	const retry = 5 * time.Second
	for {
		wait := r.opts.CheckInterval
		if err := r.Reconcile(ctx); err != nil {
			log.Error(err, "Webhook certificate not in place; retrying", "secret", r.opts.SecretName)
			wait = retry
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.opts.Clock.After(wait):
		}
	}
}

// Reconcile makes the Secret hold a valid CA and serving certificate (issuing or
// renewing them when needed), loads the certificate for serving, and writes the CA
// bundle into every webhook of the configured configurations.
func (r *Rotator) Reconcile(ctx context.Context) error {
	secret := &corev1.Secret{}
	if err := r.opts.Client.Get(ctx, types.NamespacedName{Namespace: r.opts.Namespace, Name: r.opts.SecretName}, secret); err != nil {
		// The Secret ships with config/default (empty): the operator only needs
		// get and update on it, never create.
		return fmt.Errorf("reading Secret %s/%s: %w", r.opts.Namespace, r.opts.SecretName, err)
	}
	now := r.opts.Clock.Now()
	if data, renewed, err := r.renew(secret.Data, now); err != nil {
		return err
	} else if renewed {
		patch := client.MergeFromWithOptions(secret.DeepCopy(), client.MergeFromWithOptimisticLock{})
		secret.Data = data
		if err := r.opts.Client.Patch(ctx, secret, patch); err != nil {
			// A conflict: another replica renewed first; the next round reads its
			// certificate, so every replica serves the same one.
			return fmt.Errorf("storing the renewed webhook certificate: %w", err)
		}
		logf.FromContext(ctx).Info("Issued a new webhook certificate", "secret", r.opts.SecretName)
	}

	cert, err := tls.X509KeyPair(secret.Data[keyTLSCert], secret.Data[keyTLSKey])
	if err != nil {
		return fmt.Errorf("loading the webhook certificate: %w", err)
	}
	r.mu.Lock()
	r.cert = &cert
	r.mu.Unlock()

	if err := r.injectCABundle(ctx, secret.Data[keyCACert]); err != nil {
		return err
	}
	r.mu.Lock()
	r.injected = true
	r.mu.Unlock()
	return nil
}

// renew returns the Secret data to store when the CA or the serving certificate is
// missing, invalid, expiring or issued for other hosts, and renewed=false when the
// current data is good.
func (r *Rotator) renew(data map[string][]byte, now time.Time) (map[string][]byte, bool, error) {
	ca, caKey, caErr := parseCA(data)
	caBundle := data[keyCACert]
	if caErr != nil || now.Before(ca.NotBefore) || now.Add(r.opts.RenewBefore).After(ca.NotAfter) {
		var err error
		ca, caKey, err = newCA(now, r.opts.CAValidity)
		if err != nil {
			return nil, false, err
		}
		// Trust the old CA too while it is valid: replicas that still serve the
		// old certificate keep working until they read the new one.
		newBundle := pemCert(ca.Raw)
		if caErr == nil && now.Before(firstCert(caBundle).NotAfter) {
			newBundle = append(newBundle, pemCert(firstCert(caBundle).Raw)...)
		}
		caBundle = newBundle
	} else if r.servingCertValid(data, ca, now) {
		return data, false, nil
	}
	certPEM, keyPEM, err := newServingCert(ca, caKey, r.opts.Hosts, now, r.opts.CertValidity)
	if err != nil {
		return nil, false, err
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return nil, false, err
	}
	return map[string][]byte{
		keyCACert:  caBundle,
		keyCAKey:   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}),
		keyTLSCert: certPEM,
		keyTLSKey:  keyPEM,
	}, true, nil
}

// servingCertValid: signed by ca, for every host, already valid (a clock set back
// must not leave a replica serving a not-yet-valid certificate), and not about to
// expire.
func (r *Rotator) servingCertValid(data map[string][]byte, ca *x509.Certificate, now time.Time) bool {
	pair, err := tls.X509KeyPair(data[keyTLSCert], data[keyTLSKey])
	if err != nil || len(pair.Certificate) == 0 {
		return false
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || leaf.CheckSignatureFrom(ca) != nil || now.Before(leaf.NotBefore) || now.Add(r.opts.RenewBefore).After(leaf.NotAfter) {
		return false
	}
	for _, host := range r.opts.Hosts {
		if leaf.VerifyHostname(host) != nil {
			return false
		}
	}
	return true
}

// injectCABundle sets caBundle on every webhook of the configurations, patching
// only those that differ (no write when unchanged).
func (r *Rotator) injectCABundle(ctx context.Context, bundle []byte) error {
	for _, name := range r.opts.ValidatingWebhooks {
		cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := r.opts.Client.Get(ctx, client.ObjectKey{Name: name}, cfg); err != nil {
			return fmt.Errorf("reading ValidatingWebhookConfiguration %s: %w", name, err)
		}
		before := cfg.DeepCopy()
		for i := range cfg.Webhooks {
			cfg.Webhooks[i].ClientConfig.CABundle = bundle
		}
		if err := r.patchIfChanged(ctx, before, cfg); err != nil {
			return err
		}
	}
	for _, name := range r.opts.MutatingWebhooks {
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := r.opts.Client.Get(ctx, client.ObjectKey{Name: name}, cfg); err != nil {
			if apierrors.IsNotFound(err) && name == DefaultMutatingWebhookConfName {
				// config/default ships no mutating webhook while none is registered.
				continue
			}
			return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", name, err)
		}
		before := cfg.DeepCopy()
		for i := range cfg.Webhooks {
			cfg.Webhooks[i].ClientConfig.CABundle = bundle
		}
		if err := r.patchIfChanged(ctx, before, cfg); err != nil {
			return err
		}
	}
	return nil
}

func (r *Rotator) patchIfChanged(ctx context.Context, before, after client.Object) error {
	if equality.Semantic.DeepEqual(before, after) {
		return nil
	}
	// Optimistic lock: a webhook added by an upgrade between our read and
	// write must not lose its caBundle.
	patch := client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})
	if err := r.opts.Client.Patch(ctx, after, patch); err != nil {
		return fmt.Errorf("injecting the caBundle into %s: %w", after.GetName(), err)
	}
	return nil
}

func parseCA(data map[string][]byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	ca := firstCert(data[keyCACert])
	block, _ := pem.Decode(data[keyCAKey])
	if ca == nil || block == nil {
		return nil, nil, errors.New("no CA")
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, err
	}
	if !key.PublicKey.Equal(ca.PublicKey) {
		return nil, nil, errors.New("the CA key does not match the CA certificate")
	}
	return ca, key, nil
}

// firstCert is the first certificate of a PEM bundle, or nil.
func firstCert(bundle []byte) *x509.Certificate {
	block, _ := pem.Decode(bundle)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil
	}
	return cert
}

func newCA(now time.Time, validity time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "customer-operator-webhook-ca", Organization: []string{"customer-operator"}},
		NotBefore:             now.Add(-time.Hour), // tolerate clock skew
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	return ca, key, err
}

func newServingCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, hosts []string, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemCert(der), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}
