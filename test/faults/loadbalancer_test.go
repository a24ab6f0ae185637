//go:build faults

package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadBalancer stands in for the webhook Service (envtest has no kube-proxy): a
// plain TCP proxy in front of the replicas' webhook servers. It balances
// connections, not requests, round-robin over the backends whose readiness probe
// passes, as kube-proxy does over a Service's ready endpoints; TLS passes through,
// so the replicas' serving certificate must cover the balancer's host.
//
// Unlike kube-proxy it tries the next ready backend when a dial fails (and takes
// the failed one out at once), so a connection opened after a replica died only
// fails when no replica is left.
type loadBalancer struct {
	ln       net.Listener
	backends []*lbBackend
	logf     func(format string, args ...any)

	mu   sync.Mutex
	next int
	open map[net.Conn]struct{}

	dialFailures atomic.Int32
	refused      atomic.Int32

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// lbBackend is one replica: where its webhook server listens and its /readyz.
type lbBackend struct {
	name     string
	addr     string
	readyURL string

	// Guarded by the balancer's mu.
	ready     bool
	failures  int
	downSince time.Time
	conns     int
}

// The readiness probe: kubelet's, with its period shortened from 10 s. As with
// kubelet, a probe that does not answer within the timeout fails, a backend is
// taken out after failureThreshold failures in a row (a replica busy for a moment
// on 2 loaded cores is not dead) and back in after one success.
const (
	readinessPeriod  = 200 * time.Millisecond
	readinessTimeout = time.Second
	failureThreshold = 3
)

// newLoadBalancer listens on host (any free port) and balances over backends,
// none of them ready until its first probe passes. logf reports readiness changes.
func newLoadBalancer(t *testing.T, host string, logf func(format string, args ...any), backends ...*lbBackend) *loadBalancer {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	lb := &loadBalancer{ln: ln, backends: backends, logf: logf, open: map[net.Conn]struct{}{}, stop: stop}
	lb.wg.Go(func() { lb.probe(ctx) })
	lb.wg.Go(lb.serve)
	// Nothing may log after the test ends: stop probing and close every connection.
	t.Cleanup(lb.close)
	return lb
}

// Addr is host:port to put into the webhook configuration.
func (lb *loadBalancer) Addr() string { return lb.ln.Addr().String() }

func (lb *loadBalancer) close() {
	lb.stop()
	_ = lb.ln.Close()
	lb.mu.Lock()
	for c := range lb.open {
		_ = c.Close()
	}
	lb.open = nil
	lb.mu.Unlock()
	lb.wg.Wait()
}

func (lb *loadBalancer) probe(ctx context.Context) {
	client := &http.Client{Timeout: readinessTimeout}
	ticker := time.NewTicker(readinessPeriod)
	defer ticker.Stop()
	for {
		var wg sync.WaitGroup
		for _, b := range lb.backends {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.readyURL, nil)
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("readyz: %s", resp.Status)
					}
				}
				if ctx.Err() != nil {
					return
				}
				lb.probed(b, err)
			})
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// probed records a probe's outcome (err nil: passed).
func (lb *loadBalancer) probed(b *lbBackend, err error) {
	lb.mu.Lock()
	if err == nil {
		b.failures = 0
	} else {
		b.failures++
	}
	failures := b.failures
	lb.mu.Unlock()
	switch {
	case err == nil:
		lb.setReady(b, true, nil)
	case failures >= failureThreshold:
		lb.setReady(b, false, fmt.Errorf("%d probes failed, the last: %w", failureThreshold, err))
	}
}

// setReady puts b in or takes it out.
func (lb *loadBalancer) setReady(b *lbBackend, ready bool, cause error) {
	lb.mu.Lock()
	changed := b.ready != ready
	b.ready = ready
	if changed && !ready {
		b.downSince = time.Now()
	}
	lb.mu.Unlock()
	if changed {
		if ready {
			lb.logf("balancer: backend %s ready", b.name)
		} else {
			lb.logf("balancer: backend %s taken out (%v)", b.name, cause)
		}
	}
}

// candidates are the ready backends, starting with the next one in turn.
func (lb *loadBalancer) candidates() []*lbBackend {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var ready []*lbBackend
	for i := range lb.backends {
		if b := lb.backends[(lb.next+i)%len(lb.backends)]; b.ready {
			ready = append(ready, b)
		}
	}
	lb.next = (lb.next + 1) % len(lb.backends)
	return ready
}

func (lb *loadBalancer) serve() {
	for {
		conn, err := lb.ln.Accept()
		if err != nil {
			return
		}
		lb.wg.Go(func() { lb.forward(conn) })
	}
}

func (lb *loadBalancer) track(c net.Conn) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.open == nil {
		return false
	}
	lb.open[c] = struct{}{}
	return true
}

func (lb *loadBalancer) untrack(c net.Conn) {
	lb.mu.Lock()
	delete(lb.open, c)
	lb.mu.Unlock()
	_ = c.Close()
}

func (lb *loadBalancer) forward(client net.Conn) {
	if !lb.track(client) {
		_ = client.Close()
		return
	}
	defer lb.untrack(client)
	var backend net.Conn
	for _, b := range lb.candidates() {
		conn, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err != nil {
			lb.dialFailures.Add(1)
			lb.setReady(b, false, err)
			continue
		}
		lb.mu.Lock()
		b.conns++
		lb.mu.Unlock()
		backend = conn
		break
	}
	if backend == nil {
		lb.refused.Add(1)
		return
	}
	if !lb.track(backend) {
		_ = backend.Close()
		return
	}
	defer lb.untrack(backend)
	// A connection ends as a whole: when either side closes or breaks (a killed
	// replica resets its connections), so does the other.
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(backend, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, backend); done <- struct{}{} }()
	<-done
	_ = client.Close()
	_ = backend.Close()
	<-done
}

// waitReady waits until every backend passed its probe.
func (lb *loadBalancer) waitReady(ctx context.Context) error {
	for {
		lb.mu.Lock()
		all := true
		for _, b := range lb.backends {
			all = all && b.ready
		}
		lb.mu.Unlock()
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("backends of the balancer not ready: %w", ctx.Err())
		case <-time.After(readinessPeriod):
		}
	}
}

// takenOutSince is when backend name was last taken out; zero while it is ready.
func (lb *loadBalancer) takenOutSince(name string) time.Time {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, b := range lb.backends {
		if b.name == name && !b.ready {
			return b.downSince
		}
	}
	return time.Time{}
}

// connections reports how many connections each backend got, e.g. "a=3 b=2".
func (lb *loadBalancer) connections() string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	s := ""
	for i, b := range lb.backends {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s=%d", b.name, b.conns)
	}
	return s
}
