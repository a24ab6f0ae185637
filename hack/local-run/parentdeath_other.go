//go:build !linux

package main

// stopWithParent is Linux-only (PR_SET_PDEATHSIG).
func stopWithParent() {}
