package controllers

import (
	"fmt"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
)

func TestRecentInvitations(t *testing.T) {
	g := NewWithT(t)
	r := &RecentInvitations{Interval: 10 * time.Minute}
	g.Expect(r.Wait("acme", "ann@example.com", "uid-1", 1, now)).To(BeZero())

	g.Expect(r.Reserve("acme", "Ann@Example.com", "uid-1", 1, true, now)).To(BeZero(), "the first goes, and is recorded")
	hold := r.Wait("acme", "ann@example.com", "uid-1", 2, now.Add(time.Minute))
	g.Expect(hold.Wait).To(Equal(9*time.Minute), "the next round; the address's case does not matter")
	g.Expect(hold.Last).To(BeTemporally("==", now))
	g.Expect(hold.Customer).To(BeFalse())
	hold = r.Reserve("acme", "ann@example.com", "uid-2", 1, true, now.Add(time.Minute))
	g.Expect(hold.Wait).To(Equal(9*time.Minute), "a membership created again")
	hold = r.Reserve("acme", "ann@example.com", "uid-1", 1, false, now.Add(2*time.Minute))
	g.Expect(hold.Wait).To(BeZero(), "the same invitation again (a retry, or a crash before it was recorded): the same link, not held back")
	hold = r.Wait("acme", "ann@example.com", "uid-2", 1, now.Add(3*time.Minute))
	g.Expect(hold.Wait).To(Equal(9*time.Minute), "the retry was recorded anew, a refused reservation was not")
	hold = r.Reserve("globex", "ann@example.com", "uid-3", 1, true, now.Add(time.Minute))
	g.Expect(hold.Wait).To(BeZero(), "per customer")
	hold = r.Wait("acme", "ann@example.com", "uid-1", 2, now.Add(12*time.Minute))
	g.Expect(hold.Wait).To(BeZero())

	// Forgets what is older than the interval, sweeping at most once per interval.
	r.Reserve("acme", "bob@example.com", "uid-4", 1, true, now.Add(5*time.Minute))
	g.Expect(r.Len()).To(Equal(3))
	r.Reserve("acme", "cid@example.com", "uid-5", 1, true, now.Add(12*time.Minute))
	g.Expect(r.Len()).To(Equal(2), "ann's (10 minutes old) and globex's are gone, bob's stays, cid's is new")
	customers, charged := r.Customers()
	g.Expect(customers+charged).To(BeZero(), "no hourly limit set: no customer is remembered")

	var off *RecentInvitations
	g.Expect(off.Reserve("acme", "ann@example.com", "uid-1", 1, true, now)).To(BeZero())
	g.Expect(off.Wait("acme", "ann@example.com", "uid-1", 2, now)).To(BeZero(), "nil: no limit")
	zero := &RecentInvitations{}
	zero.Reserve("acme", "ann@example.com", "uid-1", 1, true, now)
	g.Expect(zero.Wait("acme", "ann@example.com", "uid-1", 2, now)).To(BeZero(), "zero interval: no limit")
}

