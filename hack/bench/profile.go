package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// apiserverMetrics scrapes kube-apiserver's own /metrics as the admin: what the
// server did, whoever asked (the manager, the bench, kube-controller-manager).
func (b *bench) apiserverMetrics(ctx context.Context) (metrics, error) {
	hc, err := rest.HTTPClientFor(b.adminCfg)
	if err != nil {
		return nil, err
	}
	return scrapeWith(ctx, hc, strings.TrimRight(b.adminCfg.Host, "/")+"/metrics")
}

// serverWriteVerbs are apiserver_request_total's verbs that change state.
var serverWriteVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "APPLY": true, "DELETE": true, "DELETECOLLECTION": true}

// serverWrites breaks the writes the API server answered between two scrapes down
// by resource[/subresource], verb and code: where convergence's writes go.
func serverWrites(before, after metrics) map[string]float64 {
	return serverRequests(before, after, func(verb string) bool { return serverWriteVerbs[verb] })
}

// serverReads does the same for the reads (GET, LIST, WATCH): uncached reads and
// the informers' list and watch requests.
func serverReads(before, after metrics) map[string]float64 {
	return serverRequests(before, after, func(verb string) bool { return !serverWriteVerbs[verb] })
}

// serverRequests counts apiserver_request_total's increase for the verbs that
// match, by resource[/subresource], verb and code.
func serverRequests(before, after metrics, verbs func(string) bool) map[string]float64 {
	count := func(m metrics) map[string]float64 {
		out := map[string]float64{}
		for _, s := range m {
			if s.name != "apiserver_request_total" || !verbs(s.labels["verb"]) {
				continue
			}
			res := s.labels["resource"]
			if sub := s.labels["subresource"]; sub != "" {
				res += "/" + sub
			}
			out[fmt.Sprintf("%s %s %s", res, s.labels["verb"], s.labels["code"])] += s.value
		}
		return out
	}
	return increase(count(before), count(after))
}

// serverWriteLatency is the API server's own mean latency (apiserver_request_duration_seconds,
// from the request's arrival to its answer, admission webhooks included) of each kind
// of write between two scrapes, in milliseconds.
func serverWriteLatency(before, after metrics) map[string]float64 {
	return histogramMeans(before, after, "apiserver_request_duration_seconds", func(l map[string]string) (string, bool) {
		if !serverWriteVerbs[l["verb"]] {
			return "", false
		}
		res := l["resource"]
		if sub := l["subresource"]; sub != "" {
			res += "/" + sub
		}
		return res + " " + l["verb"], true
	})
}

// flowControlWait is the mean time requests waited in API Priority and Fairness
// queues between two scrapes, per priority level, in milliseconds: whether a
// client's requests queued behind others' before the server even started them.
func flowControlWait(before, after metrics) map[string]float64 {
	return histogramMeans(before, after, "apiserver_flowcontrol_request_wait_duration_seconds", func(l map[string]string) (string, bool) {
		return l["priority_level"], true
	})
}

// histogramMeans is the mean of a histogram's observations between two scrapes,
// in milliseconds, grouped by key (samples for which key says false are left out).
func histogramMeans(before, after metrics, name string, key func(map[string]string) (string, bool)) map[string]float64 {
	sums := func(m metrics, suffix string) map[string]float64 {
		out := map[string]float64{}
		for _, s := range m {
			if s.name != name+suffix {
				continue
			}
			if k, ok := key(s.labels); ok {
				out[k] += s.value
			}
		}
		return out
	}
	total, count := increase(sums(before, "_sum"), sums(after, "_sum")), increase(sums(before, "_count"), sums(after, "_count"))
	out := map[string]float64{}
	for k, n := range count {
		out[k] = total[k] / n * 1000
	}
	return out
}

// webhookCalls counts the API server's calls to each admission webhook between two
// scrapes.
func webhookCalls(before, after metrics) map[string]float64 {
	count := func(m metrics) map[string]float64 {
		out := map[string]float64{}
		for _, s := range m {
			if s.name == "apiserver_admission_webhook_admission_duration_seconds_count" {
				out[s.labels["name"]+" "+s.labels["operation"]] += s.value
			}
		}
		return out
	}
	return increase(count(before), count(after))
}

// increase is what each count grew by between two scrapes (counts that did not
// grow are left out).
func increase(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// logBreakdown prints a count map largest first, and each count per unit (per
// customer, per namespace created).
func (b *bench) logBreakdown(title string, counts map[string]float64, n float64, unit string) {
	keys := make([]string, 0, len(counts))
	var total float64
	for k, v := range counts {
		keys = append(keys, k)
		total += v
	}
	sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
	b.log("%s: %.0f in all, %.2f per %s", title, total, total/n, unit)
	for _, k := range keys {
		b.log("  %-60s %8.0f  %6.2f/%s", k, counts[k], counts[k]/n, unit)
	}
}

// saveProfile fetches one pprof profile from the manager into the work directory
// (BENCH_KEEP=true keeps it), for `go tool pprof <manager> <file>`.
func (b *bench) saveProfile(ctx context.Context, name, query string, timeout time.Duration) {
	if b.pprofAddr == "" {
		return
	}
	b.fetchProfile(ctx, http.DefaultClient, "http://"+b.pprofAddr, name, query, timeout)
}

// saveAPIServerProfile fetches one pprof profile from kube-apiserver (its
// /debug/pprof, which the admin may read) into the work directory: where the API
// server's CPU goes, for `go tool pprof <file>` (Go profiles carry their symbols).
func (b *bench) saveAPIServerProfile(ctx context.Context, name, query string, timeout time.Duration) {
	hc, err := rest.HTTPClientFor(b.adminCfg)
	if err != nil {
		b.log("profile %s: %v", name, err)
		return
	}
	b.fetchProfile(ctx, hc, strings.TrimRight(b.adminCfg.Host, "/"), name, query, timeout)
}

func (b *bench) fetchProfile(ctx context.Context, hc *http.Client, base, name, query string, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/pprof/"+query, nil)
	if err != nil {
		return
	}
	resp, err := hc.Do(req)
	if err != nil {
		b.log("profile %s: %v", name, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.log("profile %s: %s", name, resp.Status)
		return
	}
	path := filepath.Join(b.workDir, name)
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.log("profile %s: %v", name, err)
		return
	}
	b.log("saved %s", path)
}
