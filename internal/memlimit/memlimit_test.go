package memlimit

import (
	"context"
	"errors"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-logr/logr"
)

const mib = 1 << 20

// current reads the soft limit without changing it, and restores Go's default
// after the test: the limit is process-wide.
func current(t *testing.T) int64 {
	t.Helper()
	t.Cleanup(func() { debug.SetMemoryLimit(math.MaxInt64) })
	return debug.SetMemoryLimit(-1)
}

// unset clears the variables that take precedence, for the test's duration.
func unset(t *testing.T) {
	t.Helper()
	for _, name := range []string{"GOMEMLIMIT", "AUTOMEMLIMIT"} {
		t.Setenv(name, "")
		// t.Setenv restores the old value afterwards; unset it for the test.
		if err := os.Unsetenv(name); err != nil {
			t.Fatal(err)
		}
	}
}

func TestApplySetsRatioOfTheLimitAndFollowsIt(t *testing.T) {
	unset(t)
	var limit atomic.Uint64
	limit.Store(200 * mib)
	var calls atomic.Int32
	provider := func() (uint64, error) { calls.Add(1); return limit.Load(), nil }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	soft, from, err := apply(ctx, 0.5, logr.Discard(), provider, 10*time.Millisecond)
	if err != nil || soft != 100*mib || !strings.Contains(from, "0.5 of the cgroup's memory limit") {
		t.Fatalf("got %d, %q, %v; want %d from the ratio", soft, from, err, 100*mib)
	}
	if got := current(t); got != 100*mib {
		t.Fatalf("the runtime's soft limit is %d, want %d", got, 100*mib)
	}
	// A pod resized in place: the cgroup's limit changes under the process.
	limit.Store(80 * mib)
	deadline := time.Now().Add(5 * time.Second)
	for debug.SetMemoryLimit(-1) != 40*mib {
		if time.Now().After(deadline) {
			t.Fatalf("the soft limit stayed %d after the limit fell to 80 MiB, want %d", debug.SetMemoryLimit(-1), 40*mib)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Once the manager stops, nothing follows the limit any more: wait until the
	// refresh has stopped asking, then change the limit.
	cancel()
	for quiet := 0; quiet < 3; {
		before := calls.Load()
		time.Sleep(30 * time.Millisecond)
		if calls.Load() == before {
			quiet++
		} else {
			quiet = 0
		}
	}
	limit.Store(400 * mib)
	time.Sleep(100 * time.Millisecond)
	if got := debug.SetMemoryLimit(-1); got != 40*mib {
		t.Fatalf("the soft limit moved to %d after the context ended", got)
	}
}

func TestApplyWithoutALimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"no limit in the cgroup", memlimit.ErrNoLimit},
		{"no cgroups on this system (macOS)", memlimit.ErrCgroupsNotSupported},
		{"not in a cgroup", memlimit.ErrNoCgroup},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unset(t)
			current(t)
			// A limit from before, so that "none" is seen to be set, not left alone.
			debug.SetMemoryLimit(123 * mib)
			noLimit := func() (uint64, error) { return 0, tc.err }
			soft, from, err := apply(t.Context(), 0.9, logr.Discard(), noLimit, time.Hour)
			if err != nil || soft != 0 || !strings.HasPrefix(from, "no cgroup memory limit") {
				t.Fatalf("got %d, %q, %v", soft, from, err)
			}
			if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
				t.Fatalf("the soft limit is %d with no cgroup limit", got)
			}
		})
	}
}

func TestApplyGoesOnWithoutASoftLimitWhenTheLimitCannotBeRead(t *testing.T) {
	unset(t)
	current(t)
	calls := 0
	broken := func() (uint64, error) { calls++; return 0, errors.New("no usable cgroup v2 memory mount found") }
	soft, from, err := apply(t.Context(), 0.9, logr.Discard(), broken, time.Millisecond)
	if err != nil || soft != 0 || !strings.Contains(from, "could not be read: no usable cgroup v2 memory mount found") {
		t.Fatalf("got %d, %q, %v; want no soft limit and the reason", soft, from, err)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Fatalf("the soft limit is %d", got)
	}
	time.Sleep(20 * time.Millisecond)
	if calls != 1 {
		t.Fatalf("the unreadable limit was read %d times; nothing should follow it", calls)
	}
}

func TestApplyLeavesTheLimitToTheEnvironmentAndTheFlag(t *testing.T) {
	current(t)
	called := false
	provider := func() (uint64, error) { called = true; return 200 * mib, nil }
	for _, tc := range []struct {
		name, gomemlimit, automemlimit string
		ratio                          float64
		want                           string
	}{
		{name: "GOMEMLIMIT wins", gomemlimit: "100MiB", ratio: 0.9, want: "GOMEMLIMIT=100MiB is set"},
		{name: "ratio 0", ratio: 0, want: "--memory-limit-ratio=0"},
		{name: "AUTOMEMLIMIT=off", automemlimit: "off", ratio: 0.9, want: "AUTOMEMLIMIT=off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unset(t)
			if tc.gomemlimit != "" {
				t.Setenv("GOMEMLIMIT", tc.gomemlimit)
			}
			if tc.automemlimit != "" {
				t.Setenv("AUTOMEMLIMIT", tc.automemlimit)
			}
			soft, from, err := apply(t.Context(), tc.ratio, logr.Discard(), provider, time.Hour)
			if err != nil || soft != 0 || from != tc.want {
				t.Fatalf("got %d, %q, %v; want 0, %q", soft, from, err, tc.want)
			}
			if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
				t.Fatalf("the soft limit is %d, want none", got)
			}
		})
	}
	if called {
		t.Fatal("the cgroup was read although the environment or the flag decided")
	}
	// Empty variables are no setting, as for the Go runtime.
	unset(t)
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("AUTOMEMLIMIT", "")
	if soft, from, err := apply(t.Context(), 0.5, logr.Discard(), provider, time.Hour); err != nil || soft != 100*mib ||
		!strings.HasPrefix(from, "0.5 of the cgroup's memory limit") {
		t.Fatalf("empty GOMEMLIMIT and AUTOMEMLIMIT: got %d, %q, %v; want %d from the flag", soft, from, err, 100*mib)
	}
	// A bad $AUTOMEMLIMIT is a bad setting: the manager says which and stops.
	unset(t)
	t.Setenv("AUTOMEMLIMIT", "lots")
	if _, _, err := apply(t.Context(), 0.9, logr.Discard(), provider, time.Hour); err == nil || !strings.Contains(err.Error(), "AUTOMEMLIMIT") {
		t.Fatalf("AUTOMEMLIMIT=lots: got %v", err)
	}
	// $AUTOMEMLIMIT as a number replaces the flag's ratio, and the log says so.
	unset(t)
	t.Setenv("AUTOMEMLIMIT", "0.25")
	soft, from, err := apply(t.Context(), 0.9, logr.Discard(), provider, time.Hour)
	if err != nil || soft != 50*mib || !strings.HasPrefix(from, "AUTOMEMLIMIT=0.25") {
		t.Fatalf("got %d, %q, %v; want %d from AUTOMEMLIMIT", soft, from, err, 50*mib)
	}
}

func TestApplyRefusesARatioOutsideZeroToOne(t *testing.T) {
	unset(t)
	for _, ratio := range []float64{-0.1, 1.5, math.NaN()} {
		if _, _, err := apply(t.Context(), ratio, logr.Discard(), memlimit.Limit(mib), time.Hour); err == nil ||
			!strings.Contains(err.Error(), "--memory-limit-ratio must be between 0 and 1") {
			t.Fatalf("ratio %g: got %v", ratio, err)
		}
	}
}
