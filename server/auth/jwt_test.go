package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// jwtKeys writes an RSA and a P-256 key pair, and an HMAC secret, as PEM
// files in dir; it returns their paths by name.
func jwtKeys(t *testing.T, dir string) map[string]string {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalECPrivateKey(ek)
	pkix := func(k any) []byte { b, _ := x509.MarshalPKIXPublicKey(k); return b }
	files := map[string][]byte{
		"rsa":       pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}),
		"rsa.pub":   pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix(&rk.PublicKey)}),
		"ec":        pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}),
		"ec.pub":    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix(&ek.PublicKey)}),
		"other.pub": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix(&other.PublicKey)}),
		"secret":    []byte("a shared secret"),
	}
	paths := map[string]string{}
	for name, b := range files {
		paths[name] = filepath.Join(dir, name)
		if err := os.WriteFile(paths[name], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

// TestJWTProvider: each sign method mints tokens that it accepts, naming
// the user and revision; tampered, expired, foreign-key and other-method
// tokens are refused; a verify-only provider accepts the signer's tokens
// and mints none; bad options fail with etcd's errors.
func TestJWTProvider(t *testing.T) {
	k := jwtKeys(t, t.TempDir())
	log := slog.Default()
	for _, tc := range []struct{ method, priv, pub string }{
		{"RS256", k["rsa"], k["rsa.pub"]}, {"RS512", k["rsa"], ""}, {"PS384", k["rsa"], k["rsa.pub"]},
		{"ES256", k["ec"], k["ec.pub"]}, {"HS256", k["secret"], ""}, {"HS512", k["secret"], ""},
	} {
		spec := fmt.Sprintf("jwt,priv-key=%s,sign-method=%s,ttl=1m", tc.priv, tc.method)
		if tc.pub != "" {
			spec += ",pub-key=" + tc.pub
		}
		p, err := New(spec, 0, log)
		if err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		j := p.(*jwtTokens)
		tok, err := p.Assign("ignored", 7, "alice", 42)
		if err != nil {
			t.Fatalf("%s: assign: %v", tc.method, err)
		}
		if c, ok := p.Info(tok); !ok || c.Name != "alice" || c.Rev != 42 {
			t.Fatalf("%s: info of its own token: %+v %v", tc.method, c, ok)
		}
		parts := strings.Split(tok, ".")
		tampered := parts[0] + "." + jwtB64.EncodeToString([]byte(`{"exp":9999999999,"revision":42,"username":"root"}`)) + "." + parts[2]
		if _, ok := p.Info(tampered); ok {
			t.Fatalf("%s: a token with a changed payload was accepted", tc.method)
		}
		none := jwtB64.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
		if _, ok := p.Info(none); ok {
			t.Fatalf("%s: an unsigned token was accepted", tc.method)
		}
		j.now = func() time.Time { return time.Now().Add(2 * time.Minute) }
		if _, ok := p.Info(tok); ok {
			t.Fatalf("%s: an expired token was accepted", tc.method)
		}
		j.now = time.Now
		if tc.pub != "" {
			v, err := New(fmt.Sprintf("jwt,pub-key=%s,sign-method=%s", tc.pub, tc.method), 0, log)
			if err != nil {
				t.Fatalf("%s verify-only: %v", tc.method, err)
			}
			if c, ok := v.Info(tok); !ok || c.Name != "alice" {
				t.Fatalf("%s: the verify-only provider refused the signer's token", tc.method)
			}
			if _, err := v.Assign("", 1, "alice", 1); !errors.Is(err, ErrVerifyOnly) {
				t.Fatalf("%s: verify-only assign: %v", tc.method, err)
			}
		}
	}
	// A token of one method is refused by a provider of another.
	hs, _ := New("jwt,priv-key="+k["secret"]+",sign-method=HS256", 0, log)
	hs384, _ := New("jwt,priv-key="+k["secret"]+",sign-method=HS384", 0, log)
	tok, _ := hs.Assign("", 1, "alice", 1)
	if _, ok := hs384.Info(tok); ok {
		t.Fatal("an HS256 token was accepted by an HS384 provider")
	}
	ec, _ := New("jwt,priv-key="+k["ec"]+",sign-method=ES256", 0, log)
	tok, _ = ec.Assign("", 1, "alice", 1)
	foreign, _ := New("jwt,pub-key="+k["other.pub"]+",sign-method=ES256", 0, log)
	if _, ok := foreign.Info(tok); ok {
		t.Fatal("a token was accepted under another key")
	}

	for _, tc := range []struct {
		spec string
		want error
		text string
	}{
		{"jwt,priv-key=" + k["rsa"] + ",sign-method=XX256", errInvalidAuthMethod, ""},
		{"jwt,priv-key=" + k["rsa"], errInvalidAuthMethod, ""},
		{"jwt,sign-method=RS256", errMissingKey, ""},
		{"jwt,sign-method=HS256,pub-key=" + k["rsa.pub"], errMissingKey, ""},
		{"jwt,priv-key=" + k["rsa"] + ",pub-key=" + k["ec.pub"] + ",sign-method=RS256", errKeyMismatch, ""},
		{"jwt,priv-key=" + k["rsa"] + ",sign-method=RS256,ttl=soon", errInvalidAuthOpts, ""},
		{"jwt,priv-key=" + k["ec"] + ",sign-method=RS256", nil, "needs an RSA key"},
		{"jwt,priv-key=" + k["ec"] + ",sign-method=ES384", nil, "needs a P-384 key"},
		{"jwt,priv-key=" + k["secret"] + ",sign-method=RS256", nil, "priv-key"},
		{"jwt,priv-key=/no/such/file,sign-method=RS256", nil, "no such file"},
		{"bearer", nil, `unknown token type "bearer"`},
	} {
		_, err := New(tc.spec, 0, log)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) || tc.text != "" && !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%q: error %v, want %v %q", tc.spec, err, tc.want, tc.text)
		}
	}
}
