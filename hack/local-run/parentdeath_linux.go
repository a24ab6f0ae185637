package main

import (
	"os"
	"syscall"
)

// stopWithParent asks the kernel to send SIGTERM to this process when its
// parent dies, so that killing `go run` or make (not only a Ctrl-C, which
// reaches the whole process group) still stops the local run cleanly.
func stopWithParent() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	if os.Getppid() == 1 {
		// The parent died before the request.
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
}
