package operator

import (
	"fmt"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// maxEventNote is the most bytes the API server accepts in an event's note.
const maxEventNote = 1024

// boundedRecorder cuts every event's note to what the API server accepts. It
// refuses a longer note, and client-go drops that event without retrying, so the
// events with most to say were lost: the Warning that lists the projects holding
// back a Customer's deletion, or a mail failure quoting a long server reply.
type boundedRecorder struct {
	recorder.EventRecorder
}

func (r boundedRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	r.EventRecorder.Eventf(regarding, related, eventtype, reason, action, "%s", boundNote(fmt.Sprintf(note, args...)))
}

func (r boundedRecorder) AnnotatedEventf(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	r.EventRecorder.AnnotatedEventf(regarding, related, annotations, eventtype, reason, action, "%s", boundNote(fmt.Sprintf(note, args...)))
}

// boundNote cuts s to at most maxEventNote bytes, at a character boundary, ending
// in "…" when it was cut.
func boundNote(s string) string {
	if len(s) <= maxEventNote {
		return s
	}
	const ellipsis = "…"
	cut := maxEventNote - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}
