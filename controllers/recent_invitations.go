package controllers

import (
	"hash/maphash"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/partnerops/customer-operator/internal/validation"
)

// RecentInvitations remembers when the operator last mailed an invitation to each
// address for each customer, so that an address is mailed at most once per
// Interval for a customer however often its membership is re-sent (the resend
// annotation) or deleted and created again: a customer's Admins choose the
// addresses, and the partner's mail server sends. It lives in the leader's memory
// (a restart forgets it, and sends no more than a restart's worth), and holds only
// the last Interval's addresses (1.5 MB for the 20,000 of a 10,000-customer
// convergence, measured; Go maps do not shrink after such a burst).
//
// The same invitation (membership UID and round) is never held back by its own
// entry: that is the mail re-sent after a crash between sending and recording,
// which carries the same link.
type RecentInvitations struct {
	// Interval is --invitation-min-interval; zero turns the limit off.
	Interval time.Duration

	mu        sync.Mutex
	seed      maphash.Seed
	sent      map[uint64]recentSend
	lastPrune time.Time
}

type recentSend struct {
	at         int64  // unix nanoseconds
	invitation uint64 // hash of the membership UID and round
}

// hash is keyed with a random seed, so that nobody can choose an address whose
// key collides with another customer's.
func (r *RecentInvitations) hash(parts ...string) uint64 {
	var h maphash.Hash
	h.SetSeed(r.seed)
	for _, p := range parts {
		_, _ = h.WriteString(p)
		_ = h.WriteByte(0)
	}
	return h.Sum64()
}

func (r *RecentInvitations) init() {
	if r.sent == nil {
		r.seed = maphash.MakeSeed()
		r.sent = map[uint64]recentSend{}
	}
}

// Wait is how long invitation round of membership uid, to email for customer,
// must still wait at now, and when the last one to that address went out; zero
// when it may go.
func (r *RecentInvitations) Wait(customer, email string, uid types.UID, round int32, now time.Time) (time.Duration, time.Time) {
	return r.check(customer, email, uid, round, now, false)
}

// Reserve is Wait, and when the invitation may go, records it as sent at now in
// the same step, so that two reconciles (a membership deleted mid-send and its
// re-creation) cannot both pass. A reservation whose send then fails still
// counts: at most one attempt per address and Interval.
func (r *RecentInvitations) Reserve(customer, email string, uid types.UID, round int32, now time.Time) (time.Duration, time.Time) {
	return r.check(customer, email, uid, round, now, true)
}

func (r *RecentInvitations) check(customer, email string, uid types.UID, round int32, now time.Time, reserve bool) (time.Duration, time.Time) {
	if r == nil || r.Interval <= 0 {
		return 0, time.Time{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	key := r.hash(customer, validation.LowerASCII(email))
	invitation := r.hash(string(uid), strconv.Itoa(int(round)))
	if last, ok := r.sent[key]; ok && last.invitation != invitation {
		at := time.Unix(0, last.at)
		if wait := at.Add(r.Interval).Sub(now); wait > 0 {
			return wait, at
		}
	}
	if reserve {
		r.record(key, invitation, now)
	}
	return 0, time.Time{}
}

// record stores a send and forgets those older than Interval (a sweep at most
// once per Interval). r.mu is held.
func (r *RecentInvitations) record(key, invitation uint64, at time.Time) {
	if at.Sub(r.lastPrune) >= r.Interval {
		for k, s := range r.sent {
			if at.Sub(time.Unix(0, s.at)) >= r.Interval {
				delete(r.sent, k)
			}
		}
		r.lastPrune = at
	}
	r.sent[key] = recentSend{at: at.UnixNano(), invitation: invitation}
}

// Len is how many addresses it remembers.
func (r *RecentInvitations) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sent)
}
