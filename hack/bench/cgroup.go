package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// memoryCgroup is a memory cgroup of the bench's own with a limit, which the
// manager runs in as it would in a container with resources.limits.memory: the
// kernel enforces the limit (and kills at it), and the manager's
// --memory-limit-ratio reads it from its own cgroup. BENCH_MANAGER_MEMORY_LIMIT
// asks for it. It needs cgroup v1's memory controller, writable (root): a child
// of the bench's own cgroup takes the manager. Under cgroup v2 a cgroup with
// processes (the bench's) cannot give its children the memory controller (the
// "no internal processes" rule), so the bench would have to move itself first;
// that is not done, and the bench says so.
type memoryCgroup struct {
	dir   string
	limit int64
}

// v1Memory is where cgroup v1's memory controller is mounted.
const v1Memory = "/sys/fs/cgroup/memory"

// newMemoryCgroup creates a child of the bench's own memory cgroup with the
// limit (a Kubernetes quantity such as 160Mi).
func newMemoryCgroup(quantity string) (*memoryCgroup, error) {
	q, err := resource.ParseQuantity(quantity)
	if err != nil {
		return nil, fmt.Errorf("BENCH_MANAGER_MEMORY_LIMIT=%q: %w", quantity, err)
	}
	own, err := ownMemoryCgroup()
	if err != nil {
		return nil, fmt.Errorf("BENCH_MANAGER_MEMORY_LIMIT needs cgroup v1's memory controller: %w", err)
	}
	c := &memoryCgroup{dir: filepath.Join(own, fmt.Sprintf("customer-operator-bench-%d", os.Getpid())), limit: q.Value()}
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("BENCH_MANAGER_MEMORY_LIMIT needs a writable memory cgroup (root): %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "memory.limit_in_bytes"), []byte(strconv.FormatInt(c.limit, 10)), 0o644); err != nil {
		_ = os.Remove(c.dir)
		return nil, fmt.Errorf("setting the manager's memory limit: %w", err)
	}
	return c, nil
}

// ownMemoryCgroup finds the directory of this process's cgroup v1 memory
// controller, mounted in the usual place.
func ownMemoryCgroup() (string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		// hierarchy-ID:controller-list:path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, controller := range strings.Split(parts[1], ",") {
			if controller != "memory" {
				continue
			}
			dir := filepath.Join(v1Memory, parts[2])
			if _, err := os.Stat(filepath.Join(dir, "memory.limit_in_bytes")); err != nil {
				return "", fmt.Errorf("the memory controller is not mounted at %s: %w", v1Memory, err)
			}
			return dir, nil
		}
	}
	return "", errors.New("/proc/self/cgroup names no memory controller (a cgroup v2 host: not supported, see memoryCgroup)")
}

// wrap returns the command that joins the cgroup and then becomes the manager,
// so that the manager reads the limit from its very first instruction.
func (c *memoryCgroup) wrap(path string, args []string) (string, []string) {
	return "/bin/sh", append([]string{"-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(c.dir, "cgroup.procs"), path}, args...)
}

// cgroupMemory is what the kernel counted for the cgroup.
type cgroupMemory struct {
	// Usage and Peak are the cgroup's charged memory (anonymous and page cache)
	// now and at most so far (over every manager the run started in it).
	Usage, Peak int64
	// Failcnt is how often the limit was hit.
	Failcnt int64
	// OOMKills is how many processes the kernel killed at the limit.
	OOMKills int64
}

func (c *memoryCgroup) read() (cgroupMemory, error) {
	var m cgroupMemory
	var err error
	if m.Usage, err = c.int("memory.usage_in_bytes"); err != nil {
		return m, err
	}
	if m.Peak, err = c.int("memory.max_usage_in_bytes"); err != nil {
		return m, err
	}
	if m.Failcnt, err = c.int("memory.failcnt"); err != nil {
		return m, err
	}
	oom, err := c.keyed("memory.oom_control")
	m.OOMKills = oom["oom_kill"]
	return m, err
}
func (c *memoryCgroup) int(file string) (int64, error) {
	data, err := os.ReadFile(filepath.Join(c.dir, file))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
}

// keyed reads a file of "key value" lines.
func (c *memoryCgroup) keyed(file string) (map[string]int64, error) {
	f, err := os.Open(filepath.Join(c.dir, file))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	values := map[string]int64{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 2 {
			if v, err := strconv.ParseInt(fields[1], 10, 64); err == nil {
				values[fields[0]] = v
			}
		}
	}
	return values, s.Err()
}

// remove deletes the cgroup once the manager has exited.
func (c *memoryCgroup) remove() error { return os.Remove(c.dir) }
