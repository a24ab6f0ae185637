package plugin

import (
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// deniedMarker is how kube-apiserver words a refusal by an admission webhook or
// policy: "admission webhook \"...\" denied the request: <reason>".
const deniedMarker = "denied the request: "

// isAdmissionDenial reports whether err is a refusal by admission (the operator's
// webhooks or a ValidatingAdmissionPolicy), as opposed to RBAC.
func isAdmissionDenial(err error) bool {
	return strings.Contains(err.Error(), deniedMarker) || strings.Contains(err.Error(), "ValidatingAdmissionPolicy")
}

// admissionReason is the reason of an admission denial, without the webhook's name
// and the `<resource> "<name>" is forbidden: ` preamble the user already knows.
func admissionReason(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, deniedMarker); i >= 0 {
		msg = msg[i+len(deniedMarker):]
	}
	if i := strings.Index(msg, forbiddenMarker); i >= 0 {
		msg = msg[i+len(forbiddenMarker):]
	}
	return msg
}

const forbiddenMarker = " is forbidden: "

// explain turns an API error into what the user can act on. what says what was
// attempted ("acknowledge CustomerMessage \"x\""); hint says whom to ask.
func explain(err error, who, what, hint string) error {
	if err == nil {
		return nil
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return err
	}
	switch {
	case apierrors.IsForbidden(err) && isAdmissionDenial(err):
		return fmt.Errorf("cannot %s: %s", what, admissionReason(err))
	case apierrors.IsForbidden(err):
		return fmt.Errorf("cannot %s: %s may not do that (RBAC); %s", what, who, hint)
	case apierrors.IsInvalid(err):
		return fmt.Errorf("cannot %s: %s", what, admissionReason(err))
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("cannot %s: your credentials were not accepted (check your kubeconfig): %w", what, err)
	}
	return fmt.Errorf("cannot %s: %w", what, err)
}
