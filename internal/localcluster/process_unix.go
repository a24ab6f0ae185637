//go:build unix && !linux

package localcluster

import "syscall"

// childSysProcAttr puts a child in its own process group. Without Pdeathsig
// (Linux only), a parent that is killed outright leaves its children running.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func terminateGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGTERM) }

func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }
