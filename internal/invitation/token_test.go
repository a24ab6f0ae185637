package invitation

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
)

var (
	testKey   = bytes.Repeat([]byte{0x42}, MinKeyLen)
	otherKey  = bytes.Repeat([]byte{0x43}, MinKeyLen)
	testUID   = types.UID("6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e5f")
	otherUID  = types.UID("6f1c2f0e-3b4a-4c1d-9e8f-0a1b2c3d4e60")
	testRound = int32(3)
	testClaim = Claim{Name: "acme-alice", UID: testUID, Round: testRound}
)

func TestTokenRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		claim   Claim
		wantLen int
	}{
		{name: "API server UUID", claim: Claim{Name: "acme-alice", UID: testUID, Round: 1}, wantLen: 84},
		{name: "large round", claim: Claim{Name: "acme-alice", UID: testUID, Round: 1<<31 - 1}, wantLen: 84},
		{name: "non-UUID UID (fake clients)", claim: Claim{Name: "m1", UID: "membership-1", Round: 2}},
		{name: "upper-case UUID stays raw, so its exact spelling survives", claim: Claim{Name: "m", UID: "6F1C2F0E-3B4A-4C1D-9E8F-0A1B2C3D4E5F", Round: 1}},
		{name: "UUID without dashes stays raw", claim: Claim{Name: "m", UID: "6f1c2f0e3b4a4c1d9e8f0a1b2c3d4e5f", Round: 1}},
		{name: "longest UID", claim: Claim{Name: "m", UID: types.UID(strings.Repeat("u", MaxUIDLen)), Round: 1}},
		{name: "dotted name", claim: Claim{Name: "acme.alice.example.com", UID: testUID, Round: 1}},
		{name: "longest UID and name", claim: Claim{Name: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61), UID: types.UID(strings.Repeat("u", MaxUIDLen)), Round: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			token := Token(testKey, tt.claim)

			g.Expect(Token(testKey, tt.claim)).To(Equal(token), "deterministic: a re-sent mail has the same link")
			if tt.wantLen != 0 {
				g.Expect(token).To(HaveLen(tt.wantLen))
			}
			g.Expect(len(token)).To(BeNumerically("<=", MaxTokenLen))
			g.Expect(token).To(MatchRegexp(`^[A-Za-z0-9_-]+$`), "URL-safe without escaping")

			claim, mac, err := Parse(token)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(claim).To(Equal(tt.claim))
			g.Expect(len(mac) * 8).To(BeNumerically(">=", 256))

			g.Expect(Verify(testKey, token, tt.claim)).To(BeTrue())
			claim, err = Open(testKey, token)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(claim).To(Equal(tt.claim))
		})
	}
}

func TestTokenDiffers(t *testing.T) {
	g := NewWithT(t)
	base := Token(testKey, testClaim)
	with := func(change func(*Claim)) Claim { c := testClaim; change(&c); return c }
	g.Expect(Token(otherKey, testClaim)).NotTo(Equal(base))
	g.Expect(Token(testKey, with(func(c *Claim) { c.UID = otherUID }))).NotTo(Equal(base),
		"a membership created again under the same name has other links")
	g.Expect(Token(testKey, with(func(c *Claim) { c.Name = "acme-bob" }))).NotTo(Equal(base))
	g.Expect(Token(testKey, with(func(c *Claim) { c.Round++ }))).NotTo(Equal(base), "a new round kills the old link")
}

