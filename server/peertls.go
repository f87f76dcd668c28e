package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
)

// PeerTLS is the peer port's TLS, etcd's --peer-* flags.
type PeerTLS struct {
	CertFile, KeyFile string // the member's certificate, served and presented when dialing
	// ClientCertFile and ClientKeyFile, if given, are presented when
	// dialing instead (--peer-client-cert-file, --peer-client-key-file).
	ClientCertFile, ClientKeyFile string
	TrustedCAFile                 string // verifies the other members' certificates
	ClientCertAuth                bool   // --peer-client-cert-auth: a dialing member must present a verified certificate
	AutoTLS                       bool   // --peer-auto-tls: a self-signed pair in <data-dir>/fixtures/peer, peers' unverified
	// AllowedCNs (--peer-cert-allowed-cn): a dialing member's certificate
	// must have one of these common names; or, AllowedHostnames
	// (--peer-cert-allowed-hostname), be valid for one of these hosts.
	AllowedCNs, AllowedHostnames []string
	CRLFile                      string // --peer-crl-file: certificates revoked here are refused
	// SkipClientSANVerify (--experimental-peer-skip-client-san-verification)
	// lets in a dialing member whose certificate names hosts none of which
	// is the address it dials from.
	SkipClientSANVerify bool
}

// enabled reports whether any peer TLS is configured.
func (p PeerTLS) enabled() bool {
	return p.CertFile != "" || p.KeyFile != "" || p.AutoTLS
}

// peerTLS builds the peer port's TLS: the listener's configuration and
// the one its transport dials with. Verification follows etcd: with a
// trusted CA, both sides verify the other's chain (the listener only when
// a certificate is given, unless --peer-client-cert-auth requires one);
// with --peer-auto-tls's own certificates and no CA, nothing is verified,
// as in etcd (given certificates with no CA are verified against the
// system's roots). The listener also checks a dialing member's
// certificate against the address it comes from (unless
// SkipClientSANVerify), the allowed common or host names, and the CRL;
// the dialer checks the CRL too. Versions and suites follow policy.
func peerTLS(p PeerTLS, policy TLSPolicy, dataDir string, advertise []string, log *slog.Logger) (listen, dial *tls.Config, err error) {
	certFile, keyFile := p.CertFile, p.KeyFile
	generated := certFile == "" && keyFile == "" && p.AutoTLS
	if generated {
		if certFile, keyFile, err = selfSigned(filepath.Join(dataDir, "fixtures", "peer"), advertise, policy.validityYears()); err != nil {
			return nil, nil, fmt.Errorf("--peer-auto-tls: %w", err)
		}
		log.Warn("serving peers with a self-signed certificate (--peer-auto-tls)", "cert-file", certFile)
	}
	if certFile == "" || keyFile == "" {
		return nil, nil, errors.New("an https peer URL needs --peer-cert-file and --peer-key-file (or --peer-auto-tls)")
	}
	cert, err := newCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the peer certificate: %w", err)
	}
	clientCert := cert
	if p.ClientCertFile != "" || p.ClientKeyFile != "" {
		if clientCert, err = newCertReloader(p.ClientCertFile, p.ClientKeyFile, log); err != nil {
			return nil, nil, fmt.Errorf("loading --peer-client-cert-file and --peer-client-key-file: %w", err)
		}
	}
	var pool *x509.CertPool
	if p.TrustedCAFile != "" {
		if pool, err = certPool("--peer-trusted-ca-file", p.TrustedCAFile); err != nil {
			return nil, nil, err
		}
	} else if p.ClientCertAuth {
		return nil, nil, errors.New("--peer-client-cert-auth needs --peer-trusted-ca-file")
	}
	checkRevoked := func([]*x509.Certificate) error { return nil }
	if p.CRLFile != "" {
		if checkRevoked, err = revocations("--peer-crl-file", p.CRLFile); err != nil {
			return nil, nil, err
		}
	}
	allowed, err := allowedNames("peer", p.AllowedCNs, p.AllowedHostnames)
	if err != nil {
		return nil, nil, err
	}
	if listen, err = policy.apply(cert.serve(&tls.Config{})); err != nil {
		return nil, nil, err
	}
	if pool != nil {
		listen.ClientCAs = pool
		listen.ClientAuth = tls.VerifyClientCertIfGiven
		if p.ClientCertAuth {
			listen.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	verify := func(remote net.Addr) func([][]byte, [][]*x509.Certificate) error {
		return func(raw [][]byte, chains [][]*x509.Certificate) error {
			if len(chains) == 0 || len(chains[0]) == 0 {
				if len(p.AllowedCNs) > 0 || len(p.AllowedHostnames) > 0 {
					return errors.New("a peer certificate is required (--peer-cert-allowed-cn/-hostname)")
				}
				return nil
			}
			leaf := chains[0][0]
			if err := allowed(leaf); err != nil {
				return err
			}
			if !p.SkipClientSANVerify && remote != nil {
				if err := checkSAN(leaf, remote); err != nil {
					return err
				}
			}
			return checkRevoked(chains[0])
		}
	}
	listen.VerifyPeerCertificate = verify(nil)
	base := listen
	// Each connection gets the check against its own remote address.
	listen = base.Clone()
	listen.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.VerifyPeerCertificate = verify(hello.Conn.RemoteAddr())
		return c, nil
	}
	if dial, err = policy.apply(clientCert.serve(&tls.Config{RootCAs: pool})); err != nil {
		return nil, nil, err
	}
	if generated && pool == nil {
		// --peer-auto-tls: the peers' self-signed certificates cannot be
		// verified (etcd skips it too). Given certificates without a CA
		// are verified against the system's roots.
		dial.InsecureSkipVerify = true
	}
	if p.CRLFile != "" {
		dial.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			for _, c := range chains {
				if err := checkRevoked(c); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return listen, dial, nil
}

// pemOrDER returns the DER bytes of a PEM block, or data as it is.
func pemOrDER(data []byte) []byte {
	if b, _ := pem.Decode(data); b != nil {
		return b.Bytes
	}
	return data
}
