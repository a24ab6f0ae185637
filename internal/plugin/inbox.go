package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"text/tabwriter"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
	"github.com/partnerops/customer-operator/internal/messages"
)

func newInboxCommand(o *Options) *cobra.Command {
	var showBody bool
	cmd := &cobra.Command{
		Use:   "inbox",
		Short: "List the open messages addressed to you",
		Long: longDesc(`
			List the open messages addressed to you, across all your customers: the
			CustomerMessages you may read that are not resolved yet and that you have not
			acknowledged.

			Whether a message is addressed to you (you are an active member of its
			customer, in a role it addresses) is asked of the cluster itself, with a
			dry-run acknowledgement that stores nothing.`),
		Example: examples(`
			# List your open messages
			kubectl customer inbox

			# List them with their text
			kubectl customer inbox --body`),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.runInbox(cmd.Context(), showBody)
		},
	}
	cmd.Flags().BoolVar(&showBody, "body", false, "Print each message's text below the list.")
	return cmd
}

func (o *Options) runInbox(ctx context.Context, showBody bool) error {
	c, me, err := o.clientAndUser(ctx)
	if err != nil {
		return err
	}
	readable, err := readableMessages(ctx, c, "")
	if err != nil {
		return explain(err, quoteUser(me.Username), "read your messages", "ask your partner to add you to a customer")
	}

	var candidates []v1alpha1.CustomerMessage
	for _, m := range readable {
		if !messages.IsResolved(&m) && !messages.HasAcknowledged(&m, me.Username) {
			candidates = append(candidates, m)
		}
	}
	// Asked in parallel, kept in the order read.
	const (
		notForMe = iota
		forMe
		unverifiable
	)
	answers := make([]int, len(candidates))
	err = inParallel(ctx, len(candidates), func(ctx context.Context, i int) error {
		ok, err := mayAcknowledge(ctx, c, &candidates[i], me.Username)
		switch {
		case err != nil && apierrors.IsForbidden(err) && !isAdmissionDenial(err):
			// No right to acknowledge at all: show what is readable, say so below.
			answers[i] = unverifiable
		case err != nil:
			return fmt.Errorf("checking whether CustomerMessage %q is for you: %w", candidates[i].Name, err)
		case ok:
			answers[i] = forMe
		}
		return nil
	})
	if err != nil {
		return err
	}
	var open []v1alpha1.CustomerMessage
	unverified := false
	for i, m := range candidates {
		switch answers[i] {
		case unverifiable:
			unverified = true
			open = append(open, m)
		case forMe:
			open = append(open, m)
		}
	}

	if len(open) == 0 {
		fmt.Fprintf(o.Out, "No open messages for %s.\n", me.Username)
		return nil
	}
	w := tabwriter.NewWriter(o.Out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tCUSTOMER\tTITLE\tPOLICY\tAGE")
	for _, m := range open {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Spec.Customer, oneLine(m.Spec.Title, 60),
			messages.ReadPolicy(&m), age(m.CreationTimestamp))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if showBody {
		for _, m := range open {
			printBody(o.Out, &m)
		}
	}
	if unverified {
		fmt.Fprintf(o.ErrOut, "Warning: %s may not create MessageAcknowledgements, so these are all the open messages you may read, "+
			"whether or not they are addressed to you.\n", me.Username)
	}
	return nil
}

// mayAcknowledge asks admission whether user may acknowledge m now, with a dry-run
// create that stores and reserves nothing. An admission denial means "not for you"
// (not a recipient, already acknowledged, resolved); other errors are returned.
// AlreadyExists comes from storage, after admission said yes: someone else's
// acknowledgement has the name (ack then takes a generated one), so it is for you.
func mayAcknowledge(ctx context.Context, c client.Client, m *v1alpha1.CustomerMessage, user string) (bool, error) {
	err := c.Create(ctx, newAcknowledgement(m.Name, user), client.DryRunAll, client.FieldOwner(fieldManager))
	switch {
	case err == nil, apierrors.IsAlreadyExists(err):
		return true, nil
	case apierrors.IsForbidden(err) && isAdmissionDenial(err):
		return false, nil
	}
	return false, err
}

// newAcknowledgement is user's acknowledgement of message. Its name is derived from
// both, so that a retried `ack` finds the first one instead of making a second.
func newAcknowledgement(message, user string) *v1alpha1.MessageAcknowledgement {
	sum := sha256.Sum256([]byte(user))
	prefix := message
	if len(prefix) > 242 {
		prefix = strings.TrimRight(prefix[:242], ".-")
	}
	return &v1alpha1.MessageAcknowledgement{
		ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + hex.EncodeToString(sum[:])[:10]},
		Spec:       v1alpha1.MessageAcknowledgementSpec{Message: message, User: user},
	}
}

func printBody(out io.Writer, m *v1alpha1.CustomerMessage) {
	fmt.Fprintf(out, "\n--- %s (customer %s, %s)\n%s\n\n%s\n", m.Name, m.Spec.Customer, messages.ReadPolicy(m),
		inline(m.Spec.Title), printable(strings.TrimRight(m.Spec.Body, "\n")))
}

// oneLine shortens s to one line of at most n runes for a table cell.
func oneLine(s string, n int) string {
	s = inline(s)
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// inline is s on one line, safe to print (printable), its whitespace collapsed.
func inline(s string) string { return strings.Join(strings.Fields(printable(s)), " ") }

// printable makes text from the cluster safe to print to a terminal. Titles, bodies
// and display names are written by partners, or by whoever can push to their Git
// repository, and every member who runs the plugin prints them: an escape sequence
// in them could move the cursor and fake a prompt, set the clipboard (OSC 52), hide
// a link (OSC 8) or, with the bidirectional controls, reorder what the reader sees.
// Control characters other than newline and tab (C0, DEL, C1) and the bidirectional
// embeddings, overrides, isolates and marks are shown as \uXXXX instead.
func printable(s string) string {
	if strings.IndexFunc(s, unprintable) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unprintable(r) {
			fmt.Fprintf(&b, "\\u%04x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ErrorText is err's message, printable: API errors quote what the cluster holds
// (names, admission's reasons), which the plugin prints like the rest of its output.
func ErrorText(err error) string { return printable(err.Error()) }

func unprintable(r rune) bool {
	switch {
	case r == '\n' || r == '\t':
		return false
	case unicode.IsControl(r): // C0, DEL and C1
		return true
	case r == '\u200e' || r == '\u200f' || r == '\u061c', // marks
		r >= '\u202a' && r <= '\u202e', // embeddings and overrides
		r >= '\u2066' && r <= '\u2069': // isolates
		return true
	}
	return false
}

func age(t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}

func quoteUser(u string) string { return fmt.Sprintf("%q", u) }