func TestRecentInvitationsPerCustomer(t *testing.T) {
	g := NewWithT(t)
	r := &RecentInvitations{PerCustomerPerHour: 4}
	held := func(wait time.Duration) Hold { return Hold{Wait: wait, Customer: true} }
	for i, email := range []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com"} {
		g.Expect(r.Reserve("acme", email, types.UID(email), 1, true, now)).To(BeZero(), "the bucket is full: 4 at once (%d)", i)
	}
	g.Expect(r.Reserve("acme", "a@example.com", "a@example.com", 1, true, now)).To(BeZero(),
		"the same first attempt again (its record conflicted): charged once, so not held")
	r.Attempted("a@example.com", 1)
	g.Expect(r.Reserve("acme", "a@example.com", "a@example.com", 1, false, now)).To(BeZero(),
		"a retry after a failed send is not counted, nor held back")

	g.Expect(r.Reserve("acme", "e@example.com", "uid-e", 1, true, now)).To(Equal(held(15*time.Minute)),
		"the fifth gets the first free slot, a quarter of an hour away (an hour / 4)")
	g.Expect(r.Reserve("acme", "f@example.com", "uid-f", 1, true, now.Add(time.Minute))).To(Equal(held(29*time.Minute)),
		"the sixth the slot after it")
	g.Expect(r.Reserve("acme", "e@example.com", "uid-e", 1, true, now.Add(5*time.Minute))).To(Equal(held(10*time.Minute)),
		"the fifth again: its slot does not move, and it is not charged twice")
	g.Expect(r.Wait("acme", "b@example.com", "b@example.com", 2, now.Add(5*time.Minute))).To(Equal(held(40*time.Minute)),
		"a new round counts too, and takes the next slot (two re-sends cannot both pass for one slot)")
	g.Expect(r.Reserve("globex", "e@example.com", "uid-g", 1, true, now)).To(BeZero(), "another customer has a bucket of its own")

	g.Expect(r.Reserve("acme", "e@example.com", "uid-e", 1, true, now.Add(15*time.Minute))).To(BeZero(), "its slot has come")
	g.Expect(r.Reserve("acme", "e@example.com", "uid-e", 1, true, now.Add(15*time.Minute))).To(BeZero(), "and stays paid until its attempt is on record")
	customers, charged := r.Customers()
	g.Expect(customers).To(Equal(2))
	g.Expect(charged).To(Equal(7), "acme's b, c, d, e, f and b's round 2, globex's g; a's attempt is on record")
	r.Attempted("uid-e", 1)
	_, charged = r.Customers()
	g.Expect(charged).To(Equal(6))

	// An hour after its last slot a customer's bucket is full again; the next
	// sweep forgets it, and the charges whose slot is an hour past.
	later := now.Add(3 * time.Hour)
	for i, email := range []string{"g@example.com", "h@example.com", "i@example.com", "j@example.com"} {
		g.Expect(r.Reserve("acme", email, types.UID(email), 1, true, later)).To(BeZero(), "full again (%d)", i)
	}
	customers, charged = r.Customers()
	g.Expect(customers).To(Equal(1), "globex's full bucket was swept")
	g.Expect(charged).To(Equal(4), "only the four just charged")
	g.Expect(r.Reserve("acme", "k@example.com", "uid-k", 1, true, later).Customer).To(BeTrue())

	var off *RecentInvitations
	off.Attempted("uid-k", 1)
}

// Slots are given out an hour ahead at most: memberships created and deleted while
// held cannot push a customer's invitations back without bound.
func TestRecentInvitationsPerCustomerQueueIsAnHour(t *testing.T) {
	g := NewWithT(t)
	r := &RecentInvitations{PerCustomerPerHour: 4}
	for i := range 4 {
		g.Expect(r.Reserve("acme", fmt.Sprintf("%d@example.com", i), types.UID(fmt.Sprint(i)), 1, true, now)).To(BeZero())
	}
	for i := 4; i < 8; i++ {
		g.Expect(r.Reserve("acme", fmt.Sprintf("%d@example.com", i), types.UID(fmt.Sprint(i)), 1, true, now)).
			To(Equal(Hold{Wait: time.Duration(i-3) * 15 * time.Minute, Customer: true}), "slot %d", i)
	}
	_, charged := r.Customers()
	g.Expect(charged).To(Equal(8))
	for range 3 {
		g.Expect(r.Reserve("acme", "9@example.com", "9", 1, true, now)).
			To(Equal(Hold{Wait: 15 * time.Minute, Customer: true, Unslotted: true}), "beyond the hour: no slot, no charge")
	}
	_, charged = r.Customers()
	g.Expect(charged).To(Equal(8))
	g.Expect(r.Reserve("acme", "9@example.com", "9", 1, true, now.Add(15*time.Minute))).
		To(Equal(Hold{Wait: time.Hour, Customer: true}), "once there is room, the slot after the last one given out")
}
