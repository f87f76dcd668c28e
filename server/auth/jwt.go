package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha256" // the hashes of the sign methods
	_ "crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"strings"
	"time"
)

// Auth token providers: etcd's --auth-token is "simple" (random tokens the
// members keep in memory, see tokens) or "jwt,pub-key=FILE,priv-key=FILE,
// sign-method=ALG,ttl=DUR" (signed tokens that name the user and the auth
// revision, kept nowhere).
type Provider interface {
	// Assign mints a token for user at auth revision rev, as the entry at
	// index applies; prefix is the random part a simple token begins with.
	Assign(prefix string, index uint64, user string, rev uint64) (string, error)
	// info returns the user and revision a valid token stands for.
	Info(token string) (Caller, bool)
	// InvalidateUser ends a user's tokens where the provider can.
	InvalidateUser(user string)
	// InvalidateAll ends every token where the provider can (auth
	// turned off).
	InvalidateAll()
	// CanSign reports whether Assign can mint tokens (a JWT provider
	// with only a public key cannot).
	CanSign() bool
}

// etcd's errors for --auth-token, word for word.
var (
	errInvalidAuthOpts   = errors.New("auth: invalid auth options")
	errInvalidAuthMethod = errors.New("auth: invalid auth signature method")
	errMissingKey        = errors.New("auth: missing key data")
	errKeyMismatch       = errors.New("auth: public and private keys don't match")
	ErrVerifyOnly        = errors.New("auth: token signing attempted with verify-only key")
)

// New reads --auth-token (simple tokens live ttl unused).
func New(spec string, ttl time.Duration, log *slog.Logger) (Provider, error) {
	kind, rest, _ := strings.Cut(spec, ",")
	switch kind {
	case "", "simple":
		return newTokens(ttl), nil
	case "jwt":
	default:
		return nil, fmt.Errorf("--auth-token %q: unknown token type %q (simple or jwt)", spec, kind)
	}
	opts := map[string]string{}
	for _, kv := range strings.Split(rest, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--auth-token %q: %q is not key=value: %w", spec, kv, errInvalidAuthOpts)
		}
		switch k {
		case "pub-key", "priv-key", "sign-method", "ttl":
			opts[k] = v
		default:
			log.Warn("unknown JWT option; ignored", "option", k)
		}
	}
	t, err := newJWT(opts)
	if err != nil {
		return nil, fmt.Errorf("--auth-token %q: %w", spec, err)
	}
	return t, nil
}

// jwtTokens signs and checks JWTs as etcd's do: claims "username",
// "revision" and "exp" (now + ttl), signed with RS*, PS*, ES* or HS* at 256,
// 384 or 512 bits. With only a public key it checks tokens and mints none.
type jwtTokens struct {
	alg  string // "RS256", ...
	hash crypto.Hash
	// Exactly one key kind is set: an RSA or ECDSA key pair (priv nil:
	// verify only), or the HMAC secret.
	priv   crypto.Signer
	pub    crypto.PublicKey
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

type jwtClaims struct {
	Exp      int64  `json:"exp"`
	Revision uint64 `json:"revision"`
	Username string `json:"username"`
}

func newJWT(opts map[string]string) (*jwtTokens, error) {
	t := &jwtTokens{alg: opts["sign-method"], ttl: 5 * time.Minute, now: time.Now}
	if s := opts["ttl"]; s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("ttl %q: %w", s, errInvalidAuthOpts)
		}
		t.ttl = d
	}
	if len(t.alg) != 5 {
		return nil, errInvalidAuthMethod
	}
	switch t.alg[2:] {
	case "256":
		t.hash = crypto.SHA256
	case "384":
		t.hash = crypto.SHA384
	case "512":
		t.hash = crypto.SHA512
	default:
		return nil, errInvalidAuthMethod
	}
	var privPEM, pubPEM []byte
	for k, dst := range map[string]*[]byte{"priv-key": &privPEM, "pub-key": &pubPEM} {
		if f := opts[k]; f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			*dst = b
		}
	}
	switch t.alg[:2] {
	case "HS":
		if len(privPEM) == 0 {
			return nil, errMissingKey
		}
		t.secret = privPEM // as etcd: the file's bytes are the secret
		return t, nil
	case "RS", "PS", "ES":
	default:
		return nil, errInvalidAuthMethod
	}
	if len(privPEM) > 0 {
		k, err := parsePrivateKey(privPEM)
		if err != nil {
			return nil, fmt.Errorf("priv-key: %w", err)
		}
		t.priv, t.pub = k, k.Public()
	}
	if len(pubPEM) > 0 {
		k, err := parsePublicKey(pubPEM)
		if err != nil {
			return nil, fmt.Errorf("pub-key: %w", err)
		}
		if t.pub != nil && !t.pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(k) {
			return nil, errKeyMismatch
		}
		t.pub = k
	}
	switch k := t.pub.(type) {
	case nil:
		return nil, errMissingKey
	case *rsa.PublicKey:
		if t.alg[:2] == "ES" {
			return nil, fmt.Errorf("%s needs an ECDSA key, not RSA", t.alg)
		}
	case *ecdsa.PublicKey:
		if t.alg[:2] != "ES" {
			return nil, fmt.Errorf("%s needs an RSA key, not ECDSA", t.alg)
		}
		if want := map[crypto.Hash]int{crypto.SHA256: 256, crypto.SHA384: 384, crypto.SHA512: 521}[t.hash]; k.Curve.Params().BitSize != want {
			return nil, fmt.Errorf("%s needs a P-%d key, not P-%d", t.alg, want, k.Curve.Params().BitSize)
		}
	default:
		return nil, fmt.Errorf("%s: unsupported key type %T", t.alg, k)
	}
	return t, nil
}

func parsePrivateKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, errors.New("not a PKCS #1, SEC 1 or PKCS #8 private key")
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	return s, nil
}

func parsePublicKey(data []byte) (crypto.PublicKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	if k, err := x509.ParsePKIXPublicKey(b.Bytes); err == nil {
		return k, nil
	}
	if c, err := x509.ParseCertificate(b.Bytes); err == nil {
		return c.PublicKey, nil
	}
	if k, err := x509.ParsePKCS1PublicKey(b.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("not a PKIX or PKCS #1 public key, nor a certificate")
}

var jwtB64 = base64.RawURLEncoding

func (t *jwtTokens) CanSign() bool { return t.priv != nil || t.secret != nil }

func (t *jwtTokens) Assign(_ string, _ uint64, user string, rev uint64) (string, error) {
	if !t.CanSign() {
		return "", ErrVerifyOnly
	}
	return t.sign(jwtClaims{Exp: t.now().Add(t.ttl).Unix(), Revision: rev, Username: user})
}

func (t *jwtTokens) sign(c jwtClaims) (string, error) {
	header, _ := json.Marshal(map[string]string{"alg": t.alg, "typ": "JWT"})
	payload, _ := json.Marshal(c)
	signed := jwtB64.EncodeToString(header) + "." + jwtB64.EncodeToString(payload)
	sig, err := t.signature([]byte(signed))
	if err != nil {
		return "", err
	}
	return signed + "." + jwtB64.EncodeToString(sig), nil
}

func (t *jwtTokens) digest(msg []byte) []byte {
	h := t.hash.New()
	h.Write(msg)
	return h.Sum(nil)
}

func (t *jwtTokens) signature(msg []byte) ([]byte, error) {
	switch t.alg[:2] {
	case "HS":
		m := hmac.New(t.hash.New, t.secret)
		m.Write(msg)
		return m.Sum(nil), nil
	case "RS":
		return rsa.SignPKCS1v15(rand.Reader, t.priv.(*rsa.PrivateKey), t.hash, t.digest(msg))
	case "PS":
		return rsa.SignPSS(rand.Reader, t.priv.(*rsa.PrivateKey), t.hash, t.digest(msg), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	default: // ES: r and s, each the curve's size, big-endian
		k := t.priv.(*ecdsa.PrivateKey)
		r, s, err := ecdsa.Sign(rand.Reader, k, t.digest(msg))
		if err != nil {
			return nil, err
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		sig := make([]byte, 2*n)
		r.FillBytes(sig[:n])
		s.FillBytes(sig[n:])
		return sig, nil
	}
}

func (t *jwtTokens) verify(msg, sig []byte) bool {
	switch t.alg[:2] {
	case "HS":
		m := hmac.New(t.hash.New, t.secret)
		m.Write(msg)
		return hmac.Equal(sig, m.Sum(nil))
	case "RS":
		return rsa.VerifyPKCS1v15(t.pub.(*rsa.PublicKey), t.hash, t.digest(msg), sig) == nil
	case "PS":
		return rsa.VerifyPSS(t.pub.(*rsa.PublicKey), t.hash, t.digest(msg), sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil
	default:
		k := t.pub.(*ecdsa.PublicKey)
		n := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return false
		}
		r, s := new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])
		return ecdsa.Verify(k, t.digest(msg), r, s)
	}
}

// info accepts a token signed with this key by this method, unexpired,
// naming a user and a revision.
func (t *jwtTokens) Info(token string) (Caller, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Caller{}, false
	}
	header, err1 := jwtB64.DecodeString(parts[0])
	payload, err2 := jwtB64.DecodeString(parts[1])
	sig, err3 := jwtB64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return Caller{}, false
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(header, &h) != nil || h.Alg != t.alg {
		return Caller{}, false
	}
	if !t.verify([]byte(parts[0]+"."+parts[1]), sig) {
		return Caller{}, false
	}
	var c struct {
		Exp      *json.Number `json:"exp"`
		Revision *json.Number `json:"revision"`
		Username *string      `json:"username"`
	}
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	if d.Decode(&c) != nil || c.Username == nil || c.Revision == nil {
		return Caller{}, false
	}
	rev, err := c.Revision.Float64()
	if err != nil || rev < 0 {
		return Caller{}, false
	}
	if c.Exp != nil {
		exp, err := c.Exp.Float64()
		if err != nil || float64(t.now().Unix()) >= exp {
			return Caller{}, false
		}
	}
	return Caller{Name: *c.Username, Rev: uint64(rev)}, true
}

// InvalidateUser does nothing: a signed token lives until it expires (a
// changed user raises the auth revision, and requests under the token's
// older revision are refused as they apply).
func (t *jwtTokens) InvalidateUser(string) {}

// InvalidateAll does nothing, for the same reason.
func (t *jwtTokens) InvalidateAll() {}
