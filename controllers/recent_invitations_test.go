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

	r.Record("acme", "Ann@Example.com", "uid-1", 1, now)
	wait, last := r.Wait("acme", "ann@example.com", "uid-1", 2, now.Add(time.Minute))
	g.Expect(wait).To(Equal(9*time.Minute), "the next round; the address's case does not matter")
	g.Expect(last).To(BeTemporally("==", now))
	wait, _ = r.Wait("acme", "ann@example.com", "uid-2", 1, now.Add(time.Minute))
	g.Expect(wait).To(Equal(9*time.Minute), "a membership created again")
	wait, _ = r.Wait("acme", "ann@example.com", "uid-1", 1, now.Add(time.Minute))
	g.Expect(wait).To(BeZero(), "the same invitation again (a crash before it was recorded): the same link, not held back")
	wait, _ = r.Wait("globex", "ann@example.com", "uid-3", 1, now.Add(time.Minute))
	g.Expect(wait).To(BeZero(), "per customer")
	wait, _ = r.Wait("acme", "ann@example.com", "uid-1", 2, now.Add(10*time.Minute))
	g.Expect(wait).To(BeZero())

	// Forgets what is older than the interval, sweeping at most once per interval.
	r.Record("acme", "bob@example.com", "uid-4", 1, now.Add(5*time.Minute))
	g.Expect(r.Len()).To(Equal(2))
	r.Record("acme", "cid@example.com", "uid-5", 1, now.Add(11*time.Minute))
	g.Expect(r.Len()).To(Equal(2), "ann's is gone, bob's (6 minutes old) stays")

	var off *RecentInvitations
	off.Record("acme", "ann@example.com", "uid-1", 1, now)
	g.Expect(off.Wait("acme", "ann@example.com", "uid-1", 2, now)).To(BeZero(), "nil: no limit")
	zero := &RecentInvitations{}
	zero.Record("acme", "ann@example.com", "uid-1", 1, now)
	g.Expect(zero.Wait("acme", "ann@example.com", "uid-1", 2, now)).To(BeZero(), "zero interval: no limit")
}
