// Package memlimit sets the Go runtime's soft memory limit from the manager's
// memory limit, so that the garbage collector works harder near the limit instead
// of letting the heap double (GOGC=100) past it and the kernel kill the manager.
// The operator's caches grow with the number of customers (docs/benchmarks.md), so
// a burst of work at scale is exactly when the heap's headroom would cross the
// limit.
//
// The limit is read by github.com/KimMachineGun/automemlimit from the process's
// own cgroup (v2 or v1, found through /proc/self/cgroup and /proc/self/mountinfo,
// the lowest limit up the hierarchy that the process can see), and read again
// every RefreshInterval, so that the soft limit follows a pod resized in place.
package memlimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-logr/logr"
)

// RefreshInterval is how often the memory limit is read again. Kubernetes
// resizes a running pod's memory limit in place; the kubelet changes the cgroup,
// nothing tells the process, and a soft limit still at the old value would let
// the heap grow past a lowered limit.
const RefreshInterval = 30 * time.Second

// Apply sets the soft memory limit to ratio times the memory limit of the
// manager's cgroup and keeps following that limit until ctx ends. It does nothing
// when ratio is 0, or when $GOMEMLIMIT is set (the operator's own setting wins)
// or $AUTOMEMLIMIT is "off"; $AUTOMEMLIMIT set to a number replaces ratio (the
// library's convention). An empty variable counts as unset, as the Go runtime
// treats an empty $GOMEMLIMIT. It returns the soft limit set (0: none) and where
// it came from, for the log. Only a bad setting is an error: a limit that cannot
// be read (no cgroups, as on macOS, or a cgroup file system the library does not
// understand) leaves the manager without a soft limit, as Go's default, and says
// why.
func Apply(ctx context.Context, ratio float64, log logr.Logger) (int64, string, error) {
	return apply(ctx, ratio, log, memlimit.FromCgroup, RefreshInterval)
}

func apply(ctx context.Context, ratio float64, log logr.Logger, limit memlimit.Provider, every time.Duration) (int64, string, error) {
	// NaN fails both comparisons, so it is refused by name too.
	if !(ratio >= 0 && ratio <= 1) {
		return 0, "", fmt.Errorf("--memory-limit-ratio must be between 0 and 1, not %g", ratio)
	}
	for _, name := range []string{"GOMEMLIMIT", "AUTOMEMLIMIT"} {
		// The library decides by the variable's presence; an empty one is none.
		if v, ok := os.LookupEnv(name); ok && v == "" {
			if err := os.Unsetenv(name); err != nil {
				return 0, "", err
			}
		}
	}
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return 0, "GOMEMLIMIT=" + v + " is set", nil
	}
	if ratio == 0 {
		return 0, "--memory-limit-ratio=0", nil
	}
	from := fmt.Sprintf("%g of the cgroup's memory limit (--memory-limit-ratio), read every %s", ratio, every)
	if v, ok := os.LookupEnv("AUTOMEMLIMIT"); ok {
		if v == "off" {
			return 0, "AUTOMEMLIMIT=off", nil
		}
		from = "AUTOMEMLIMIT=" + v + " of the cgroup's memory limit, read every " + every.String()
	}
	// Not in a cgroup at all is no limit; another failure to read one is said once
	// here, and nothing is followed (the library would log it every refresh).
	limit = noCgroupIsNoLimit(limit)
	if _, err := limit(); err != nil && !errors.Is(err, memlimit.ErrNoLimit) {
		return 0, "none: the cgroup's memory limit could not be read: " + err.Error(), nil
	}
	soft, err := memlimit.Set(
		memlimit.WithRatio(ratio),
		memlimit.WithProvider(limit),
		memlimit.WithRefreshInterval(ctx, every),
		memlimit.WithLogger(slog.New(logr.ToSlogHandler(log))),
	)
	if err != nil {
		return 0, "", fmt.Errorf("setting the Go memory limit from %s: %w", from, err)
	}
	// No limit found sets math.MaxInt64: Go's own default, no limit.
	if soft == math.MaxInt64 {
		return 0, "no cgroup memory limit (read again every " + every.String() + ")", nil
	}
	return soft, from, nil
}

// noCgroupIsNoLimit reports a process outside any cgroup, or a system without
// them, as having no memory limit.
func noCgroupIsNoLimit(provider memlimit.Provider) memlimit.Provider {
	return func() (uint64, error) {
		n, err := provider()
		if errors.Is(err, memlimit.ErrNoCgroup) || errors.Is(err, memlimit.ErrCgroupsNotSupported) {
			return 0, memlimit.ErrNoLimit
		}
		return n, err
	}
}
