package operator

import (
	"strings"
	"testing"
	"unicode/utf8"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
)

// Notes beyond the API server's 1 kB are cut, not lost; shorter ones pass as they are.
func TestBoundedRecorder(t *testing.T) {
	g := NewWithT(t)
	fake := events.NewFakeRecorder(3)
	r := boundedRecorder{fake}

	r.Eventf(nil, nil, corev1.EventTypeNormal, "Sent", "Invite", "sent to %d recipient(s)", 3)
	g.Expect(<-fake.Events).To(Equal("Normal Sent sent to 3 recipient(s)"))

	projects := strings.Repeat("projekt-ä-", 200) // 2,200 bytes, 2-byte characters among them
	r.Eventf(nil, nil, corev1.EventTypeWarning, "HasProjects", "Delete", "waiting for projects: %s", projects)
	got := strings.TrimPrefix(<-fake.Events, "Warning HasProjects ")
	g.Expect(len(got)).To(BeNumerically("<=", maxEventNote))
	g.Expect(len(got)).To(BeNumerically(">", maxEventNote-4), "cut at the limit, not far before")
	g.Expect(utf8.ValidString(got)).To(BeTrue(), "cut at a character boundary")
	g.Expect(got).To(HavePrefix("waiting for projects: projekt-ä-"))
	g.Expect(got).To(HaveSuffix("…"))

	r.Eventf(nil, nil, corev1.EventTypeNormal, "Odd", "Test", "100%% sure: %s", "yes")
	g.Expect(<-fake.Events).To(Equal("Normal Odd 100% sure: yes"), "the format is applied once")
}
