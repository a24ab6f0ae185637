package controllers

import (
	"hash/fnv"
	"sync"
	"time"

	"github.com/partnerops/customer-operator/internal/validation"
)

// RecentInvitations remembers when the operator last mailed an invitation to each
// address for each customer, so that an address is mailed at most once per
// Interval for a customer however often its membership is re-sent (the resend
// annotation) or deleted and created again: a customer's Admins choose the
// addresses, and the partner's mail server sends. It lives in the leader's memory
// (a restart forgets it, and sends no more than a restart's worth), and holds only
// the last Interval's addresses, 16 bytes each.
type RecentInvitations struct {
	// Interval is --invitation-min-interval; zero turns the limit off.
	Interval time.Duration

	mu        sync.Mutex
	sent      map[uint64]int64 // hash of customer and address → unix nanoseconds
	lastPrune time.Time
}

func recentKey(customer, email string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(customer))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(validation.LowerASCII(email)))
	return h.Sum64()
}

// Wait is how long an invitation to email for customer must still wait at now,
// and when the last one went out; zero when it may go.
func (r *RecentInvitations) Wait(customer, email string, now time.Time) (time.Duration, time.Time) {
	if r == nil || r.Interval <= 0 {
		return 0, time.Time{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.sent[recentKey(customer, email)]
	if !ok {
		return 0, time.Time{}
	}
	last := time.Unix(0, at)
	return max(last.Add(r.Interval).Sub(now), 0), last
}

// Record notes an invitation sent at at, and forgets those older than Interval
// (a sweep at most once per Interval).
func (r *RecentInvitations) Record(customer, email string, at time.Time) {
	if r == nil || r.Interval <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sent == nil {
		r.sent = map[uint64]int64{}
	}
	if at.Sub(r.lastPrune) >= r.Interval {
		for k, t := range r.sent {
			if at.Sub(time.Unix(0, t)) >= r.Interval {
				delete(r.sent, k)
			}
		}
		r.lastPrune = at
	}
	r.sent[recentKey(customer, email)] = at.UnixNano()
}

// Len is how many addresses it remembers.
func (r *RecentInvitations) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sent)
}
