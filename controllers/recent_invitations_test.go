package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

func TestRecentInvitations(t *testing.T) {
	g := NewWithT(t)
	r := &RecentInvitations{Interval: 10 * time.Minute}
	g.Expect(r.Wait("acme", "ann@example.com", "uid-1", 1, now)).To(BeZero())

	g.Expect(r.Reserve("acme", "Ann@Example.com", "uid-1", 1, now)).To(BeZero(), "the first goes, and is recorded")
	wait, last := r.Wait("acme", "ann@example.com", "uid-1", 2, now.Add(time.Minute))
	g.Expect(wait).To(Equal(9*time.Minute), "the next round; the address's case does not matter")
	g.Expect(last).To(BeTemporally("==", now))
	wait, _ = r.Reserve("acme", "ann@example.com", "uid-2", 1, now.Add(time.Minute))
	g.Expect(wait).To(Equal(9*time.Minute), "a membership created again")
	wait, _ = r.Reserve("acme", "ann@example.com", "uid-1", 1, now.Add(2*time.Minute))
	g.Expect(wait).To(BeZero(), "the same invitation again (a retry, or a crash before it was recorded): the same link, not held back")
	wait, _ = r.Wait("acme", "ann@example.com", "uid-2", 1, now.Add(3*time.Minute))
	g.Expect(wait).To(Equal(9*time.Minute), "the retry was recorded anew, a refused reservation was not")
	wait, _ = r.Reserve("globex", "ann@example.com", "uid-3", 1, now.Add(time.Minute))
	g.Expect(wait).To(BeZero(), "per customer")
	wait, _ = r.Wait("acme", "ann@example.com", "uid-1", 2, now.Add(12*time.Minute))
	g.Expect(wait).To(BeZero())

	// Forgets what is older than the interval, sweeping at most once per interval.
	r.Reserve("acme", "bob@example.com", "uid-4", 1, now.Add(5*time.Minute))
	g.Expect(r.Len()).To(Equal(3))
	r.Reserve("acme", "cid@example.com", "uid-5", 1, now.Add(12*time.Minute))
	g.Expect(r.Len()).To(Equal(2), "ann's (10 minutes old) and globex's are gone, bob's stays, cid's is new")

	var off *RecentInvitations
	g.Expect(off.Reserve("acme", "ann@example.com", "uid-1", 1, now)).To(BeZero())
	g.Expect(off.Wait("acme", "ann@example.com", "uid-1", 2, now)).To(BeZero(), "nil: no limit")
	zero := &RecentInvitations{}
	zero.Reserve("acme", "ann@example.com", "uid-1", 1, now)
	g.Expect(zero.Wait("acme", "ann@example.com", "uid-1", 2, now)).To(BeZero(), "zero interval: no limit")
}
