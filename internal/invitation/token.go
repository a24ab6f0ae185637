// Package invitation makes and checks the capability tokens of invitation links
// (`<--portal-url>/invitations/<token>`) and keeps the key they are signed with.
//
// # Token format
//
// A token is the unpadded base64url encoding (RFC 4648 §5) of
//
//	format (1 byte) ‖ round (4 bytes, big-endian) ‖ mac (32 bytes) ‖ uid ‖ name
//
// where mac = HMAC-SHA256(key, "customer-operator/invitation/v2\x00" ‖ round ‖ uid ‖
// "\x00" ‖ name) over the membership's UID and name as strings. The uid is stored
// as the 16 bytes of the UUID when the UID is a canonical UUID (format 3, what the
// API server assigns), else as one length byte and its raw bytes (format 4; at most
// MaxUIDLen bytes). The name (a DNS subdomain, at most MaxNameLen bytes) is the
// rest. A token of a real membership named "acme-alice" is 63 bytes, 84 characters.
//
// Why this shape:
//   - Deterministic: the same key, membership and round always give the same
//     token, so a mail re-sent after a crash carries the same link, and nothing
//     secret has to be stored. Tokens never go into status or logs.
//   - 256 bits of MAC: guessing a valid token is hopeless, and hmac.Equal keeps the
//     comparison constant-time. The MAC is checked before anything is looked up,
//     so a forged link learns nothing about which memberships exist.
//   - The name travels in clear, so the portal gets the membership by its key from
//     the manager's cache: no index on UIDs (one map per membership in the cache,
//     ~7 MB at 20,000 memberships; docs/benchmarks.md). The UID is signed and
//     compared with the object's: a membership deleted and created again under the
//     same name has a new UID, and the old links do not open it.
//   - The UID and name are not secret (anyone who may read the object sees them);
//     the MAC is what proves the link was issued by the operator.
//   - The round is signed: a new round (the resend-invitation annotation) kills the
//     old link without any revocation list. Single use and expiry are enforced by the
//     portal against the membership's status, not by the token.
//
// Formats 1 and 2 (v1: the UID without the name, found through a UID index) are no
// longer accepted.
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
	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	// PathPrefix is the portal path under which invitation links live.
	PathPrefix = "/invitations/"

	// MinKeyLen is the shortest HMAC key accepted: 256 bits.
	MinKeyLen = 32

	// MaxUIDLen bounds the UID carried in a token (Kubernetes UIDs are 36 characters).
	MaxUIDLen = 128

	// MaxNameLen bounds the membership name carried in a token: a DNS subdomain.
	MaxNameLen = validation.DNS1123SubdomainMaxLength

	// MaxTokenLen is the longest token Parse looks at; anything longer is rejected
	// before decoding.
	MaxTokenLen = ((headerLen+1+MaxUIDLen+MaxNameLen)*4 + 2) / 3

	formatUUID byte = 3
	formatRaw  byte = 4

	roundLen  = 4
	macLen    = sha256.Size
	headerLen = 1 + roundLen + macLen

	macDomain = "customer-operator/invitation/v2\x00"
)

// ErrMalformed is returned by Parse for anything that is not a well-formed token.
var ErrMalformed = errors.New("malformed invitation token")

// encoding is strict so that every token has exactly one spelling.
var encoding = base64.RawURLEncoding.Strict()

// Claim is what a token says: which membership, in which invitation round.
type Claim struct {
	// Name and UID are the membership's.
	Name string
	UID  types.UID
	// Round is the invitation round (status.invitation.round) the link was sent in.
	Round int32
}

// Token returns the invitation token of the claim. It is deterministic: same
// inputs, same token. (A UID longer than MaxUIDLen or with characters outside
// printable ASCII, or a name that is not a DNS subdomain, gives a token that Open
// rejects: Parse refuses it, or, for a UID of 256 bytes or more whose length byte
// wraps, reads another claim than the MAC was made for. The API server's
// memberships never do.)
func Token(key []byte, c Claim) string {
	format, uidBytes := encodeUID(c.UID)
	buf := make([]byte, 0, headerLen+len(uidBytes)+len(c.Name))
	buf = append(buf, format)
	buf = binary.BigEndian.AppendUint32(buf, uint32(c.Round))
	buf = append(buf, computeMAC(key, c)...)
	buf = append(buf, uidBytes...)
	buf = append(buf, c.Name...)
	return encoding.EncodeToString(buf)
}

