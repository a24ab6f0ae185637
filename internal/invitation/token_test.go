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
)

func TestTokenRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		uid     types.UID
		round   int32
		wantLen int
	}{
		{name: "API server UUID", uid: testUID, round: 1, wantLen: 71},
		{name: "large round", uid: testUID, round: 1<<31 - 1, wantLen: 71},
		{name: "non-UUID UID (fake clients)", uid: "membership-1", round: 2},
		{name: "upper-case UUID stays raw, so its exact spelling survives", uid: "6F1C2F0E-3B4A-4C1D-9E8F-0A1B2C3D4E5F", round: 1},
		{name: "UUID without dashes stays raw", uid: "6f1c2f0e3b4a4c1d9e8f0a1b2c3d4e5f", round: 1},
		{name: "longest UID", uid: types.UID(strings.Repeat("u", MaxUIDLen)), round: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			token := Token(testKey, tt.uid, tt.round)

			g.Expect(Token(testKey, tt.uid, tt.round)).To(Equal(token), "deterministic: a re-sent mail has the same link")
			if tt.wantLen != 0 {
				g.Expect(token).To(HaveLen(tt.wantLen))
			}
			g.Expect(token).To(MatchRegexp(`^[A-Za-z0-9_-]+$`), "URL-safe without escaping")

			uid, round, mac, err := Parse(token)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(uid).To(Equal(tt.uid))
			g.Expect(round).To(Equal(tt.round))
			g.Expect(len(mac) * 8).To(BeNumerically(">=", 256))

			g.Expect(Verify(testKey, token, tt.uid, tt.round)).To(BeTrue())
			uid, round, err = Open(testKey, token)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(uid).To(Equal(tt.uid))
			g.Expect(round).To(Equal(tt.round))
		})
	}
}

func TestTokenDiffers(t *testing.T) {
	g := NewWithT(t)
	base := Token(testKey, testUID, testRound)
	g.Expect(Token(otherKey, testUID, testRound)).NotTo(Equal(base))
	g.Expect(Token(testKey, otherUID, testRound)).NotTo(Equal(base))
	g.Expect(Token(testKey, testUID, testRound+1)).NotTo(Equal(base), "a new round kills the old link")
}

func TestVerifyRejects(t *testing.T) {
	token := Token(testKey, testUID, testRound)
	tests := []struct {
		name  string
		key   []byte
		token string
		uid   types.UID
		round int32
	}{
		{name: "wrong key", key: otherKey, token: token, uid: testUID, round: testRound},
		{name: "wrong round", key: testKey, token: token, uid: testUID, round: testRound + 1},
		{name: "older round", key: testKey, token: token, uid: testUID, round: testRound - 1},
		{name: "wrong uid", key: testKey, token: token, uid: otherUID, round: testRound},
		{name: "token of another membership", key: testKey, token: Token(testKey, otherUID, testRound), uid: testUID, round: testRound},
		{name: "empty", key: testKey, token: "", uid: testUID, round: testRound},
		{name: "truncated", key: testKey, token: token[:len(token)-1], uid: testUID, round: testRound},
		{name: "extended", key: testKey, token: token + "A", uid: testUID, round: testRound},
		{name: "padded", key: testKey, token: token + "=", uid: testUID, round: testRound},
		{name: "standard base64 alphabet", key: testKey, token: strings.NewReplacer("-", "+", "_", "/").Replace(token) + "+/", uid: testUID, round: testRound},
		{name: "line break inside (the decoder would skip it)", key: testKey, token: token[:10] + "\r\n" + token[10:], uid: testUID, round: testRound},
		{name: "not base64", key: testKey, token: "this is not a token!", uid: testUID, round: testRound},
		{name: "too long", key: testKey, token: strings.Repeat("A", MaxTokenLen+1), uid: testUID, round: testRound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			g.Expect(Verify(tt.key, tt.token, tt.uid, tt.round)).To(BeFalse())
		})
	}
}

func TestOpenRejectsEveryFlippedBit(t *testing.T) {
	g := NewWithT(t)
	raw, err := base64.RawURLEncoding.DecodeString(Token(testKey, testUID, testRound))
	g.Expect(err).NotTo(HaveOccurred())
	for i := range len(raw) * 8 {
		tampered := bytes.Clone(raw)
		tampered[i/8] ^= 1 << (i % 8)
		_, _, err := Open(testKey, base64.RawURLEncoding.EncodeToString(tampered))
		g.Expect(err).To(MatchError(ErrMalformed), "bit %d", i)
	}
}

func TestOpenRejectsEveryTruncation(t *testing.T) {
	g := NewWithT(t)
	token := Token(testKey, testUID, testRound)
	for n := range len(token) {
		_, _, err := Open(testKey, token[:n])
		g.Expect(err).To(HaveOccurred(), "prefix of length %d", n)
	}
}

func TestParseRejects(t *testing.T) {
	header := func(format byte, round uint32) []byte {
		b := []byte{format, byte(round >> 24), byte(round >> 16), byte(round >> 8), byte(round)}
		return append(b, make([]byte, macLen)...)
	}
	enc := base64.RawURLEncoding.EncodeToString
	tests := []struct {
		name  string
		token string
	}{
		{name: "empty", token: ""},
		{name: "non-base64", token: "%%%"},
		{name: "header only", token: enc(header(formatRaw, 1))},
		{name: "round 0", token: enc(append(header(formatRaw, 0), "uid"...))},
		{name: "negative round", token: enc(append(header(formatRaw, 1<<31), "uid"...))},
		{name: "unknown format", token: enc(append(header(9, 1), "uid"...))},
		{name: "UUID format with 15 bytes", token: enc(append(header(formatUUID, 1), make([]byte, 15)...))},
		{name: "raw UID with a space", token: enc(append(header(formatRaw, 1), "a b"...))},
		{name: "raw UID with a newline (log injection)", token: enc(append(header(formatRaw, 1), "a\nb"...))},
		{name: "raw UID that is a canonical UUID", token: enc(append(header(formatRaw, 1), testUID...))},
		{name: "raw UID too long", token: enc(append(header(formatRaw, 1), strings.Repeat("u", MaxUIDLen+1)...))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			_, _, _, err := Parse(tt.token)
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
	f.Add(Token(testKey, testUID, 1))
	f.Add(Token(testKey, "membership-1", 7))
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, token string) {
		uid, round, mac, err := Parse(token)
		if err != nil {
			return
		}
		if round < 1 || len(mac) != macLen || len(uid) == 0 {
			t.Fatalf("Parse(%q) = %q, %d, %x: invalid result without error", token, uid, round, mac)
		}
		format, uidBytes := encodeUID(uid)
		again := append([]byte{format}, byte(round>>24), byte(round>>16), byte(round>>8), byte(round))
		again = append(append(again, mac...), uidBytes...)
		if got := base64.RawURLEncoding.EncodeToString(again); got != token {
			t.Fatalf("token %q re-encodes as %q: more than one spelling", token, got)
		}
		if _, _, err := Open(testKey, token); (err == nil) != (token == Token(testKey, uid, round)) {
			t.Fatalf("Open(%q) = %v, but Token gives %q", token, err, Token(testKey, uid, round))
		}
	})
}
