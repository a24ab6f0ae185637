// Package invitation makes and checks the capability tokens of invitation links
// (`<--portal-url>/invitations/<token>`) and keeps the key they are signed with.
//
// # Token format
//
// A token is the unpadded base64url encoding (RFC 4648 §5) of
//
//	format (1 byte) ‖ round (4 bytes, big-endian) ‖ mac (32 bytes) ‖ uid (the rest)
//
// where mac = HMAC-SHA256(key, "customer-operator/invitation/v1\x00" ‖ round ‖ uid)
// over the membership's UID as a string. The uid is stored as the 16 bytes of the
// UUID when the UID is a canonical UUID (format 1, what the API server assigns),
// else as its raw bytes (format 2; at most MaxUIDLen bytes), so a token of a real
// membership is 53 bytes, 71 characters.
//
// Why this shape:
//   - Deterministic: the same key, UID and round always give the same token, so a
//     mail re-sent after a crash carries the same link, and nothing secret has to be
//     stored. Tokens never go into status or logs.
//   - 256 bits of MAC: guessing a valid token is hopeless, and hmac.Equal keeps the
//     comparison constant-time.
//   - The UID and round travel in clear inside the token, so the portal finds the
//     membership through an index lookup, without listing or trying candidates. The
//     UID is not secret (anyone who may read the object sees it); the MAC is what
//     proves the link was issued by the operator.
//   - The round is signed: a new round (the resend-invitation annotation) kills the
//     old link without any revocation list. Single use and expiry are enforced by the
//     portal against the membership's status, not by the token.
package invitation

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/types"
)

const (
	// PathPrefix is the portal path under which invitation links live.
	PathPrefix = "/invitations/"

	// MinKeyLen is the shortest HMAC key accepted: 256 bits.
	MinKeyLen = 32

	// MaxUIDLen bounds the UID carried in a token (Kubernetes UIDs are 36 characters).
	MaxUIDLen = 128

	// MaxTokenLen is the longest token Parse looks at; anything longer is rejected
	// before decoding.
	MaxTokenLen = ((headerLen+MaxUIDLen)*4 + 2) / 3

	formatUUID byte = 1
	formatRaw  byte = 2

	roundLen  = 4
	macLen    = sha256.Size
	headerLen = 1 + roundLen + macLen

	macDomain = "customer-operator/invitation/v1\x00"
)

// ErrMalformed is returned by Parse for anything that is not a well-formed token.
var ErrMalformed = errors.New("malformed invitation token")

// encoding is strict so that every token has exactly one spelling.
var encoding = base64.RawURLEncoding.Strict()

// Token returns the invitation token of the membership with the given UID in the
// given round. It is deterministic: same inputs, same token. (A UID longer than
// MaxUIDLen or with characters outside printable ASCII gives a token that Parse
// rejects; the API server's UIDs never do.)
func Token(key []byte, uid types.UID, round int32) string {
	format, uidBytes := encodeUID(uid)
	buf := make([]byte, 0, headerLen+len(uidBytes))
	buf = append(buf, format)
	buf = binary.BigEndian.AppendUint32(buf, uint32(round))
	buf = append(buf, computeMAC(key, uid, round)...)
	buf = append(buf, uidBytes...)
	return encoding.EncodeToString(buf)
}

// Parse splits a token into the UID and round it claims and its MAC, without
// checking the MAC: use Verify (or Open) for that. It rejects anything malformed,
// including rounds below 1.
func Parse(token string) (uid types.UID, round int32, mac []byte, err error) {
	if token == "" || len(token) > MaxTokenLen || !base64URLAlphabet(token) {
		return "", 0, nil, ErrMalformed
	}
	raw, err := encoding.DecodeString(token)
	if err != nil || len(raw) <= headerLen {
		return "", 0, nil, ErrMalformed
	}
	round = int32(binary.BigEndian.Uint32(raw[1 : 1+roundLen]))
	if round < 1 {
		return "", 0, nil, ErrMalformed
	}
	uid, ok := decodeUID(raw[0], raw[headerLen:])
	if !ok {
		return "", 0, nil, ErrMalformed
	}
	mac = raw[1+roundLen : headerLen]
	return uid, round, mac, nil
}

// Verify reports whether token is the valid token of (uid, round) under key.
func Verify(key []byte, token string, uid types.UID, round int32) bool {
	gotUID, gotRound, mac, err := Parse(token)
	if err != nil || gotUID != uid || gotRound != round {
		return false
	}
	return hmac.Equal(mac, computeMAC(key, uid, round))
}

// Open parses token and checks its MAC under key, returning the membership UID and
// round it was issued for. It is what the portal calls with the token from the URL.
func Open(key []byte, token string) (types.UID, int32, error) {
	uid, round, mac, err := Parse(token)
	if err != nil {
		return "", 0, err
	}
	if !hmac.Equal(mac, computeMAC(key, uid, round)) {
		return "", 0, ErrMalformed
	}
	return uid, round, nil
}

// Link returns the invitation link for token under the portal's base URL
// (--portal-url), which must be an absolute http(s) URL without query or fragment.
func Link(portalURL, token string) (string, error) {
	base, err := url.Parse(portalURL)
	if err != nil {
		return "", fmt.Errorf("parsing portal URL: %w", err)
	}
	if (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" {
		return "", fmt.Errorf("portal URL %q must be an absolute http(s) URL", portalURL)
	}
	if base.RawQuery != "" || base.Fragment != "" || base.User != nil {
		return "", fmt.Errorf("portal URL %q must not have user info, a query or a fragment", portalURL)
	}
	return strings.TrimSuffix(base.String(), "/") + PathPrefix + token, nil
}

// UIDPrefix shortens a UID for logs and errors: enough to find the object, and a
// reminder that the token itself is never logged.
func UIDPrefix(uid types.UID) string {
	const n = 8
	if len(uid) <= n {
		return string(uid)
	}
	return string(uid[:n])
}

func computeMAC(key []byte, uid types.UID, round int32) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(macDomain))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(round)))
	h.Write([]byte(uid))
	return h.Sum(nil)
}

// encodeUID stores a canonical UUID in its 16 binary bytes, anything else raw. Only
// an exact round trip qualifies as canonical, so decodeUID always gives back the
// very string the MAC was computed over.
func encodeUID(uid types.UID) (byte, []byte) {
	if id, err := uuid.Parse(string(uid)); err == nil && id.String() == string(uid) {
		return formatUUID, id[:]
	}
	return formatRaw, []byte(uid)
}

func decodeUID(format byte, b []byte) (types.UID, bool) {
	switch format {
	case formatUUID:
		id, err := uuid.FromBytes(b)
		if err != nil {
			return "", false
		}
		return types.UID(id.String()), true
	case formatRaw:
		if len(b) > MaxUIDLen || !printableASCII(b) {
			return "", false
		}
		if f, _ := encodeUID(types.UID(b)); f != formatRaw {
			// A canonical UUID must use format 1, so that every UID has exactly one token.
			return "", false
		}
		return types.UID(b), true
	}
	return "", false
}

// base64URLAlphabet reports whether s uses only the base64url alphabet: the decoder
// itself skips CR and LF, which would give one token many spellings.
func base64URLAlphabet(s string) bool {
	for i := range len(s) {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func printableASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}
