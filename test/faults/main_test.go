//go:build faults

package faults

import (
	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// The managers under test log to their own files (manager-<name>.log in the
// test's temp dir, whose tail a failure prints); envtest's own chatter is dropped.
func init() { logf.SetLogger(logr.Discard()) }
