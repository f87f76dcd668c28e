package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
)

// TLSPolicy is what the client and the peer ports' TLS share, etcd's
// --cipher-suites, --tls-min-version, --tls-max-version and
// --self-signed-cert-validity.
type TLSPolicy struct {
	// CipherSuites are Go's names for the suites offered, in order of
	// preference (and etcd's two short names for the CHACHA20 suites);
	// empty: Go's. TLS 1.3's suites are Go's always.
	CipherSuites []string
	// MinVersion is "TLS1.2" (the default, also "") or "TLS1.3";
	// MaxVersion "" (Go's highest), "TLS1.2" or "TLS1.3".
	MinVersion, MaxVersion string
	// SelfSignedCertValidity is how many years the certificates made for
	// --auto-tls and --peer-auto-tls are valid (0: 1).
	SelfSignedCertValidity uint
}

// tlsVersion is a --tls-*-version value as Go's constant (0 for "").
func tlsVersion(v string) (uint16, error) {
	switch v {
	case "":
		return 0, nil
	case "TLS1.2":
		return tls.VersionTLS12, nil
	case "TLS1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("unexpected TLS version %q (must be one of: TLS1.2, TLS1.3)", v)
}

// cipherSuite is a suite's ID by Go's name, or by etcd's short names.
func cipherSuite(name string) (uint16, bool) {
	for _, c := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if c.Name == name {
			return c.ID, true
		}
	}
	switch name {
	case "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305":
		return tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, true
	case "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305":
		return tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, true
	}
	return 0, false
}

// Check refuses what etcd refuses: an unknown version or suite, a
// minimum above the maximum, suites with TLS 1.3 only (Go chooses those).
func (p TLSPolicy) Check() error {
	_, err := p.apply(&tls.Config{})
	return err
}

// apply sets tc's versions and suites; it returns tc.
func (p TLSPolicy) apply(tc *tls.Config) (*tls.Config, error) {
	minV, err := tlsVersion(p.MinVersion)
	if err != nil {
		return nil, err
	}
	maxV, err := tlsVersion(p.MaxVersion)
	if err != nil {
		return nil, err
	}
	if minV == 0 {
		minV = tls.VersionTLS12
	}
	if maxV != 0 && minV > maxV {
		return nil, fmt.Errorf("min version (%s) is greater than max version (%s)", p.MinVersion, p.MaxVersion)
	}
	if minV == tls.VersionTLS13 && len(p.CipherSuites) > 0 {
		return nil, errors.New("cipher suites cannot be configured when only TLS1.3 is enabled")
	}
	var suites []uint16
	for _, name := range p.CipherSuites {
		id, ok := cipherSuite(name)
		if !ok {
			return nil, fmt.Errorf("unexpected TLS cipher suite %q", name)
		}
		suites = append(suites, id)
	}
	tc.MinVersion, tc.MaxVersion, tc.CipherSuites = minV, maxV, suites
	return tc, nil
}

// validityYears is the self-signed certificates' lifetime.
func (p TLSPolicy) validityYears() uint {
	if p.SelfSignedCertValidity == 0 {
		return 1
	}
	return p.SelfSignedCertValidity
}

// revocations reads a certificate revocation list (PEM or DER) and
// returns the check that refuses a chain with a certificate in it.
func revocations(flag, path string) (func([]*x509.Certificate) error, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	crl, err := x509.ParseRevocationList(pemOrDER(data))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	revoked := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		revoked[e.SerialNumber.String()] = true
	}
	return func(chain []*x509.Certificate) error {
		for _, c := range chain {
			if revoked[c.SerialNumber.String()] {
				return fmt.Errorf("certificate %q (serial %s) is revoked", c.Subject.CommonName, c.SerialNumber)
			}
		}
		return nil
	}, nil
}

// allowedNames returns the check of a verified leaf certificate against
// the common names or host names allowed (either list, as in etcd, not
// both; empty: anything), or an error for both given.
func allowedNames(who string, cns, hostnames []string) (func(*x509.Certificate) error, error) {
	if len(cns) > 0 && len(hostnames) > 0 {
		return nil, fmt.Errorf("AllowedCNs and AllowedHostnames are mutually exclusive (cns=%q, hostnames=%q)", cns, hostnames)
	}
	return func(leaf *x509.Certificate) error {
		if len(cns) > 0 && !slices.Contains(cns, leaf.Subject.CommonName) {
			return fmt.Errorf("%s certificate common name %q is not one of the allowed %q", who, leaf.Subject.CommonName, cns)
		}
		if len(hostnames) > 0 && !slices.ContainsFunc(hostnames, func(h string) bool { return leaf.VerifyHostname(h) == nil }) {
			return fmt.Errorf("%s certificate is not valid for any of the allowed host names %q", who, hostnames)
		}
		return nil
	}, nil
}

// checkSAN refuses a certificate that names hosts (IP addresses or DNS
// names) none of which is the remote address it connects from, as etcd's
// peer listener does: an IP address must match; a DNS name must be one a
// reverse lookup of the address gives.
func checkSAN(leaf *x509.Certificate, remote net.Addr) error {
	if len(leaf.IPAddresses) == 0 && len(leaf.DNSNames) == 0 {
		return nil
	}
	host, _, err := net.SplitHostPort(remote.String())
	if err != nil {
		return err
	}
	if leaf.VerifyHostname(host) == nil {
		return nil
	}
	if len(leaf.DNSNames) > 0 {
		names, _ := net.LookupAddr(host)
		for _, n := range names {
			if leaf.VerifyHostname(trimDot(n)) == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("tls: %q does not match any of the certificate's addresses %q or DNS names %q", host, leaf.IPAddresses, leaf.DNSNames)
}

func trimDot(name string) string {
	if n := len(name); n > 0 && name[n-1] == '.' {
		return name[:n-1]
	}
	return name
}