func TestVerifyRejects(t *testing.T) {
	token := Token(testKey, testClaim)
	with := func(change func(*Claim)) Claim { c := testClaim; change(&c); return c }
	tests := []struct {
		name  string
		key   []byte
		token string
		claim Claim
	}{
		{name: "wrong key", key: otherKey, token: token, claim: testClaim},
		{name: "wrong round", key: testKey, token: token, claim: with(func(c *Claim) { c.Round++ })},
		{name: "older round", key: testKey, token: token, claim: with(func(c *Claim) { c.Round-- })},
		{name: "wrong uid", key: testKey, token: token, claim: with(func(c *Claim) { c.UID = otherUID })},
		{name: "wrong name", key: testKey, token: token, claim: with(func(c *Claim) { c.Name = "acme-bob" })},
		{name: "token of another membership", key: testKey, token: Token(testKey, with(func(c *Claim) { c.UID = otherUID })), claim: testClaim},
		{name: "empty", key: testKey, token: "", claim: testClaim},
		{name: "truncated", key: testKey, token: token[:len(token)-1], claim: testClaim},
		{name: "extended", key: testKey, token: token + "A", claim: testClaim},
		{name: "padded", key: testKey, token: token + "=", claim: testClaim},
		{name: "standard base64 alphabet", key: testKey, token: strings.NewReplacer("-", "+", "_", "/").Replace(token) + "+/", claim: testClaim},
		{name: "line break inside (the decoder would skip it)", key: testKey, token: token[:10] + "\r\n" + token[10:], claim: testClaim},
		{name: "not base64", key: testKey, token: "this is not a token!", claim: testClaim},
		{name: "too long", key: testKey, token: strings.Repeat("A", MaxTokenLen+1), claim: testClaim},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(Verify(tt.key, tt.token, tt.claim)).To(BeFalse())
		})
	}
}

func TestOpenRejectsEveryFlippedBit(t *testing.T) {
	g := NewWithT(t)
	raw, err := base64.RawURLEncoding.DecodeString(Token(testKey, testClaim))
	g.Expect(err).NotTo(HaveOccurred())
	for i := range len(raw) * 8 {
		tampered := bytes.Clone(raw)
		tampered[i/8] ^= 1 << (i % 8)
		_, err := Open(testKey, base64.RawURLEncoding.EncodeToString(tampered))
		g.Expect(err).To(MatchError(ErrMalformed), "bit %d", i)
	}
}

func TestOpenRejectsEveryTruncation(t *testing.T) {
	g := NewWithT(t)
	token := Token(testKey, testClaim)
	for n := range len(token) {
		_, err := Open(testKey, token[:n])
		g.Expect(err).To(HaveOccurred(), "prefix of length %d", n)
	}
}

func TestParseRejects(t *testing.T) {
	header := func(format byte, round uint32) []byte {
		b := []byte{format, byte(round >> 24), byte(round >> 16), byte(round >> 8), byte(round)}
		return append(b, make([]byte, macLen)...)
	}
	raw := func(uid, name string) []byte { return append(append([]byte{byte(len(uid))}, uid...), name...) }
	uuidBytes := func(name string) []byte { return append(make([]byte, 16), name...) }
	enc := base64.RawURLEncoding.EncodeToString
	tests := []struct {
		name  string
		token string
	}{
		{name: "empty", token: ""},
		{name: "non-base64", token: "%%%"},
		{name: "header only", token: enc(header(formatRaw, 1))},
		{name: "round 0", token: enc(append(header(formatRaw, 0), raw("uid", "m")...))},
		{name: "negative round", token: enc(append(header(formatRaw, 1<<31), raw("uid", "m")...))},
		{name: "unknown format", token: enc(append(header(9, 1), raw("uid", "m")...))},
		{name: "v1 UUID format (no name)", token: enc(append(header(1, 1), make([]byte, 16)...))},
		{name: "v1 raw format (no name)", token: enc(append(header(2, 1), "uid"...))},
		{name: "UUID format with 15 bytes", token: enc(append(header(formatUUID, 1), make([]byte, 15)...))},
		{name: "UUID without a name", token: enc(append(header(formatUUID, 1), uuidBytes("")...))},
		{name: "raw UID without a name", token: enc(append(header(formatRaw, 1), raw("uid", "")...))},
		{name: "raw UID of length 0", token: enc(append(header(formatRaw, 1), raw("", "m")...))},
		{name: "raw UID longer than the rest", token: enc(append(header(formatRaw, 1), 9, 'u', 'i', 'd'))},
		{name: "raw UID with a space", token: enc(append(header(formatRaw, 1), raw("a b", "m")...))},
		{name: "raw UID with a newline (log injection)", token: enc(append(header(formatRaw, 1), raw("a\nb", "m")...))},
		{name: "raw UID that is a canonical UUID", token: enc(append(header(formatRaw, 1), raw(string(testUID), "m")...))},
		{name: "raw UID too long", token: enc(append(header(formatRaw, 1), raw(strings.Repeat("u", MaxUIDLen+1), "m")...))},
		{name: "name with upper case", token: enc(append(header(formatUUID, 1), uuidBytes("Acme")...))},
		{name: "name with a newline (log injection)", token: enc(append(header(formatUUID, 1), uuidBytes("acme\nalice")...))},
		{name: "name with a slash", token: enc(append(header(formatUUID, 1), uuidBytes("acme/alice")...))},
		{name: "name too long", token: enc(append(header(formatUUID, 1), uuidBytes(strings.Repeat("a", MaxNameLen+1))...))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			_, _, err := Parse(tt.token)
			g.Expect(err).To(MatchError(ErrMalformed))
		})
	}
}

