// Package memlimit sets the Go runtime's soft memory limit from the container's
// memory limit, so that the garbage collector works harder near the limit instead
// of letting the heap double (GOGC=100) past it and the kernel kill the manager.
// The operator's caches grow with the number of customers (docs/benchmarks.md), so
// a burst of work at scale is exactly when the heap's headroom would cross the
// limit.
package memlimit

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Cgroup files with the memory limit: v2 first, then v1.
var cgroupFiles = []string{
	"/sys/fs/cgroup/memory.max",
	"/sys/fs/cgroup/memory/memory.limit_in_bytes",
}

// ErrNoLimit means no container memory limit was found (none set, or not in a
// container): nothing to follow.
var ErrNoLimit = errors.New("no cgroup memory limit")

// Read returns the first memory limit found in files, in bytes.
func Read(files ...string) (int64, error) {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(data))
		if v == "max" {
			return 0, ErrNoLimit
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("reading the memory limit in %s: %w", f, err)
		}
		// cgroup v1 reports "no limit" as a huge number near MaxInt64.
		if n <= 0 || n >= math.MaxInt64/2 {
			return 0, ErrNoLimit
		}
		return n, nil
	}
	return 0, ErrNoLimit
}

// Apply sets the soft memory limit to ratio times the container's memory limit,
// unless $GOMEMLIMIT is set (the operator's own setting wins) or ratio is 0. It
// returns the limit set (0: none) and why.
func Apply(ratio float64) (int64, string, error) {
	if ratio < 0 || ratio > 1 {
		return 0, "", fmt.Errorf("--memory-limit-ratio must be between 0 and 1, not %g", ratio)
	}
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		return 0, "GOMEMLIMIT=" + v + " is set", nil
	}
	if ratio == 0 {
		return 0, "--memory-limit-ratio=0", nil
	}
	limit, err := Read(cgroupFiles...)
	if errors.Is(err, ErrNoLimit) {
		return 0, "no container memory limit", nil
	}
	if err != nil {
		return 0, "", err
	}
	soft := int64(float64(limit) * ratio)
	debug.SetMemoryLimit(soft)
	return soft, fmt.Sprintf("%.0f%% of the container's %d bytes", ratio*100, limit), nil
}
