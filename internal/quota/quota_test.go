package quota

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/partnerops/customer-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func reservation(ns string, expiresAt time.Time) v1alpha1.ProjectReservation {
	return v1alpha1.ProjectReservation{Namespace: ns, ExpiresAt: metav1.NewTime(expiresAt)}
}

// projects is a cache's view of live projects, each at resourceVersion 10.
func projects(names ...string) Projects {
	p := Projects{}
	for _, n := range names {
		p[n] = "10"
	}
	return p
}

func customerWith(projects int32, reservations ...v1alpha1.ProjectReservation) *v1alpha1.Customer {
	return &v1alpha1.Customer{
		ObjectMeta: metav1.ObjectMeta{Name: "acme"},
		Status:     v1alpha1.CustomerStatus{Projects: projects, Reservations: reservations},
	}
}

func TestIsSystemNamespace(t *testing.T) {
	for name, want := range map[string]bool{
		"kube-system": true, "kube-public": true, "kube-anything": true, "default": true,
		"customer-operator-system": true,
		"acme-web":                 false, "kube": false, "defaults": false, "my-kube-app": false,
	} {
		if got := IsSystemNamespace(name, "customer-operator-system"); got != want {
			t.Errorf("IsSystemNamespace(%q) = %v, want %v", name, got, want)
		}
	}
	if IsSystemNamespace("anything", "") {
		t.Error("an empty operator namespace must not match every name")
	}
}

func TestLiveProjects(t *testing.T) {
	g := NewWithT(t)
	deleting := metav1.NewTime(t0)
	got := LiveProjects([]corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "acme-web", ResourceVersion: "7"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "acme-old", DeletionTimestamp: &deleting}},
		{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ops"}},
	}, "ops")
	g.Expect(got).To(Equal(Projects{"acme-web": "7"}))
	g.Expect(got.Names()).To(Equal([]string{"acme-web"}))
}

func TestLimitFor(t *testing.T) {
	deleting := metav1.NewTime(t0)
	tests := []struct {
		name   string
		quota  *v1alpha1.CustomerQuota
		want   Limit
		source string
	}{
		{"no quota", nil, Limit{Max: 10}, "default quota"},
		{"quota", &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "acme"},
			Spec: v1alpha1.CustomerQuotaSpec{MaxProjects: ptr.To[int32](3)}}, Limit{Max: 3, Quota: "acme"}, `CustomerQuota "acme"`},
		{"zero", &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "acme"},
			Spec: v1alpha1.CustomerQuotaSpec{MaxProjects: ptr.To[int32](0)}}, Limit{Max: 0, Quota: "acme"}, `CustomerQuota "acme"`},
		{"quota being deleted counts as absent", &v1alpha1.CustomerQuota{ObjectMeta: metav1.ObjectMeta{Name: "acme", DeletionTimestamp: &deleting},
			Spec: v1alpha1.CustomerQuotaSpec{MaxProjects: ptr.To[int32](3)}}, Limit{Max: 10}, "default quota"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			got := LimitFor(tt.quota, 10)
			g.Expect(got).To(Equal(tt.want))
			g.Expect(got.Source()).To(Equal(tt.source))
		})
	}
}

func TestOverQuotaMessage(t *testing.T) {
	g := NewWithT(t)
	g.Expect(OverQuotaMessage("acme", 5, Limit{Max: 5, Quota: "acme"})).To(Equal(
		`customer "acme" has 5 of 5 projects (CustomerQuota "acme"); ask your partner to raise spec.maxProjects`))
	g.Expect(OverQuotaMessage("acme", 10, Limit{Max: 10})).To(Equal(
		`customer "acme" has 10 of 10 projects (default quota); ask your partner to raise spec.maxProjects`))
}

func TestExpiresAtRoundsUpToWholeSeconds(t *testing.T) {
	g := NewWithT(t)
	g.Expect(ExpiresAt(t0, 60*time.Second).Time).To(Equal(t0.Add(60 * time.Second)))
	g.Expect(ExpiresAt(t0.Add(1*time.Millisecond), 60*time.Second).Time).To(Equal(t0.Add(61 * time.Second)))
	g.Expect(ExpiresAt(t0.Add(999*time.Millisecond), 60*time.Second).Time).To(Equal(t0.Add(61 * time.Second)))
}

