package controllers

import (
	"context"
	"time"
)

// StoppingGrace is how long a mail that is out, and its record, may run on after
// the reconcile's context is cancelled. controller-runtime cancels it only after
// the runnables that need no leader (the portal: up to 10 s) have stopped, within
// its graceful shutdown (30 s); both together stay below that, so the reconcile
// ends, and the leader lease is released, only after the record is written: the
// next leader then reads it and sends nothing again.
var StoppingGrace = 15 * time.Second

// SendingGrace is the part of StoppingGrace a send may take; the rest is kept for
// its record. A send still hanging then is abandoned, unrecorded, for the next
// leader to retry.
var SendingGrace = StoppingGrace - 5*time.Second

// finishing returns a context that is not cancelled with ctx (when the manager
// stops, controller-runtime cancels the reconcile's context, then waits for the
// reconcile), but grace after it, so that a mail the server is accepting is
// recorded rather than left for the next leader to send again. Make it while ctx
// is live: for a ctx cancelled already, the grace counts from the call.
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
