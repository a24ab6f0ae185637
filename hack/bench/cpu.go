package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100 on
// every Linux architecture Go supports).
const clockTicks = 100

// childCPU returns the CPU seconds (user + system) used so far by each direct
// child process of the bench, by command name: the manager, kube-apiserver,
// etcd and kube-controller-manager. The difference of two readings says whose
// CPU a phase cost: ours (manager) or the API server's.
func childCPU() map[string]float64 {
	out := map[string]float64{}
	self := os.Getpid()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		s := string(data)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		comm := s[open+1 : closing]
		// Fields after the command: state ppid pgrp session tty tpgid flags
		// minflt cminflt majflt cmajflt utime stime ...
		f := strings.Fields(s[closing+1:])
		if len(f) < 13 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != self {
			continue
		}
		utime, _ := strconv.ParseFloat(f[11], 64)
		stime, _ := strconv.ParseFloat(f[12], 64)
		out[comm] += (utime + stime) / clockTicks
	}
	return out
}

// cpuSince is the CPU each child used since an earlier childCPU reading.
func cpuSince(before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for comm, v := range childCPU() {
		if d := v - before[comm]; d > 0 {
			out[comm] = d
		}
	}
	return out
}
