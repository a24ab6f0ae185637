package localcluster

import "syscall"

// childSysProcAttr puts a child in its own process group (a Ctrl-C reaches only
// its parent, which stops children in order) and asks the kernel to kill it
// when its parent dies, so that nothing is left running after a crash.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func terminateGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGTERM) }

func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }
