package plugin

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/messages"
)

func newAckCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "ack MESSAGE",
		Short: "Acknowledge a message",
		Long: longDesc(`
			Acknowledge a CustomerMessage: create a MessageAcknowledgement in your name.

			The cluster admits it only from a recipient of an open message, once per
			person: acknowledging again says so and changes nothing. Under the SingleRead
			policy the first acknowledgement resolves the message for everyone; under
			AllMustRead it is resolved when every recipient has acknowledged.`),
		Example: examples(`
			# Acknowledge the message acme-maintenance
			kubectl customer ack acme-maintenance`),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runAck(cmd.Context(), args[0])
		},
	}
}

func (o *Options) runAck(ctx context.Context, message string) error {
	c, me, err := o.clientAndUser(ctx)
	if err != nil {
		return err
	}
	ack := newAcknowledgement(message, me.Username)
	// Admission refuses a second acknowledgement by the same user before storage
	// sees the name, so AlreadyExists means the name is someone else's: take a
	// generated one then. Asked with a dry run first, because admission reserves
	// the user's acknowledgement when it admits a create, and a create refused by
	// storage after that would hold the generated name's create until the
	// reservation lapses.
	if err := c.Create(ctx, ack.DeepCopy(), client.DryRunAll, client.FieldOwner(fieldManager)); apierrors.IsAlreadyExists(err) {
		ack.GenerateName, ack.Name = ack.Name+"-", ""
	}
	err = c.Create(ctx, ack, client.FieldOwner(fieldManager))
	if err != nil {
		if apierrors.IsForbidden(err) && isAdmissionDenial(err) && alreadyAcknowledged(ctx, c, message, me.Username, time.Now()) {
			fmt.Fprintf(o.Out, "You already acknowledged CustomerMessage %q.\n", message)
			return nil
		}
		return explain(err, quoteUser(me.Username), fmt.Sprintf("acknowledge CustomerMessage %q", message),
			"only members of the message's customer may acknowledge; ask your partner or a customer admin to add you")
	}
	fmt.Fprintf(o.Out, "Acknowledged CustomerMessage %q as %s (MessageAcknowledgement %q).\n", message, me.Username, ack.Name)
	return nil
}

// alreadyAcknowledged reports whether the message lists user as having
// acknowledged it, or holds admission's reservation of user's acknowledgement: a
// retried ack (after a lost answer) comes before the operator has recorded the
// first, and admission refuses it as a second. False when the message cannot be
// read.
func alreadyAcknowledged(ctx context.Context, c client.Client, message, user string, now time.Time) bool {
	m := &v1alpha1.CustomerMessage{}
	if c.Get(ctx, client.ObjectKey{Name: message}, m) != nil {
		return false
	}
	return messages.HasAcknowledged(m, user) || messages.LiveReservationOf(m, user, now) != nil
}
