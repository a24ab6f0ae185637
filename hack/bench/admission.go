package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/controllers"
)

// namespaceWebhookPath is the label controller-runtime's webhook metrics carry
// for our namespace webhook.
const namespaceWebhookPath = "/validate--v1-namespace"

// admissionQuiet is how long the manager must have reconciled nothing before the
// next admission run: longer than controllers.CreateCoalesceDelay, after which a
// new project's customer is reconciled (an item waiting for it is not yet in
// workqueue_depth), so that no run's reconciles land in the next.
const admissionQuiet = controllers.CreateCoalesceDelay + 1500*time.Millisecond

// admissionRun is one mode's namespace CREATE latencies, measured by the
// client (the admin, a partner), end to end through the API server.
type admissionRun struct {
	serial, spread, hot []time.Duration
	errors              int
	firstError          string
	// server is our handler's own latency in the spread and hot runs, from
	// controller_runtime_webhook_latency_seconds; only for modeOurs.
	serverSerial, serverSpread, serverHot serverLatency
	// serverLatency is the API server's mean latency of each kind of write in the
	// spread run, in ms.
	serverLatency map[string]float64
	// cpu is the CPU seconds each process used in the spread run.
	cpu map[string]float64
	// requestsSpread and requestsHot are the manager's API requests in those
	// runs, by method and status code.
	requestsSpread, requestsHot map[string]float64
}

// serverLatency is what the webhook latency histogram says about one run: the
// share of requests handled within 10 ms, their number and mean (seconds).
type serverLatency struct {
	within10ms, count, mean float64
	// patchMean is the mean latency of the manager's PATCH requests in the same
	// window (client-go's rest_client_request_duration_seconds): the API server's
	// share of the handler's time, one reservation write per admitted create.
	patchMean float64
	// writeP50 is the median of the quota ledger's own reservation writes
	// (customer_operator_quota_write_seconds, result ok), and reserveP50/P99 the
	// ledger's whole decision (customer_operator_quota_reserve_seconds: queue,
	// write, retries), in seconds.
	writeP50, reserveP50, reserveP99 float64
}

// ledgerLatency fills the quota ledger's figures of l from two scrapes.
func (l *serverLatency) ledgerLatency(before, after metrics) {
	l.writeP50 = histogramQuantile(before, after, "customer_operator_quota_write_seconds", label("result", "ok"), 0.5)
	l.reserveP50 = histogramQuantile(before, after, "customer_operator_quota_reserve_seconds", label("outcome", "reserved"), 0.5)
	l.reserveP99 = histogramQuantile(before, after, "customer_operator_quota_reserve_seconds", label("outcome", "reserved"), 0.99)
}

func percentile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return math.NaN()
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(math.Ceil(q*float64(len(s)))) - 1
	idx = max(0, min(idx, len(s)-1))
	return float64(s[idx]) / float64(time.Millisecond)
}

var modeKeys = map[admissionMode]string{modeNone: "none", modeAllowAll: "allow", modeOurs: "ours"}

func (b *bench) createProject(ctx context.Context, name, customer string) (time.Duration, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.CustomerLabel: customer}}}
	start := time.Now()
	err := b.admin.Create(ctx, ns)
	return time.Since(start), err
}

