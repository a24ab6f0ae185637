package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
)

// A mail out when the manager begins to stop may finish, but only for the grace:
// below the graceful shutdown, so the leader lease is never released while it runs.
func TestFinishingOutlivesItsParentForTheGraceOnly(t *testing.T) {
	g := NewWithT(t)
	g.Expect(StoppingGrace).To(BeNumerically("<", 30*time.Second), "controller-runtime's graceful shutdown")

	parent, stop := context.WithCancel(context.Background())
	ctx, done := finishing(parent, 100*time.Millisecond)
	defer done()
	time.Sleep(150 * time.Millisecond)
	g.Expect(ctx.Err()).NotTo(HaveOccurred(), "a running parent: no deadline of its own")

	stop()
	stopped := time.Now()
	g.Expect(ctx.Err()).NotTo(HaveOccurred(), "not cancelled with its parent")
	g.Eventually(ctx.Done()).Should(BeClosed())
	g.Expect(time.Since(stopped)).To(BeNumerically(">=", 100*time.Millisecond), "cancelled the grace after its parent")

	ctx2, done2 := finishing(context.Background(), time.Hour)
	done2()
	g.Expect(ctx2.Err()).To(MatchError(context.Canceled), "its own cancel ends it at once")
}