func TestPendingAndNextExpiry(t *testing.T) {
	reservations := []v1alpha1.ProjectReservation{
		reservation("landed", t0.Add(time.Minute)),
		reservation("lapsed", t0),
		reservation("waiting", t0.Add(30*time.Second)),
		reservation("later", t0.Add(50*time.Second)),
		reservation("terminating-namesake", t0.Add(40*time.Second)),
	}
	// "terminating-namesake" exists but is being deleted: not live, so its
	// reservation still holds (a create admitted for the name may land later).
	live := projects("landed")
	tests := []struct {
		name string
		now  time.Time
		want []string
		next time.Duration
	}{
		{"at t0", t0, []string{"waiting", "later", "terminating-namesake"}, 30 * time.Second},
		{"after the first expiry", t0.Add(35 * time.Second), []string{"later", "terminating-namesake"}, 5 * time.Second},
		{"after all", t0.Add(time.Hour), nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			pending := Pending(reservations, live, tt.now)
			var names []string
			for _, r := range pending {
				names = append(names, r.Namespace)
			}
			g.Expect(names).To(Equal(tt.want))
			g.Expect(NextExpiry(pending, tt.now)).To(Equal(tt.next))
		})
	}
}

func TestTallyUsed(t *testing.T) {
	tests := []struct {
		name     string
		customer *v1alpha1.Customer
		live     []string
		want     int32
	}{
		{"nothing", customerWith(0), nil, 0},
		{"cache ahead of the controller", customerWith(1), []string{"a", "b"}, 2},
		{"cache behind the controller (released into status.projects)", customerWith(3), []string{"a"}, 3},
		{"pending reservations count", customerWith(1, reservation("b", t0.Add(time.Minute))), []string{"a"}, 2},
		{"a reservation whose namespace is live counts once",
			customerWith(1, reservation("a", t0.Add(time.Minute))), []string{"a"}, 1},
		{"expired reservations do not count", customerWith(1, reservation("b", t0)), []string{"a"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(NewTally(tt.customer, projects(tt.live...), t0).Used()).To(Equal(tt.want))
		})
	}
}

func TestTallyAdmit(t *testing.T) {
	limit := Limit{Max: 2, Quota: "acme"}
	soon, later := metav1.NewTime(t0.Add(10*time.Second)), metav1.NewTime(t0.Add(60*time.Second))
	tests := []struct {
		name         string
		customer     *v1alpha1.Customer
		live         []string
		namespace    string
		want         Outcome
		used         int32
		changed      bool
		reservations []v1alpha1.ProjectReservation
	}{
		{"free slot: reserved", customerWith(1), []string{"a"}, "b", Reserved, 1, true,
			[]v1alpha1.ProjectReservation{reservation("b", later.Time)}},
		{"full: over quota", customerWith(2), []string{"a", "b"}, "c", OverQuota, 2, false, nil},
		{"full with a reservation: over quota",
			customerWith(1, reservation("b", soon.Time)), []string{"a"}, "c", OverQuota, 2, false,
			[]v1alpha1.ProjectReservation{reservation("b", soon.Time)}},
		{"re-create of a live project: already counted, even when full", customerWith(2), []string{"a", "b"}, "a",
			AlreadyCounted, 2, false, nil},
		{"same name again: one slot, extended", customerWith(1, reservation("b", soon.Time)), []string{"a"}, "b",
			AlreadyReserved, 2, true, []v1alpha1.ProjectReservation{reservation("b", later.Time)}},
		{"same name again, later deadline already: unchanged", customerWith(1, reservation("b", t0.Add(time.Hour))), []string{"a"}, "b",
			AlreadyReserved, 2, false, []v1alpha1.ProjectReservation{reservation("b", t0.Add(time.Hour))}},
		{"an expired reservation frees its slot and is dropped",
			customerWith(1, reservation("x", t0)), []string{"a"}, "b", Reserved, 1, true,
			[]v1alpha1.ProjectReservation{reservation("b", later.Time)}},
		{"over quota after the quota was lowered", customerWith(3), []string{"a", "b", "c"}, "d", OverQuota, 3, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			tally := NewTally(tt.customer, projects(tt.live...), t0)
			d := tally.Admit(Slot{Namespace: tt.namespace}, limit, later)
			g.Expect(d.Outcome).To(Equal(tt.want))
			g.Expect(d.Used).To(Equal(tt.used))
			g.Expect(d.Allowed()).To(Equal(tt.want != OverQuota))
			g.Expect(tally.Changed()).To(Equal(tt.changed))
			g.Expect(tally.Reservations()).To(Equal(tt.reservations))
		})
	}
}

