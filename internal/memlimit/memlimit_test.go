package memlimit

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func write(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "limit")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		want    int64
		noLimit bool
		invalid bool
	}{
		{name: "cgroup v2 limit", content: "268435456\n", want: 268435456},
		{name: "cgroup v2 without a limit", content: "max\n", noLimit: true},
		{name: "cgroup v1 without a limit", content: "9223372036854771712\n", noLimit: true},
		{name: "garbage", content: "lots\n", invalid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Read(write(t, tc.content))
			switch {
			case tc.noLimit:
				if !errors.Is(err, ErrNoLimit) {
					t.Fatalf("want ErrNoLimit, got %d, %v", got, err)
				}
			case tc.invalid:
				if err == nil || errors.Is(err, ErrNoLimit) {
					t.Fatalf("want a parse error naming the file, got %d, %v", got, err)
				}
			default:
				if err != nil || got != tc.want {
					t.Fatalf("got %d, %v; want %d", got, err, tc.want)
				}
			}
		})
	}
	if _, err := Read(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrNoLimit) {
		t.Fatalf("missing files: want ErrNoLimit, got %v", err)
	}
	// The first file that exists decides.
	if got, err := Read(filepath.Join(t.TempDir(), "missing"), write(t, "1048576")); err != nil || got != 1048576 {
		t.Fatalf("got %d, %v", got, err)
	}
}

func TestApplyRespectsGOMEMLIMITAndRatio(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "100MiB")
	if soft, why, err := Apply(0.9); err != nil || soft != 0 || why != "GOMEMLIMIT=100MiB is set" {
		t.Fatalf("got %d, %q, %v", soft, why, err)
	}
	t.Setenv("GOMEMLIMIT", "")
	if soft, why, err := Apply(0); err != nil || soft != 0 || why != "--memory-limit-ratio=0" {
		t.Fatalf("got %d, %q, %v", soft, why, err)
	}
	if _, _, err := Apply(1.5); err == nil {
		t.Fatal("a ratio above 1 must be refused")
	}
}
