package localcluster

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// ephemeralPortRangeFile is where Linux keeps the range it picks the source ports
// of outgoing connections from.
const ephemeralPortRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// StablePort returns a loopback port that was free a moment ago and lies below
// the kernel's range of ephemeral ports. A server that stops and starts again on
// the same port (the suites restart the manager, whose webhook and portal addresses
// are fixed in the API server's webhook configurations and in mailed links; a
// local cluster keeps its ports in its state file across `make run`s) can
// lose a port from that range to any outgoing connection in the meantime, which
// takes it as its source port for as long as it lives; a port below the range is
// never handed out that way.
func StablePort() (int, error) {
	low := ephemeralLow()
	const first = 10000
	for range 100 {
		port := first + rand.IntN(low-first)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil {
			return 0, err
		}
		return port, nil
	}
	return 0, fmt.Errorf("no free loopback port between %d and %d after 100 tries", first, low)
}

// StableAddr is StablePort as a loopback host:port.
func StableAddr() (string, error) {
	port, err := StablePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// ephemeralLow is the lowest ephemeral port: Linux's default (32768) when the
// kernel does not say, or says something too low to leave room below it.
func ephemeralLow() int {
	const fallback = 32768
	data, err := os.ReadFile(ephemeralPortRangeFile)
	if err != nil {
		return fallback
	}
	fields := strings.Fields(string(data))
	if len(fields) != 2 {
		return fallback
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil || low <= 12000 {
		return fallback
	}
	return low
}