// Parse splits a token into the claim it makes and its MAC, without checking the
// MAC: use Verify (or Open) for that. It rejects anything malformed, including
// rounds below 1 and names that are not DNS subdomains.
func Parse(token string) (c Claim, mac []byte, err error) {
	if token == "" || len(token) > MaxTokenLen || !base64URLAlphabet(token) {
		return Claim{}, nil, ErrMalformed
	}
	raw, err := encoding.DecodeString(token)
	if err != nil || len(raw) <= headerLen {
		return Claim{}, nil, ErrMalformed
	}
	c.Round = int32(binary.BigEndian.Uint32(raw[1 : 1+roundLen]))
	if c.Round < 1 {
		return Claim{}, nil, ErrMalformed
	}
	uid, name, ok := decodeUID(raw[0], raw[headerLen:])
	if !ok || len(name) > MaxNameLen || len(validation.IsDNS1123Subdomain(string(name))) > 0 {
		return Claim{}, nil, ErrMalformed
	}
	c.UID, c.Name = uid, string(name)
	return c, raw[1+roundLen : headerLen], nil
}

// Verify reports whether token is the valid token of claim c under key.
func Verify(key []byte, token string, c Claim) bool {
	got, mac, err := Parse(token)
	if err != nil || got != c {
		return false
	}
	return hmac.Equal(mac, computeMAC(key, c))
}

// Open parses token and checks its MAC under key, returning the claim it was
// issued for. It is what the portal calls with the token from the URL.
func Open(key []byte, token string) (Claim, error) {
	c, mac, err := Parse(token)
	if err != nil {
		return Claim{}, err
	}
	if !hmac.Equal(mac, computeMAC(key, c)) {
		return Claim{}, ErrMalformed
	}
	return c, nil
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

func computeMAC(key []byte, c Claim) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(macDomain))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(c.Round)))
	h.Write([]byte(c.UID))
	h.Write([]byte{0}) // UIDs are printable ASCII: the separator is unambiguous
	h.Write([]byte(c.Name))
	return h.Sum(nil)
}

// encodeUID stores a canonical UUID in its 16 binary bytes, anything else as a
// length byte and its raw bytes. Only an exact round trip qualifies as canonical,
// so decodeUID always gives back the very string the MAC was computed over.
func encodeUID(uid types.UID) (byte, []byte) {
	if id, err := uuid.Parse(string(uid)); err == nil && id.String() == string(uid) {
		return formatUUID, id[:]
	}
	return formatRaw, append([]byte{byte(len(uid))}, uid...)
}

// decodeUID reads the UID of the format from the start of b and returns it with
// the rest of b (the name).
func decodeUID(format byte, b []byte) (types.UID, []byte, bool) {
	switch format {
	case formatUUID:
		if len(b) < len(uuid.UUID{}) {
			return "", nil, false
		}
		id, err := uuid.FromBytes(b[:len(uuid.UUID{})])
		if err != nil {
			return "", nil, false
		}
		return types.UID(id.String()), b[len(uuid.UUID{}):], true
	case formatRaw:
		if len(b) < 1 {
			return "", nil, false
		}
		n := int(b[0])
		if n == 0 || n > MaxUIDLen || len(b) < 1+n || !printableASCII(b[1:1+n]) {
			return "", nil, false
		}
		uid := types.UID(b[1 : 1+n])
		if f, _ := encodeUID(uid); f != formatRaw {
			// A canonical UUID must use format 3, so that every UID has exactly one token.
			return "", nil, false
		}
		return uid, b[1+n:], true
	}
	return "", nil, false
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
