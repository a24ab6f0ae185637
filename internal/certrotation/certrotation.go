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
	"bytes"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// maxCarriedCAs is how many earlier CAs a new CA's bundle keeps.
const maxCarriedCAs = 2

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
	// next is a certificate under a CA that this round has just added to the
	// caBundles: it is served from the next round on, once the API server has had
	// time to trust it (until then the current one, still trusted, is served).
	next *tls.Certificate
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
		return errors.New("webhook caBundle not injected yet, or not yet trusting this replica's certificate")
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
		if err := r.Reconcile(ctx); apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
			// Both replicas renewed, or re-created the Secret, at once: routine. The
			// next round serves the winner's certificate.
			log.Info("Another replica stored the webhook certificate first; using theirs", "secret", r.opts.SecretName)
			wait = retry
		} else if err != nil {
			log.Error(err, "Webhook certificate not in place; retrying", "secret", r.opts.SecretName)
			wait = retry
		} else if r.settling() {
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
// renewing them when needed, creating the Secret if it is gone), writes the CA
// bundle into every webhook of the configured configurations, and loads the
// certificate for serving. A certificate under a CA the caBundles did not hold
// before this round is served from the next round on.
func (r *Rotator) Reconcile(ctx context.Context) error {
	key := types.NamespacedName{Namespace: r.opts.Namespace, Name: r.opts.SecretName}
	secret := &corev1.Secret{}
	missing := false
	if err := r.opts.Client.Get(ctx, key, secret); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading Secret %s: %w", key, err)
		}
		// config/default ships the Secret empty; someone deleted it (or a GitOps
		// prune did): a new one is created, or no restarted replica ever turns ready.
		missing = true
		secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	}
	live, err := r.liveBundle(ctx)
	if err != nil {
		return err
	}
	now := r.opts.Clock.Now()
	if data, renewed, err := r.renew(secret.Data, live, now); err != nil {
		return err
	} else if renewed {
		if missing {
			secret.Data = data
			// AlreadyExists: another replica created it first; the next round reads it.
			if err := r.opts.Client.Create(ctx, secret); err != nil {
				return fmt.Errorf("creating Secret %s with a new webhook certificate: %w", key, err)
			}
		} else {
			patch := client.MergeFromWithOptions(secret.DeepCopy(), client.MergeFromWithOptimisticLock{})
			secret.Data = data
			if err := r.opts.Client.Patch(ctx, secret, patch); err != nil {
				// A conflict: another replica renewed first; the next round reads its
				// certificate, so every replica serves the same one.
				return fmt.Errorf("storing the renewed webhook certificate: %w", err)
			}
		}
		logf.FromContext(ctx).Info("Issued a new webhook certificate", "secret", r.opts.SecretName)
	}

	cert, err := tls.X509KeyPair(secret.Data[keyTLSCert], secret.Data[keyTLSKey])
	if err != nil {
		return fmt.Errorf("loading the webhook certificate: %w", err)
	}
	if err := r.injectCABundle(ctx, secret.Data[keyCACert]); err != nil {
		return err
	}
	// The API server loads a changed caBundle asynchronously: a certificate that the
	// bundle live at the start of this round did not trust is served (or reported
	// ready) only from a later round on.
	settled := trusted(live, cert)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case settled || (r.cert != nil && sameIssuer(*r.cert, cert)):
		r.cert, r.next, r.injected = &cert, nil, true
	case r.cert != nil:
		// The current certificate, which the new bundle still trusts, stays.
		r.next, r.injected = &cert, true
	default:
		// A replica that serves nothing yet serves it, but is not ready (no
		// Service endpoint, so no API server call) until a later round.
		r.cert, r.next, r.injected = &cert, nil, false
	}
	if r.cert.Leaf != nil {
		recordServing(r.cert.Leaf.NotAfter)
	}
	return nil
}

// settling says that the next round comes soon: a new certificate waits for it,
// or this replica for readiness.
func (r *Rotator) settling() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.next != nil || (r.cert != nil && !r.injected)
}

// sameIssuer says whether both certificates were signed by the same key.
func sameIssuer(a, b tls.Certificate) bool {
	if a.Leaf == nil || b.Leaf == nil {
		return false
	}
	return len(a.Leaf.AuthorityKeyId) > 0 && bytes.Equal(a.Leaf.AuthorityKeyId, b.Leaf.AuthorityKeyId)
}

// trusted says whether cert was issued by one of the bundle's certificates.
func trusted(bundle []*x509.Certificate, cert tls.Certificate) bool {
	if cert.Leaf == nil {
		return false
	}
	for _, ca := range bundle {
		if cert.Leaf.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}

// renew returns the Secret data to store when the CA or the serving certificate is
// missing, invalid, expiring or issued for other hosts, and renewed=false when the
// current data is good.
func (r *Rotator) renew(data map[string][]byte, live []*x509.Certificate, now time.Time) (map[string][]byte, bool, error) {
	ca, caKey, caErr := parseCA(data)
	caBundle := data[keyCACert]
	if caErr != nil || now.Before(ca.NotBefore) || now.Add(r.opts.RenewBefore).After(ca.NotAfter) {
		var err error
		ca, caKey, err = newCA(now, r.opts.CAValidity)
		if err != nil {
			return nil, false, err
		}
		// Trust the old CA too while it is valid: replicas that still serve the
		// old certificate keep working until they read the new one. When the
		// Secret's CA is gone (deleted, emptied, corrupted), the old CAs are the
		// ones the caBundles hold now, at most the two newest: replicas serve the
		// newest CA's certificate, or for a few minutes the one before it; older
		// ones would only pile up each time the Secret is emptied.
		previous := live
		if caErr == nil {
			previous = []*x509.Certificate{firstCert(caBundle)}
		}
		newBundle := pemCert(ca.Raw)
		carried := 0
		for _, old := range previous {
			if carried < maxCarriedCAs && now.Before(old.NotAfter) {
				newBundle = append(newBundle, pemCert(old.Raw)...)
				carried++
			}
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

// liveBundle returns the CA certificates that the first webhook of the
// configurations trusts now (the operator writes the same bundle into all).
func (r *Rotator) liveBundle(ctx context.Context) ([]*x509.Certificate, error) {
	for _, name := range r.opts.ValidatingWebhooks {
		cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := r.opts.Client.Get(ctx, client.ObjectKey{Name: name}, cfg); err != nil {
			if apierrors.IsNotFound(err) {
				// Nothing trusted yet; the injection below says it is missing.
				continue
			}
			return nil, fmt.Errorf("reading ValidatingWebhookConfiguration %s: %w", name, err)
		}
		for _, w := range cfg.Webhooks {
			return parseCerts(w.ClientConfig.CABundle), nil
		}
	}
	return nil, nil
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
	if certs := parseCerts(bundle); len(certs) > 0 {
		return certs[0]
	}
	return nil
}

// parseCerts returns the certificates of a PEM bundle, up to the first block that
// is not one.
func parseCerts(bundle []byte) []*x509.Certificate {
	var certs []*x509.Certificate
	for {
		block, rest := pem.Decode(bundle)
		if block == nil || block.Type != "CERTIFICATE" {
			return certs
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return certs
		}
		certs, bundle = append(certs, cert), rest
	}
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
