package localcluster

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"
)

// DefaultStopTimeout is how long Stop waits after SIGTERM before it kills a process.
const DefaultStopTimeout = 15 * time.Second

// ProcessOptions describes a child process started by StartProcess.
type ProcessOptions struct {
	// Name is used in errors and messages.
	Name string
	// Path is the executable.
	Path string
	// Args are the arguments, without the executable.
	Args []string
	// Dir is the working directory; empty means the current one.
	Dir string
	// Env is the environment; nil means the current process's.
	Env []string
	// LogFile receives stdout and stderr; it is truncated at start.
	// Required: when a process fails, its error quotes the end of this file.
	LogFile string
	// Output, when set, receives a copy of stdout and stderr (a terminal, for example).
	Output io.Writer
}

// Process is a child process in its own process group, so that a Ctrl-C in
// the terminal reaches only its parent, which stops it in order, and so that
// Stop also ends whatever the process itself started. On Linux it is killed
// when its parent dies (Pdeathsig), so it is never left orphaned.
type Process struct {
	name    string
	logFile string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error

	stopOnce sync.Once
	stopping chan struct{}
}

// StartProcess starts a process with the options and returns at once.
func StartProcess(opts ProcessOptions) (*Process, error) {
	if opts.LogFile == "" {
		return nil, fmt.Errorf("%s: LogFile is required", opts.Name)
	}
	if err := os.MkdirAll(filepath.Dir(opts.LogFile), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(opts.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(opts.Path, opts.Args...)
	cmd.Dir = opts.Dir
	cmd.Env = opts.Env
	var out io.Writer = logf
	if opts.Output != nil {
		out = io.MultiWriter(logf, opts.Output)
	}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("starting %s: %w", opts.Name, err)
	}
	p := &Process{
		name:     opts.Name,
		logFile:  opts.LogFile,
		cmd:      cmd,
		done:     make(chan struct{}),
		stopping: make(chan struct{}),
	}
	go func() {
		p.err = cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Name returns the process's name.
func (p *Process) Name() string { return p.name }

// Pid returns the process id (also its process group id on Unix).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogFile returns the path of the process's log.
func (p *Process) LogFile() string { return p.logFile }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stopped reports whether Stop was called: an exit after it is expected.
func (p *Process) Stopped() bool {
	select {
	case <-p.stopping:
		return true
	default:
		return false
	}
}

// ExitError describes how the process ended, with the end of its log; call it after Done.
func (p *Process) ExitError() error {
	<-p.done
	state := "exited"
	if p.err != nil {
		state = p.err.Error()
	}
	return fmt.Errorf("%s %s; last lines of %s:\n%s", p.name, state, p.logFile, tailFile(p.logFile, 20))
}

// Stop sends SIGTERM to the process group, waits up to timeout (DefaultStopTimeout
// when zero), then kills the group. It is safe to call more than once.
func (p *Process) Stop(timeout time.Duration) {
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	p.stopOnce.Do(func() { close(p.stopping) })
	pid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		terminateGroup(pid)
		select {
		case <-p.done:
		case <-time.After(timeout):
			killGroup(pid)
			<-p.done
		}
	}
	// Anything the process started and left behind in its group goes too.
	killGroup(pid)
}

// tailFile returns the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	data = bytes.TrimRight(data, "\n")
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + string(bytes.Join(lines, []byte("\n    ")))
}
