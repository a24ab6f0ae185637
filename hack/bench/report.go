package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// machine is what a reader needs to compare figures across runs.
type machine struct {
	CPUModel  string `json:"cpuModel"`
	Cores     int    `json:"cores"`
	MemoryMiB uint64 `json:"memoryMiB"`
	LoadAvg   string `json:"loadAvgAtStart"`
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
	Date      string `json:"date"`
}

func machineFacts() machine {
	m := machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		Date: time.Now().UTC().Format(time.RFC3339)}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			var kb uint64
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				m.MemoryMiB = kb / 1024
			}
		}
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.Join(strings.Fields(string(data))[:3], " ")
	}
	return m
}

// row is one line of the result table: a figure of ours against the baseline
// measured in the same run.
type row struct {
	Section  string  `json:"section"`
	Metric   string  `json:"metric"`
	Ours     float64 `json:"ours"`
	Baseline float64 `json:"baseline,omitempty"`
	Unit     string  `json:"unit"`
	// Ratio is Ours/Baseline (0 when there is no baseline).
	Ratio float64 `json:"ratio,omitempty"`
	// Target is what the issue asks for, as text ("ratio <= 2.0").
	Target string `json:"target,omitempty"`
	// Met is "yes", "no" or "" (no target).
	Met  string `json:"met,omitempty"`
	Note string `json:"note,omitempty"`
}

// number is a figure in bench.json: NaN and ±Inf (a figure that could not be
// measured, such as a percentile of no samples), which encoding/json refuses,
// are written as null.
type number float64

func (n number) MarshalJSON() ([]byte, error) {
	if f := float64(n); math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(n))
}

// MarshalJSON writes the row with its figures as numbers.
func (x row) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Section  string `json:"section"`
		Metric   string `json:"metric"`
		Ours     number `json:"ours"`
		Baseline number `json:"baseline,omitempty"`
		Unit     string `json:"unit"`
		Ratio    number `json:"ratio,omitempty"`
		Target   string `json:"target,omitempty"`
		Met      string `json:"met,omitempty"`
		Note     string `json:"note,omitempty"`
	}{x.Section, x.Metric, number(x.Ours), number(x.Baseline), x.Unit, number(x.Ratio), x.Target, x.Met, x.Note})
}

type result struct {
	Machine  machine           `json:"machine"`
	Command  string            `json:"command"`
	Settings settings          `json:"settings"`
	Rows     []row             `json:"rows"`
	Details  map[string]any    `json:"details"`
	Errors   []string          `json:"errors,omitempty"`
	Phases   map[string]string `json:"phaseDurations"`
}

func (r *result) add(x row) {
	if x.Baseline != 0 && !math.IsNaN(x.Baseline) {
		x.Ratio = x.Ours / x.Baseline
	}
	r.Rows = append(r.Rows, x)
}

func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func (r *result) printTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "\n%s · %d cores · %d MiB · %s · load at start %s · %s\n", m.CPUModel, m.Cores, m.MemoryMiB, m.GoVersion, m.LoadAvg, m.Date)
	fmt.Fprintf(w, "customers=%d concurrency=%d creators=%d", r.Settings.Customers, r.Settings.Concurrency, r.Settings.Creators)
	if len(r.Settings.ManagerEnv) > 0 {
		fmt.Fprintf(w, " manager env: %s", strings.Join(r.Settings.ManagerEnv, " "))
	}
	if len(r.Settings.ManagerArgs) > 0 {
		fmt.Fprintf(w, " manager flags: %s", strings.Join(r.Settings.ManagerArgs, " "))
	}
	if r.Settings.ManagerMemoryLimit != "" {
		fmt.Fprintf(w, " manager memory limit (cgroup): %s", r.Settings.ManagerMemoryLimit)
	}
	fmt.Fprint(w, "\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "section\tmetric\tours\tbaseline\tunit\tratio\ttarget\tmet\tnote")
	for _, x := range r.Rows {
		base, ratio := "", ""
		if x.Baseline != 0 {
			base = fmtNum(x.Baseline)
		}
		if x.Ratio != 0 {
			ratio = fmtNum(x.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.Section, x.Metric, fmtNum(x.Ours), base, x.Unit, ratio, x.Target, x.Met, x.Note)
	}
	_ = tw.Flush()
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR: %s\n", e)
	}
}

// printMarkdown prints the table as Markdown, for docs/benchmarks.md.
func (r *result) printMarkdown(w io.Writer) {
	fmt.Fprintln(w, "| section | metric | ours | baseline | unit | ratio | target | met | note |")
	fmt.Fprintln(w, "|---|---|---:|---:|---|---:|---|---|---|")
	for _, x := range r.Rows {
		base, ratio := "", ""
		if x.Baseline != 0 {
			base = fmtNum(x.Baseline)
		}
		if x.Ratio != 0 {
			ratio = fmtNum(x.Ratio)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", x.Section, x.Metric, fmtNum(x.Ours), base, x.Unit, ratio, x.Target, x.Met, x.Note)
	}
}

func (r *result) writeJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}