// A namespace labelled into the customer by an UPDATE while this cache still shows
// it from an earlier time in the customer (its label was removed or moved away,
// and is being put back; the cache has not seen the removal yet): the cached copy
// is older than the request's old object, so it neither makes the namespace
// "already counted" nor, later, releases the slot reserved for it.
func TestRelabelAgainstAStaleCache(t *testing.T) {
	limit := Limit{Max: 2, Quota: "acme"}
	expires := metav1.NewTime(t0.Add(time.Minute))
	relabel := Slot{Namespace: "a", After: "12"} // the old object, unlabelled, is at 12
	t.Run("the stale copy does not count the namespace", func(t *testing.T) {
		g := NewWithT(t)
		// The cache shows a at 10, from before the label was removed at 12; b is new.
		tally := NewTally(customerWith(1), projects("a"), t0)
		d := tally.Admit(relabel, limit, expires)
		g.Expect(d.Outcome).To(Equal(Reserved), "a slot for a, which is in no term of the count now")
		g.Expect(tally.Reservations()).To(Equal([]v1alpha1.ProjectReservation{
			{Namespace: "a", ExpiresAt: expires, AfterResourceVersion: "12"}}))
		// Until the cache has caught up, a counts twice: on the safe side.
		g.Expect(tally.Used()).To(Equal(int32(2)))
		g.Expect(tally.Admit(Slot{Namespace: "b"}, limit, expires).Outcome).To(Equal(OverQuota))
	})
	t.Run("a copy newer than the old object counts it", func(t *testing.T) {
		g := NewWithT(t)
		tally := NewTally(customerWith(1), Projects{"a": "13"}, t0)
		g.Expect(tally.Admit(relabel, limit, expires).Outcome).To(Equal(AlreadyCounted))
		g.Expect(tally.Changed()).To(BeFalse())
	})
	t.Run("the reservation is released only by a newer copy", func(t *testing.T) {
		g := NewWithT(t)
		held := []v1alpha1.ProjectReservation{{Namespace: "a", ExpiresAt: expires, AfterResourceVersion: "12"}}
		g.Expect(Pending(held, Projects{"a": "10"}, t0)).To(Equal(held), "the stale copy")
		g.Expect(Pending(held, Projects{"a": "12"}, t0)).To(Equal(held), "the old object itself")
		g.Expect(Pending(held, Projects{}, t0)).To(Equal(held), "the removal seen")
		g.Expect(Pending(held, Projects{"a": "13"}, t0)).To(BeEmpty(), "the relabel seen")
		g.Expect(Pending(held, Projects{"a": "not-a-version"}, t0)).To(Equal(held), "incomparable: held until it lapses")
	})
	t.Run("the same namespace relabelled again waits for the later update", func(t *testing.T) {
		g := NewWithT(t)
		created := reservation("a", t0.Add(30*time.Second)) // a create of a, admitted earlier
		tally := NewTally(customerWith(0, created), Projects{}, t0)
		g.Expect(tally.Admit(relabel, limit, expires).Outcome).To(Equal(AlreadyReserved))
		g.Expect(tally.Reservations()).To(Equal([]v1alpha1.ProjectReservation{
			{Namespace: "a", ExpiresAt: expires, AfterResourceVersion: "12"}}))
		g.Expect(tally.Admit(Slot{Namespace: "a", After: "11"}, limit, expires).Outcome).To(Equal(AlreadyReserved))
		g.Expect(tally.Reservations()[0].AfterResourceVersion).To(Equal("12"), "an older version does not replace a newer one")
	})
}

func TestTallyAdmitsExactlyTheFreeSlots(t *testing.T) {
	g := NewWithT(t)
	tally := NewTally(customerWith(3), projects("a", "b", "c"), t0)
	admitted := 0
	for i := range 20 {
		if tally.Admit(Slot{Namespace: string(rune('d' + i))}, Limit{Max: 10}, metav1.NewTime(t0.Add(time.Minute))).Allowed() {
			admitted++
		}
	}
	g.Expect(admitted).To(Equal(7))
	g.Expect(tally.Used()).To(Equal(int32(10)))
}

func TestTallyRefusesPastMaxReservations(t *testing.T) {
	g := NewWithT(t)
	var reservations []v1alpha1.ProjectReservation
	for i := range MaxReservations {
		reservations = append(reservations, reservation(string(rune(0x4e00+i)), t0.Add(time.Minute)))
	}
	d := NewTally(customerWith(0, reservations...), Projects{}, t0).Admit(Slot{Namespace: "one-more"}, Limit{Max: 5000}, metav1.NewTime(t0.Add(time.Minute)))
	g.Expect(d.Outcome).To(Equal(TooManyPending))
	g.Expect(d.Message()).To(ContainSubstring("retry"))
}

func TestDecisionMessages(t *testing.T) {
	g := NewWithT(t)
	g.Expect(Decision{Outcome: CustomerNotFound, Customer: "nope"}.Message()).To(Equal(
		`customer "nope" does not exist (label customers.partnerops.io/customer): create the Customer first`))
	g.Expect(Decision{Outcome: CustomerDeleting, Customer: "acme"}.Message()).To(Equal(
		`customer "acme" is being deleted and takes no new projects`))
	g.Expect(Decision{Outcome: OverQuota, Customer: "acme", Used: 5, Limit: Limit{Max: 5, Quota: "acme"}}.Message()).To(Equal(
		`customer "acme" has 5 of 5 projects (CustomerQuota "acme"); ask your partner to raise spec.maxProjects`))
	g.Expect(Decision{Outcome: Reserved}.Message()).To(BeEmpty())
}
