package controllers

import (
	"hash/maphash"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/partnerops/customer-operator/internal/validation"
)

// RecentInvitations holds back invitation e-mails by two limits, in the leader's
// memory (a restart forgets both, and sends no more than a restart's worth):
//
//   - one address is mailed at most once per Interval for a customer, however
//     often its membership is re-sent (the resend annotation) or deleted and
//     created again: a customer's Admins choose the addresses, and the partner's
//     mail server sends. It holds only the last Interval's addresses (1.5 MB for
//     the 20,000 of a 10,000-customer convergence, measured; Go maps do not
//     shrink after such a burst).
//   - a customer's invitations go out at most PerCustomerPerHour at once and
//     PerCustomerPerHour an hour after that (a token bucket per customer, kept as
//     the time its debt is paid off: one int64, forgotten once paid; 0.37 MB for
//     a 10,000-customer convergence, measured), so that an Admin who keeps
//     creating memberships for new addresses cannot make a mass mailer of the
//     partner's mail server. An invitation the bucket holds back is given a slot
//     of its own, the first free one within the next hour, and charged for it
//     at once: held invitations go in the order they came, each with a time
//     that does not move (so its condition is written once), not all at once
//     whenever a slot frees. Beyond the next hour's slots an invitation waits
//     for room without a slot or a charge, with a text that names no time (so
//     it is written once too). An invitation is charged once: until its
//     attempt is on record (Attempted), or an hour after its slot, a reconcile
//     that tries it again (a conflict, an API server that refused the attempt's
//     write) finds it paid; a reconcile that then reads a cache from before the
//     attempt's record charges it again, which costs a slot, not a mail. Only
//     the first attempt of an invitation round counts: retries after a failed
//     send do not.
//
// The same invitation (membership UID and round) is never held back by its own
// entry: that is the mail re-sent after a crash between sending and recording,
// which carries the same link.
type RecentInvitations struct {
	// Interval is --invitation-min-interval; zero turns the limit off.
	Interval time.Duration
	// PerCustomerPerHour is --max-invitations-per-customer-per-hour; zero turns
	// the limit off.
	PerCustomerPerHour int

	mu        sync.Mutex
	seed      maphash.Seed
	sent      map[uint64]recentSend
	lastPrune time.Time
	// paidOff is when each customer's bucket is full again, and slots when each
	// charged invitation (hash of the membership UID and round) whose attempt is
	// not yet on record may go, in unix nanoseconds.
	paidOff, slots    map[uint64]int64
	lastCustomerPrune time.Time
}

