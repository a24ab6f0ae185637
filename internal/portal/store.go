package portal

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

// Errors of a Store and of CheckInvitation. The handler maps each to a page and a
// status code; none of them says anything about other memberships.
var (
	// ErrNotFound: no such membership or customer.
	ErrNotFound = errors.New("not found")
	// ErrNotInvited: the membership has no invitation a link could belong to
	// (invitation None, nothing sent yet, or it is being deleted).
	ErrNotInvited = errors.New("membership has no open invitation")
	// ErrAlreadyAccepted: the invitation was accepted already; links are single-use.
	ErrAlreadyAccepted = errors.New("invitation already accepted")
	// ErrReplaced: the link belongs to an earlier round; a newer invitation was sent.
	ErrReplaced = errors.New("invitation replaced by a newer one")
	// ErrExpired: the link of the current round has expired.
	ErrExpired = errors.New("invitation expired")
)

// Store is what the portal needs from the cluster.
type Store interface {
	// Membership returns the membership with the name, or ErrNotFound when there is
	// none or its UID is not uid (deleted and created again under the same name).
	Membership(ctx context.Context, name string, uid types.UID) (*v1alpha1.CustomerMembership, error)
	// FreshMembership is Membership read from the API server, not a cache.
	FreshMembership(ctx context.Context, name string, uid types.UID) (*v1alpha1.CustomerMembership, error)
	// Customer returns the customer with the name, or ErrNotFound.
	Customer(ctx context.Context, name string) (*v1alpha1.Customer, error)
	// Accept records that the invitation of round was accepted at now. It must fail
	// with ErrAlreadyAccepted (or another error of CheckInvitation) rather than
	// overwrite a concurrent change: two clicks accept once.
	Accept(ctx context.Context, m *v1alpha1.CustomerMembership, round int32, now time.Time) error
}

// CheckInvitation says whether the link of round may still accept membership m at
// now: nil, or one of ErrNotInvited, ErrAlreadyAccepted, ErrReplaced, ErrExpired.
//
// An invitation without an expiry time is accepted: the MAC proves the link is of
// the current round, and the controller writes the expiry before it sends.
func CheckInvitation(m *v1alpha1.CustomerMembership, round int32, now time.Time) error {
	inv := m.Status.Invitation
	switch {
	case m.DeletionTimestamp != nil, m.Spec.Invitation == v1alpha1.InvitationNone, inv == nil, inv.Round < 1:
		return ErrNotInvited
	case m.Status.AcceptedTime != nil:
		return ErrAlreadyAccepted
	case round < inv.Round:
		return ErrReplaced
	case round > inv.Round:
		// Rounds are written to status before their mail is sent, so a link from
		// the future is not one the operator sent.
		return ErrNotInvited
	case inv.ExpiryTime == nil:
		// The operator writes the expiry with the attempt, before the mail goes out:
		// a round without one sent no link (a status edited by hand or restored from
		// a backup). A link must never be valid without a bound; a cache that has
		// the round but not yet the attempt is read again from the API server.
		return ErrNotInvited
	case !now.Before(inv.ExpiryTime.Time):
		return ErrExpired
	}
	return nil
}

// ClientStore is the Store of a running manager: reads come from the cache (the
// membership controller watches memberships and customers anyway), and the status
// patch goes to the API server with an optimistic lock.
type ClientStore struct {
	// Client is the manager's client (cached reads, direct writes).
	Client client.Client
	// APIReader, if set, re-reads a membership after a conflict, so that a retry
	// does not wait for the cache to catch up. mgr.GetAPIReader().
	APIReader client.Reader
}

// Membership gets the membership by name (from the cache) and checks its UID.
func (s *ClientStore) Membership(ctx context.Context, name string, uid types.UID) (*v1alpha1.CustomerMembership, error) {
	return readMembership(ctx, s.Client, name, uid)
}

// FreshMembership gets the membership from the API server (the cache when no
// APIReader is set) and checks its UID.
func (s *ClientStore) FreshMembership(ctx context.Context, name string, uid types.UID) (*v1alpha1.CustomerMembership, error) {
	return s.reread(ctx, &v1alpha1.CustomerMembership{ObjectMeta: metav1.ObjectMeta{Name: name, UID: uid}})
}

// Customer gets the customer by name.
func (s *ClientStore) Customer(ctx context.Context, name string) (*v1alpha1.Customer, error) {
	var customer v1alpha1.Customer
	if err := s.Client.Get(ctx, client.ObjectKey{Name: name}, &customer); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("getting customer %q: %w", name, err)
	}
	return &customer, nil
}

// Accept patches status.acceptedTime and acceptedRound with an optimistic lock. On
// a conflict it re-reads the membership and checks the invitation again before
// retrying, so a concurrent accept (or a new round) wins and this one reports why.
func (s *ClientStore) Accept(ctx context.Context, m *v1alpha1.CustomerMembership, round int32, now time.Time) error {
	current := m.DeepCopy()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := CheckInvitation(current, round, now); err != nil {
			return err
		}
		accepted := current.DeepCopy()
		accepted.Status.AcceptedTime = &metav1.Time{Time: now}
		accepted.Status.AcceptedRound = round
		patch := client.MergeFromWithOptions(current, client.MergeFromWithOptimisticLock{})
		err := s.Client.Status().Patch(ctx, accepted, patch)
		switch {
		case err == nil:
			return nil
		case apierrors.IsNotFound(err):
			return ErrNotFound
		case apierrors.IsConflict(err):
			fresh, getErr := s.reread(ctx, current)
			if getErr != nil {
				return getErr
			}
			current = fresh
			return err // retried on the fresh object
		}
		return fmt.Errorf("recording acceptance of membership %q: %w", current.Name, err)
	})
}

// reread gets the membership again from the API server (the cache when no
// APIReader is set), as the same object: same name, same UID.
func (s *ClientStore) reread(ctx context.Context, m *v1alpha1.CustomerMembership) (*v1alpha1.CustomerMembership, error) {
	reader := s.APIReader
	if reader == nil {
		reader = s.Client
	}
	return readMembership(ctx, reader, m.Name, m.UID)
}

// readMembership gets the membership name from reader; ErrNotFound when there is
// none, or when the one there has another UID (deleted and created again under
// the same name: another membership).
func readMembership(ctx context.Context, reader client.Reader, name string, uid types.UID) (*v1alpha1.CustomerMembership, error) {
	var m v1alpha1.CustomerMembership
	if err := reader.Get(ctx, client.ObjectKey{Name: name}, &m); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("getting membership %q: %w", name, err)
	}
	if m.UID != uid {
		return nil, ErrNotFound
	}
	return &m, nil
}