// runAdmission measures namespace CREATE (projects of customers under quota)
// with no webhook, an allow-all webhook and ours, in that order, each serially,
// with 50 creators over 50 distinct customers, and with 50 creators on one hot
// customer.
func (b *bench) runAdmission(ctx context.Context) (map[admissionMode]*admissionRun, error) {
	if err := b.startAllowAll(ctx); err != nil {
		return nil, err
	}
	creators := min(b.s.Creators, b.s.Customers)
	out := map[admissionMode]*admissionRun{}
	for _, mode := range []admissionMode{modeNone, modeAllowAll, modeOurs} {
		key := modeKeys[mode]
		b.log("admission: %s", mode)
		if err := b.setNamespaceWebhook(ctx, mode); err != nil {
			return nil, err
		}
		if err := b.awaitMode(ctx, mode); err != nil {
			return nil, err
		}
		run := &admissionRun{}
		out[mode] = run
		var mu sync.Mutex
		record := func(dst *[]time.Duration, d time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				run.errors++
				if run.firstError == "" {
					run.firstError = err.Error()
				}
				return
			}
			*dst = append(*dst, d)
		}

		isNamespaceHook := label("webhook", namespaceWebhookPath)
		serialBefore, err := b.metrics(ctx)
		if err != nil {
			return nil, err
		}
		for i := 0; i < b.s.SerialCreates; i++ {
			d, err := b.createProject(ctx, fmt.Sprintf("%s-serial-%d", key, i), fmt.Sprintf("cust-%d", i%creators))
			record(&run.serial, d, err)
		}
		if mode == modeOurs {
			serialAfter, err := b.metrics(ctx)
			if err != nil {
				return nil, err
			}
			l := &run.serverSerial
			l.within10ms, l.count, l.mean = histogramShare(serialBefore, serialAfter, "controller_runtime_webhook_latency_seconds", isNamespaceHook, 0.01)
			_, _, l.patchMean = histogramShare(serialBefore, serialAfter, "rest_client_request_duration_seconds", label("verb", "PATCH"), 0.005)
			l.ledgerLatency(serialBefore, serialAfter)
		}
		if err := b.waitIdle(ctx, admissionQuiet, 2*time.Minute); err != nil {
			return nil, err
		}

		concurrent := func(sub string, customer func(w int) string, dst *[]time.Duration) (metrics, metrics, error) {
			before, err := b.metrics(ctx)
			if err != nil {
				return nil, nil, err
			}
			var wg sync.WaitGroup
			for w := 0; w < creators; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := 0; k < b.s.CreatesPerCreator; k++ {
						d, err := b.createProject(ctx, fmt.Sprintf("%s-%s-%d-%d", key, sub, w, k), customer(w))
						record(dst, d, err)
					}
				}()
			}
			wg.Wait()
			after, err := b.metrics(ctx)
			if err != nil {
				return nil, nil, err
			}
			return before, after, b.waitIdle(ctx, admissionQuiet, 2*time.Minute)
		}
		cpu := childCPU()
		serverBefore, err := b.apiserverMetrics(ctx)
		if err != nil {
			return nil, err
		}
		profiled := make(chan struct{})
		go func() {
			defer close(profiled)
			if mode == modeOurs {
				b.saveProfile(ctx, "admission-cpu.pprof", "profile?seconds=5", 20*time.Second)
			}
		}()
		before, after, err := concurrent("spread", func(w int) string { return fmt.Sprintf("cust-%d", w) }, &run.spread)
		if err != nil {
			return nil, err
		}
		run.cpu = cpuSince(cpu)
		<-profiled
		serverAfter, err := b.apiserverMetrics(ctx)
		if err != nil {
			return nil, err
		}
		created := float64(creators * b.s.CreatesPerCreator)
		b.logBreakdown(fmt.Sprintf("API server writes, %s, %d creators on distinct customers", mode, creators),
			serverWrites(serverBefore, serverAfter), created, "namespace")
		latency := serverWriteLatency(serverBefore, serverAfter)
		run.serverLatency = latency
		for k, ms := range latency {
			b.log("  API server's mean latency, %-44s %8.1f ms", k, ms)
		}
		for level, ms := range flowControlWait(serverBefore, serverAfter) {
			b.log("  mean wait in API Priority and Fairness, level %-26s %8.1f ms", level, ms)
		}
		run.requestsSpread = requestsSince(before, after)
		if mode == modeOurs {
			l := &run.serverSpread
			l.within10ms, l.count, l.mean = histogramShare(before, after, "controller_runtime_webhook_latency_seconds", isNamespaceHook, 0.01)
			_, _, l.patchMean = histogramShare(before, after, "rest_client_request_duration_seconds", label("verb", "PATCH"), 0.005)
			l.ledgerLatency(before, after)
		}
		before, after, err = concurrent("hot", func(int) string { return "cust-0" }, &run.hot)
		if err != nil {
			return nil, err
		}
		run.requestsHot = requestsSince(before, after)
		if mode == modeOurs {
			l := &run.serverHot
			l.within10ms, l.count, l.mean = histogramShare(before, after, "controller_runtime_webhook_latency_seconds", isNamespaceHook, 0.01)
		}
	}
	// Leave the cluster as installed.
	return out, b.setNamespaceWebhook(ctx, modeOurs)
}

// awaitMode creates probe projects until the API server demonstrably calls
// the webhook the mode wants (its configuration is reloaded asynchronously),
// which also warms the connection to it.
func (b *bench) awaitMode(ctx context.Context, mode admissionMode) error {
	ours := func() float64 {
		m, err := b.metrics(ctx)
		if err != nil {
			return -1
		}
		return m.sum("controller_runtime_webhook_latency_seconds_count", label("webhook", namespaceWebhookPath))
	}
	quietProbes := 0
	for i := 0; i < 200; i++ {
		allowBefore, oursBefore := b.allowAll.hits.Load(), ours()
		if _, err := b.createProject(ctx, fmt.Sprintf("probe-%s-%d", modeKeys[mode], i), "cust-1"); err != nil {
			return fmt.Errorf("probe create (%s): %w", mode, err)
		}
		allowHit, oursHit := b.allowAll.hits.Load() > allowBefore, ours() > oursBefore
		switch {
		case mode == modeAllowAll && allowHit && !oursHit,
			mode == modeOurs && oursHit && !allowHit:
			quietProbes++
		case mode == modeNone && !allowHit && !oursHit:
			quietProbes++
		default:
			quietProbes = 0
		}
		// A few in a row: every apiserver watch of the configuration has caught up.
		if quietProbes >= 5 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("the API server did not switch to %s", mode)
}