func TestLink(t *testing.T) {
	tests := []struct {
		portalURL string
		want      string
		wantErr   bool
	}{
		{portalURL: "https://portal.example.com", want: "https://portal.example.com/invitations/TOKEN"},
		{portalURL: "https://portal.example.com/", want: "https://portal.example.com/invitations/TOKEN"},
		{portalURL: "https://example.com/customers/", want: "https://example.com/customers/invitations/TOKEN"},
		{portalURL: "http://127.0.0.1:8082", want: "http://127.0.0.1:8082/invitations/TOKEN"},
		{portalURL: "portal.example.com", wantErr: true},
		{portalURL: "javascript:alert(1)", wantErr: true},
		{portalURL: "https://example.com/?a=b", wantErr: true},
		{portalURL: "https://example.com/#x", wantErr: true},
		{portalURL: "https://user:pw@example.com/", wantErr: true},
		{portalURL: "https://exa mple.com/", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.portalURL, func(t *testing.T) {
			g := NewWithT(t)
			got, err := Link(tt.portalURL, "TOKEN")
			if tt.wantErr {
				g.Expect(err).To(HaveOccurred())
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tt.want))
		})
	}
}

func TestUIDPrefix(t *testing.T) {
	g := NewWithT(t)
	g.Expect(UIDPrefix(testUID)).To(Equal("6f1c2f0e"))
	g.Expect(UIDPrefix("abc")).To(Equal("abc"))
}

// FuzzParse checks that Parse never panics, that a parsed token has exactly one
// spelling, and that Open accepts only tokens that Token made.
func FuzzParse(f *testing.F) {
	f.Add(Token(testKey, testClaim))
	f.Add(Token(testKey, Claim{Name: "m1", UID: "membership-1", Round: 7}))
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, token string) {
		claim, mac, err := Parse(token)
		if err != nil {
			return
		}
		if claim.Round < 1 || len(mac) != macLen || len(claim.UID) == 0 || claim.Name == "" {
			t.Fatalf("Parse(%q) = %+v, %x: invalid result without error", token, claim, mac)
		}
		format, uidBytes := encodeUID(claim.UID)
		again := append([]byte{format}, byte(claim.Round>>24), byte(claim.Round>>16), byte(claim.Round>>8), byte(claim.Round))
		again = append(append(append(again, mac...), uidBytes...), claim.Name...)
		if got := base64.RawURLEncoding.EncodeToString(again); got != token {
			t.Fatalf("token %q re-encodes as %q: more than one spelling", token, got)
		}
		if _, err := Open(testKey, token); (err == nil) != (token == Token(testKey, claim)) {
			t.Fatalf("Open(%q) = %v, but Token gives %q", token, err, Token(testKey, claim))
		}
	})
}

func TestOpenRejectsTokensOfUnparseableClaims(t *testing.T) {
	for _, c := range []Claim{
		{Name: "m", UID: types.UID(strings.Repeat("u", MaxUIDLen+1)), Round: 1},
		{Name: "m", UID: types.UID(strings.Repeat("u", 256)), Round: 1},
		{Name: "m", UID: types.UID(strings.Repeat("u", 300)), Round: 1},
		{Name: "Upper", UID: testUID, Round: 1},
	} {
		if _, err := Open(testKey, Token(testKey, c)); err == nil {
			t.Errorf("Open accepted the token of %q/%d-byte UID", c.Name, len(c.UID))
		}
	}
}
