package portal

import (
	"container/list"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// clientLimiter rate-limits token attempts per client. It remembers at most max
// clients, evicting the least recently seen, so a flood of addresses cannot grow it
// without bound; an evicted client merely starts again with a full bucket.
type clientLimiter struct {
	limit rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	clients map[netip.Addr]*list.Element
	lru     *list.List // of *limiterEntry, most recently seen first
}

type limiterEntry struct {
	client  netip.Addr
	limiter *rate.Limiter
}

func newClientLimiter(limit rate.Limit, burst, max int) *clientLimiter {
	return &clientLimiter{
		limit: limit,
		burst: burst,
		max:   max,
		// Not sized for max up front: that is ~1 MB before the first visitor.
		clients: make(map[netip.Addr]*list.Element),
		lru:     list.New(),
	}
}

// allow reports whether client may make another attempt at now.
func (l *clientLimiter) allow(client netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, ok := l.clients[client]; ok {
		l.lru.MoveToFront(el)
		return el.Value.(*limiterEntry).limiter.AllowN(now, 1)
	}
	if l.lru.Len() >= l.max {
		oldest := l.lru.Back()
		l.lru.Remove(oldest)
		delete(l.clients, oldest.Value.(*limiterEntry).client)
	}
	entry := &limiterEntry{client: client, limiter: rate.NewLimiter(l.limit, l.burst)}
	l.clients[client] = l.lru.PushFront(entry)
	return entry.limiter.AllowN(now, 1)
}

func (l *clientLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// clientAddr is the address a request is rate-limited under: the peer, or, when the
// peer is a trusted proxy, the right-most X-Forwarded-For entry that is not one.
// IPv6 clients are grouped by /64, the smallest block a site usually gets, so that
// one site cannot escape the limit by hopping addresses.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	addr := remoteAddr(r)
	if isTrusted(addr, trusted) {
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop, err := parseHop(strings.TrimSpace(hops[i]))
			if err != nil {
				break
			}
			addr = hop.Unmap().WithZone("")
			if !isTrusted(addr, trusted) {
				break
			}
		}
	}
	if addr.Is6() {
		prefix, _ := addr.Prefix(64)
		return prefix.Addr()
	}
	return addr
}

// parseHop reads one X-Forwarded-For entry: an address, or an address with a port
// (1.2.3.4:5678, [2001:db8::1]:443), as some proxies (Azure Application Gateway)
// write it. Read as unparsable, such a hop stopped the walk at the proxy, and every
// client behind it shared one limit.
func parseHop(s string) (netip.Addr, error) {
	if addr, err := netip.ParseAddr(s); err == nil {
		return addr, nil
	}
	addrPort, err := netip.ParseAddrPort(s)
	return addrPort.Addr(), err
}

func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.IPv4Unspecified()
	}
	return addr.Unmap().WithZone("")
}

func isTrusted(addr netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
