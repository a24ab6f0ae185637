package testenv

import "github.com/partnerops/customer-operator/internal/localcluster"

// StablePort returns a free loopback port below the kernel's ephemeral range
// (localcluster.StablePort): for servers that a test stops and starts again on the
// same port.
func StablePort() (int, error) { return localcluster.StablePort() }

// StableAddr is StablePort as a loopback host:port.
func StableAddr() (string, error) { return localcluster.StableAddr() }