// Hold says why and how long an invitation waits; the zero Hold lets it go.
type Hold struct {
	// Wait is how long it must still wait.
	Wait time.Duration
	// Last is when the previous invitation to the address went out, when the
	// address's interval holds it back.
	Last time.Time
	// Customer says that the customer's hourly limit holds it back.
	Customer bool
	// Unslotted says that the customer's next hour of slots is given out: the
	// invitation gets one once there is room, at Wait, and waits for a slot then.
	Unslotted bool
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

// invitation is the key of round of membership uid.
func (r *RecentInvitations) invitation(uid types.UID, round int32) uint64 {
	return r.hash(string(uid), strconv.Itoa(int(round)))
}

func (r *RecentInvitations) init() {
	if r.sent == nil {
		r.seed = maphash.MakeSeed()
		r.sent = map[uint64]recentSend{}
		r.paidOff = map[uint64]int64{}
		r.slots = map[uint64]int64{}
	}
}

// Wait is how long a new invitation round of membership uid, to email for
// customer, must still wait at now; the zero Hold when it may go. Like Reserve,
// it charges the customer's bucket for the round (once), so that two re-sends
// cannot both pass it for the last free slot.
func (r *RecentInvitations) Wait(customer, email string, uid types.UID, round int32, now time.Time) Hold {
	return r.check(customer, email, uid, round, true, now, false)
}

// Reserve is Wait for an attempt to send round of membership uid, and when it may
// go, records it as sent to the address at now in the same step, so that two
// reconciles (a membership deleted mid-send and its re-creation) cannot both
// pass. A reservation whose send then fails still counts: at most one attempt per
// address and Interval. firstAttempt says whether the attempt is the round's
// first, the one the customer's bucket counts.
func (r *RecentInvitations) Reserve(customer, email string, uid types.UID, round int32, firstAttempt bool, now time.Time) Hold {
	return r.check(customer, email, uid, round, firstAttempt, now, true)
}

// Attempted says that the attempt of round of membership uid is on record: a
// later attempt is no first one, so its charge need not be remembered.
func (r *RecentInvitations) Attempted(uid types.UID, round int32) {
	if r == nil || r.PerCustomerPerHour <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	delete(r.slots, r.invitation(uid, round))
}

func (r *RecentInvitations) check(customer, email string, uid types.UID, round int32, counts bool, now time.Time, reserve bool) Hold {
	if r == nil {
		return Hold{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.init()
	invitation := r.invitation(uid, round)
	var key uint64
	if r.Interval > 0 {
		key = r.hash(customer, validation.LowerASCII(email))
		if last, ok := r.sent[key]; ok && last.invitation != invitation {
			at := time.Unix(0, last.at)
			if wait := at.Add(r.Interval).Sub(now); wait > 0 {
				return Hold{Wait: wait, Last: at}
			}
		}
	}
	if counts && r.PerCustomerPerHour > 0 {
		slot, charged := r.slots[invitation]
		if !charged {
			var booked bool
			if slot, booked = r.book(customer, invitation, now); !booked {
				return Hold{Wait: time.Unix(0, slot).Sub(now), Customer: true, Unslotted: true}
			}
		}
		if wait := time.Unix(0, slot).Sub(now); wait > 0 {
			return Hold{Wait: wait, Customer: true}
		}
	}
	if reserve && r.Interval > 0 {
		r.record(key, invitation, now)
	}
	return Hold{}
}

// book charges customer's bucket for invitation and returns when it may go (unix
// nanoseconds): now when the bucket has room, else the first slot after those
// given out already. Each invitation adds an hour/PerCustomerPerHour of debt; the
// bucket holds an hour's worth. Slots are given out an hour ahead at most: beyond
// that, nothing is charged, and book returns when the next slot is within the
// hour and false. Otherwise memberships created and deleted while held would push
// the customer's invitations back without bound (their slots are not given
// back), and hold every slot's worth of memory until then. r.mu is held.
func (r *RecentInvitations) book(customer string, invitation uint64, now time.Time) (int64, bool) {
	r.pruneCustomers(now)
	key := r.hash(customer)
	perInvitation := time.Hour / time.Duration(r.PerCustomerPerHour)
	paidOff := now
	if at, ok := r.paidOff[key]; ok && at > now.UnixNano() {
		paidOff = time.Unix(0, at)
	}
	slot := paidOff.Add(perInvitation - time.Hour)
	if slot.After(now.Add(time.Hour)) {
		return slot.Add(-time.Hour).UnixNano(), false
	}
	if slot.Before(now) {
		slot = now
	}
	r.paidOff[key] = paidOff.Add(perInvitation).UnixNano()
	r.slots[invitation] = slot.UnixNano()
	return slot.UnixNano(), true
}

// pruneCustomers forgets, at most once an hour, the customers whose bucket is
// full and the charges of invitations whose slot is an hour past (their
// membership was deleted, or their attempt never recorded). r.mu is held.
func (r *RecentInvitations) pruneCustomers(now time.Time) {
	if now.Sub(r.lastCustomerPrune) < time.Hour {
		return
	}
	for k, at := range r.paidOff {
		if at <= now.UnixNano() {
			delete(r.paidOff, k)
		}
	}
	for k, at := range r.slots {
		if at <= now.Add(-time.Hour).UnixNano() {
			delete(r.slots, k)
		}
	}
	r.lastCustomerPrune = now
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

// Customers is how many customers' buckets it remembers (the others are full),
// and how many charged invitations whose attempt is not on record.
func (r *RecentInvitations) Customers() (customers, charged int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.paidOff), len(r.slots)
}
