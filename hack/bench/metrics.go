package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// metrics is one scrape of the manager's /metrics endpoint. The bench reads the
// manager from outside, as Prometheus would, so that it measures the shipped
// binary and not an in-process copy.
type metrics []sample

var scrapeClient = &http.Client{Timeout: 10 * time.Second}

func scrape(ctx context.Context, url string) (metrics, error) {
	return scrapeWith(ctx, scrapeClient, url)
}

func scrapeWith(ctx context.Context, hc *http.Client, url string) (metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var m metrics
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if s, ok := parseSample(line); ok {
			m = append(m, s)
		}
	}
	return m, sc.Err()
}

// parseSample parses `name{a="b",c="d"} value [timestamp]`.
func parseSample(line string) (sample, bool) {
	s := sample{labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return s, false
	}
	s.name = line[:i]
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, ", ")
			if rest == "" {
				return s, false
			}
			if rest[0] == '}' {
				rest = rest[1:]
				break
			}
			eq := strings.Index(rest, `="`)
			if eq < 0 {
				return s, false
			}
			key := rest[:eq]
			rest = rest[eq+2:]
			var val strings.Builder
			j := 0
			for ; j < len(rest) && rest[j] != '"'; j++ {
				if rest[j] == '\\' && j+1 < len(rest) {
					j++
				}
				val.WriteByte(rest[j])
			}
			if j >= len(rest) {
				return s, false
			}
			s.labels[key] = val.String()
			rest = rest[j+1:]
		}
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 {
		return s, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, false
	}
	s.value = v
	return s, true
}

// sum adds the samples of a name whose labels match (nil matches all).
func (m metrics) sum(name string, match func(map[string]string) bool) float64 {
	var total float64
	for _, s := range m {
		if s.name == name && (match == nil || match(s.labels)) {
			total += s.value
		}
	}
	return total
}

func label(key, value string) func(map[string]string) bool {
	return func(l map[string]string) bool { return l[key] == value }
}

// writeMethods are the HTTP methods of client-go requests that change state.
var writeMethods = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "DELETE": true}

// apiWrites counts the manager's state-changing API requests (client-go's
// rest_client_requests_total, which controller-runtime registers).
func (m metrics) apiWrites() float64 {
	return m.sum("rest_client_requests_total", func(l map[string]string) bool { return writeMethods[l["method"]] })
}

func (m metrics) writesByMethod() map[string]float64 {
	out := map[string]float64{}
	for _, s := range m {
		if s.name == "rest_client_requests_total" && writeMethods[s.labels["method"]] {
			out[s.labels["method"]] += s.value
		}
	}
	return out
}

// reconcilesByController counts the reconciles of each controller.
func (m metrics) reconcilesByController() map[string]float64 {
	out := map[string]float64{}
	for _, s := range m {
		if s.name == "controller_runtime_reconcile_total" {
			out[s.labels["controller"]] += s.value
		}
	}
	return out
}

func (m metrics) reconciles(controller string) float64 {
	if controller == "" {
		return m.sum("controller_runtime_reconcile_total", nil)
	}
	return m.sum("controller_runtime_reconcile_total", label("controller", controller))
}

// busy reports queued or running work in any controller.
func (m metrics) busy() bool {
	return m.sum("workqueue_depth", nil) > 0 || m.sum("controller_runtime_active_workers", nil) > 0
}

// processMemory reads VmRSS and VmHWM (peak RSS) of a process, in bytes.
func processMemory(pid int) (rss, peak uint64, err error) {
	kb, err := procStatus(pid)
	if err != nil {
		return 0, 0, err
	}
	if kb["VmRSS"] == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return kb["VmRSS"] * 1024, kb["VmHWM"] * 1024, nil
}

// procStatus reads the kB figures of /proc/<pid>/status by name (VmRSS,
// RssAnon, RssFile, …).
func procStatus(pid int) (map[string]uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	kb := map[string]uint64{}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 3 && fields[2] == "kB" {
			if v, err := strconv.ParseUint(fields[1], 10, 64); err == nil {
				kb[strings.TrimSuffix(fields[0], ":")] = v
			}
		}
	}
	return kb, nil
}

// histogramShare is the share of a histogram's observations between two
// scrapes that were at most le (le must be a bucket boundary), with their count
// and mean. controller-runtime's webhook latency buckets are decades (1 ms,
// 10 ms, 100 ms, ...), so a share below 10 ms is exact where an interpolated
// p99 would not be.
func histogramShare(before, after metrics, name string, match func(map[string]string) bool, le float64) (share, count, mean float64) {
	bucket := func(m metrics) (in, total float64) {
		for _, s := range m {
			if match != nil && !match(s.labels) {
				continue
			}
			switch s.name {
			case name + "_bucket":
				if v, err := strconv.ParseFloat(s.labels["le"], 64); err == nil && math.Abs(v-le) < le*1e-9 {
					in += s.value
				}
			case name + "_count":
				total += s.value
			}
		}
		return in, total
	}
	inA, totalA := bucket(after)
	inB, totalB := bucket(before)
	count = totalA - totalB
	if count == 0 {
		return math.NaN(), 0, math.NaN()
	}
	sum := after.sum(name+"_sum", match) - before.sum(name+"_sum", match)
	return (inA - inB) / count, count, sum / count
}

// requestsSince counts the manager's API requests between two scrapes by
// "METHOD code" (client-go's rest_client_requests_total): how many round trips,
// and how many optimistic-lock conflicts (409), a phase cost.
func requestsSince(before, after metrics) map[string]float64 {
	key := func(l map[string]string) string { return l["method"] + " " + l["code"] }
	out := map[string]float64{}
	for _, s := range after {
		if s.name == "rest_client_requests_total" {
			out[key(s.labels)] += s.value
		}
	}
	for _, s := range before {
		if s.name == "rest_client_requests_total" {
			out[key(s.labels)] -= s.value
		}
	}
	for k, v := range out {
		if v == 0 {
			delete(out, k)
		}
	}
	return out
}

// histogramQuantile estimates the q-quantile of a histogram's observations
// between two scrapes, interpolating linearly inside the bucket that holds it
// (as PromQL's histogram_quantile does). NaN when nothing was observed.
func histogramQuantile(before, after metrics, name string, match func(map[string]string) bool, q float64) float64 {
	cumulative := func(m metrics) map[float64]float64 {
		out := map[float64]float64{}
		for _, s := range m {
			if s.name != name+"_bucket" || (match != nil && !match(s.labels)) {
				continue
			}
			le, err := strconv.ParseFloat(s.labels["le"], 64)
			if err != nil {
				continue
			}
			out[le] += s.value
		}
		return out
	}
	a, b := cumulative(after), cumulative(before)
	var les []float64
	for le := range a {
		les = append(les, le)
	}
	sort.Float64s(les)
	if len(les) == 0 {
		return math.NaN()
	}
	total := a[les[len(les)-1]] - b[les[len(les)-1]]
	if total <= 0 {
		return math.NaN()
	}
	rank, lower, below := q*total, 0.0, 0.0
	for _, le := range les {
		count := a[le] - b[le]
		if count >= rank {
			if math.IsInf(le, 1) {
				return lower
			}
			if count == below {
				return le
			}
			return lower + (le-lower)*(rank-below)/(count-below)
		}
		lower, below = le, count
	}
	return lower
}
