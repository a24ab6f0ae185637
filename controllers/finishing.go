package controllers

import (
	"context"
	"time"
)

// StoppingGrace is how long a mail that is out, and its record, may run on after
// the manager began to stop. It is below controller-runtime's graceful shutdown
// (30 s), so the reconcile ends, and the leader lease is released, only after the
// record is written: the next leader then reads it and sends nothing again. A send
// still hanging then is abandoned, unrecorded, for the next leader to retry.
const StoppingGrace = 20 * time.Second

// finishing returns a context that is not cancelled with ctx (on SIGTERM
// controller-runtime cancels the reconcile's context at once, then waits for the
// reconcile), but grace after it, so that a mail the server is accepting is
// recorded rather than left for the next leader to send again.
func finishing(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	out, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		timer := time.AfterFunc(grace, cancel)
		context.AfterFunc(out, func() { timer.Stop() })
	})
	return out, func() {
		stop()
		cancel()
	}
}
