package controllers

import (
	"context"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// ignoreConflict turns an optimistic-lock conflict into success. A conflict means
// someone wrote the object after the cache showed it to this reconcile, and the
// watch event of that write reconciles it again, with what they wrote. Returned,
// it would be retried with backoff on top of that, logged as a "Reconciler error"
// with a stack trace and counted in controller_runtime_reconcile_errors_total for
// what is routine: the quota ledger writes Customers' status, and the
// acknowledgement webhook writes messages', as projects and acknowledgements come.
func ignoreConflict(ctx context.Context, err error) error {
	if apierrors.IsConflict(err) {
		log.FromContext(ctx).V(1).Info("Changed while reconciling; the newer version is reconciled next", "conflict", err.Error())
		return nil
	}
	return err
}
