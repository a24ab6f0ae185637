// Package alerts_test evaluates the alerts that config/prometheus ships with
// Prometheus' own PromQL engine, on series shaped like the ones the manager
// exports, so that an alert is known to fire when it should and to stay quiet when
// it should, not only to parse.
package alerts_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"sigs.k8s.io/yaml"
)

// rule is one alerting rule of the shipped PrometheusRule.
type rule struct {
	Alert string `json:"alert"`
	Expr  string `json:"expr"`
	For   string `json:"for"`
}

func shippedRules(t *testing.T) map[string]rule {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	data, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "config", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Spec struct {
			Groups []struct {
				Rules []rule `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	rules := map[string]rule{}
	for _, g := range doc.Spec.Groups {
		for _, r := range g.Rules {
			rules[r.Alert] = r
		}
	}
	return rules
}

func TestEveryShippedAlertParses(t *testing.T) {
	rules := shippedRules(t)
	if len(rules) == 0 {
		t.Fatal("no alerts in config/prometheus/alerts.yaml")
	}
	for name, r := range rules {
		if _, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr); err != nil {
			t.Errorf("%s: expr: %v", name, err)
		}
		if _, err := model.ParseDuration(r.For); err != nil {
			t.Errorf("%s: for: %v", name, err)
		}
	}
}

// evalStep is how often the emulated Prometheus evaluates the rules, and the
// step of the series below (one sample a minute: a scrape interval).
const evalStep = time.Minute

// firesAt evaluates r's expression every evalStep from 0 to horizon over the
// series of load (promqltest's load notation, one value a minute from 0) and
// returns when the alert would first fire: the first evaluation at which one of
// the expression's result series has been there at every evaluation for the
// rule's `for` (Prometheus' pending, then firing, kept per label set). ok is false
// when it never fires.
func firesAt(t *testing.T, r rule, load string, horizon time.Duration) (at time.Duration, ok bool) {
	t.Helper()
	if r.Expr == "" {
		t.Fatalf("alert %q is not shipped", r.Alert)
	}
	hold, err := model.ParseDuration(r.For)
	if err != nil {
		t.Fatal(err)
	}
	storage := promqltest.LoadedStorage(t, "load 1m\n"+load)
	engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	start := time.Unix(0, 0).UTC()
	query, err := engine.NewRangeQuery(context.Background(), storage, nil, r.Expr, start, start.Add(horizon), evalStep)
	if err != nil {
		t.Fatalf("%s: %v", r.Alert, err)
	}
	result := query.Exec(context.Background())
	if result.Err != nil {
		t.Fatalf("%s: %v", r.Alert, result.Err)
	}
	matrix, err := result.Matrix()
	if err != nil {
		t.Fatal(err)
	}
	for _, series := range matrix {
		present := map[int64]bool{}
		for _, p := range series.Floats {
			present[p.T] = true
		}
		var since time.Duration = -1
		for t := time.Duration(0); t <= horizon; t += evalStep {
			if !present[t.Milliseconds()] {
				since = -1
				continue
			}
			if since < 0 {
				since = t
			}
			if t-since >= time.Duration(hold) {
				if !ok || t < at {
					at, ok = t, true
				}
				break
			}
		}
	}
	return at, ok
}

// counter renders a counter scraped every minute for the given minutes, which
// increases by one at each of the times in incs (from 0).
func counter(labels string, minutes int, incs ...time.Duration) string {
	values := make([]string, 0, minutes+1)
	for m := 0; m <= minutes; m++ {
		n := 0
		for _, at := range incs {
			if at <= time.Duration(m)*time.Minute {
				n++
			}
		}
		values = append(values, fmt.Sprint(n))
	}
	return "  " + labels + " " + strings.Join(values, " ") + "\n"
}

// every returns the times from first to last (inclusive), gap apart.
func every(first, gap, last time.Duration) []time.Duration {
	var out []time.Duration
	for at := first; at <= last; at += gap {
		out = append(out, at)
	}
	return out
}

func TestMailFailing(t *testing.T) {
	r := shippedRules(t)["CustomerOperatorMailFailing"]
	const minutes = 180
	horizon := minutes * time.Minute
	mails := func(sent, refused, errors []time.Duration) string {
		return counter(`customer_operator_mails_sent_total{kind="invitation"}`, minutes, sent...) +
			counter(`customer_operator_mails_failed_total{kind="invitation",reason="refused"}`, minutes, refused...) +
			counter(`customer_operator_mails_failed_total{kind="invitation",reason="error"}`, minutes, errors...) +
			// The other kind's series exist from the start too, and stay at 0.
			counter(`customer_operator_mails_sent_total{kind="notice"}`, minutes) +
			counter(`customer_operator_mails_failed_total{kind="notice",reason="refused"}`, minutes) +
			counter(`customer_operator_mails_failed_total{kind="notice",reason="error"}`, minutes)
	}
	for _, tc := range []struct {
		name                  string
		sent, refused, errors []time.Duration
		fires                 bool
	}{{
		name: "one mistyped address, refused for good (counted once), nothing else sent for hours",
		// The membership says Stalled; the SMTP server is fine.
		refused: []time.Duration{5 * time.Minute},
	}, {
		name:   "the SMTP server unreachable: every attempt fails and is retried, nothing delivered",
		errors: every(5*time.Minute, 2*time.Minute, horizon),
		fires:  true,
	}, {
		name:    "the server refuses every mail for good (a spam filter on our template): three refused, nothing delivered",
		refused: []time.Duration{5 * time.Minute, 7 * time.Minute, 9 * time.Minute},
		fires:   true,
	}, {
		// A long-running manager: the counter is above 0 when the window starts, so
		// increase() extrapolates (two refusals read 2.07).
		name:    "one refusal an hour ago, then two mistyped addresses two minutes apart",
		refused: []time.Duration{5 * time.Minute, 60 * time.Minute, 62 * time.Minute},
	}, {
		name:    "one refusal an hour ago, then three refused within minutes",
		refused: []time.Duration{5 * time.Minute, 60 * time.Minute, 62 * time.Minute, 64 * time.Minute},
		fires:   true,
	}, {
		name:   "some attempts fail, but mail is delivered all along",
		sent:   every(3*time.Minute, 5*time.Minute, horizon),
		errors: every(5*time.Minute, 10*time.Minute, horizon),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			at, fires := firesAt(t, r, mails(tc.sent, tc.refused, tc.errors), horizon)
			if fires != tc.fires {
				t.Errorf("%s fires: %v (at %v), want %v", r.Alert, fires, at, tc.fires)
			}
		})
	}
}

func TestReconcileErrors(t *testing.T) {
	r := shippedRules(t)["CustomerOperatorReconcileErrors"]
	const minutes = 360
	horizon := minutes * time.Minute

	// One object whose reconcile keeps failing, and nothing else touching it: the
	// controller retries it with controller-runtime's default backoff, 5 ms doubling
	// up to 1000 s between attempts.
	var backoff []time.Duration
	gap, at := 5*time.Millisecond, 10*time.Minute
	for at <= horizon {
		backoff = append(backoff, at)
		at += gap
		gap = min(2*gap, 1000*time.Second)
	}
	series := counter(`controller_runtime_reconcile_errors_total{controller="customermembership"}`, minutes, backoff...)
	if at, fires := firesAt(t, r, series, horizon); !fires {
		t.Errorf("%s does not fire for an object that fails on every retry for 6 hours", r.Alert)
	} else if at > 90*time.Minute {
		t.Errorf("%s fires only at %v for an object failing since 10m", r.Alert, at)
	}

	once := counter(`controller_runtime_reconcile_errors_total{controller="customermembership"}`, minutes, 10*time.Minute)
	if at, fires := firesAt(t, r, once, horizon); fires {
		t.Errorf("%s fires at %v for one error that the retry cleared", r.Alert, at)
	}
}

func TestWebhookCertificateExpiring(t *testing.T) {
	r := shippedRules(t)["CustomerOperatorWebhookCertificateExpiring"]
	const minutes = 180
	horizon := minutes * time.Minute
	const day = 86400
	gauge := func(expiresIn int) string {
		// The gauge holds the expiry as Unix seconds; the evaluation starts at 0.
		return fmt.Sprintf("  customer_operator_webhook_certificate_expiry_timestamp_seconds %d+0x%d\n", expiresIn, minutes)
	}
	if _, fires := firesAt(t, r, gauge(30*day), horizon); !fires {
		t.Errorf("%s does not fire for a certificate that expires in 30 days", r.Alert)
	}
	if at, fires := firesAt(t, r, gauge(300*day), horizon); fires {
		t.Errorf("%s fires at %v for a certificate that expires in 300 days", r.Alert, at)
	}
	// With cert-manager (config/default-certmanager) the series does not exist.
	other := counter(`controller_runtime_reconcile_total{controller="customer"}`, minutes)
	if at, fires := firesAt(t, r, other, horizon); fires {
		t.Errorf("%s fires at %v without the series (cert-manager serves the certificate)", r.Alert, at)
	}
	// What a plain gauge exported before the fix: 0, "expired in 1970".
	if _, fires := firesAt(t, r, gauge(0), horizon); !fires {
		t.Errorf("%s does not fire on an expiry of 0 (the emulation is broken)", r.Alert)
	}
}

func TestWebhookSlow(t *testing.T) {
	r := shippedRules(t)["CustomerOperatorWebhookSlow"]
	const minutes = 60
	horizon := minutes * time.Minute
	// 100 admission requests a minute, of which slow take longer than 1 s; the
	// bucket's le label as Prometheus 2 (scraping text) and 3 (normalized) store it.
	requests := func(le string, slow int) string {
		series := func(name string, perMinute int) string {
			return fmt.Sprintf("  %s 0+%dx%d\n", name, perMinute, minutes)
		}
		const labels = `webhook="/validate--v1-namespace"`
		return series(`controller_runtime_webhook_latency_seconds_bucket{`+labels+`,le="`+le+`"}`, 100-slow) +
			series(`controller_runtime_webhook_latency_seconds_bucket{`+labels+`,le="+Inf"}`, 100) +
			series(`controller_runtime_webhook_latency_seconds_count{`+labels+`}`, 100)
	}
	for _, le := range []string{"1", "1.0"} {
		if _, fires := firesAt(t, r, requests(le, 5), horizon); !fires {
			t.Errorf(`%s does not fire when 5 %% of requests take over 1 s (le=%q)`, r.Alert, le)
		}
		if at, fires := firesAt(t, r, requests(le, 0), horizon); fires {
			t.Errorf(`%s fires at %v when no request takes over 1 s (le=%q)`, r.Alert, at, le)
		}
	}
}
