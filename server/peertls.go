package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// PeerTLS is the peer port's TLS, etcd's --peer-* flags.
type PeerTLS struct {
	CertFile, KeyFile string // the member's certificate, served and presented when dialing
	TrustedCAFile     string // verifies the other members' certificates
	ClientCertAuth    bool   // --peer-client-cert-auth: a dialing member must present a verified certificate
	AutoTLS           bool   // --peer-auto-tls: a self-signed pair in <data-dir>/fixtures/peer, peers' unverified
	AllowedCN         string // --peer-cert-allowed-cn: a dialing member's certificate must have this common name
	AllowedHostname   string // --peer-cert-allowed-hostname: ... or be valid for this host name
	CRLFile           string // --peer-crl-file: certificates revoked here are refused
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
// system's roots); the allowed common name or host name and the CRL apply
// to the certificate of the member dialing in, and the CRL to the one
// dialed too.
func peerTLS(p PeerTLS, dataDir string, advertise []string, log *slog.Logger) (listen, dial *tls.Config, err error) {
	certFile, keyFile := p.CertFile, p.KeyFile
	generated := certFile == "" && keyFile == "" && p.AutoTLS
	if generated {
		if certFile, keyFile, err = selfSigned(filepath.Join(dataDir, "fixtures", "peer"), advertise); err != nil {
			return nil, nil, fmt.Errorf("--peer-auto-tls: %w", err)
		}
		log.Warn("serving peers with a self-signed certificate (--peer-auto-tls)", "cert-file", certFile)
	}
	if certFile == "" || keyFile == "" {
		return nil, nil, errors.New("an https peer URL needs --peer-cert-file and --peer-key-file (or --peer-auto-tls)")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("loading the peer certificate: %w", err)
	}
	var pool *x509.CertPool
	if p.TrustedCAFile != "" {
		if pool, err = certPool("--peer-trusted-ca-file", p.TrustedCAFile); err != nil {
			return nil, nil, err
		}
	} else if p.ClientCertAuth {
		return nil, nil, errors.New("--peer-client-cert-auth needs --peer-trusted-ca-file")
	}
	var revoked map[string]bool
	if p.CRLFile != "" {
		data, err := os.ReadFile(p.CRLFile)
		if err != nil {
			return nil, nil, err
		}
		crl, err := x509.ParseRevocationList(pemOrDER(data))
		if err != nil {
			return nil, nil, fmt.Errorf("--peer-crl-file %s: %w", p.CRLFile, err)
		}
		revoked = map[string]bool{}
		for _, e := range crl.RevokedCertificateEntries {
			revoked[e.SerialNumber.String()] = true
		}
	}
	checkRevoked := func(certs []*x509.Certificate) error {
		for _, c := range certs {
			if revoked[c.SerialNumber.String()] {
				return fmt.Errorf("peer certificate %s (serial %s) is revoked", c.Subject.CommonName, c.SerialNumber)
			}
		}
		return nil
	}
	listen = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if pool != nil {
		listen.ClientCAs = pool
		listen.ClientAuth = tls.VerifyClientCertIfGiven
		if p.ClientCertAuth {
			listen.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	listen.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if len(chains) == 0 || len(chains[0]) == 0 {
			if p.AllowedCN != "" || p.AllowedHostname != "" {
				return errors.New("a peer certificate is required (--peer-cert-allowed-cn/-hostname)")
			}
			return nil
		}
		leaf := chains[0][0]
		if p.AllowedCN != "" && leaf.Subject.CommonName != p.AllowedCN {
			return fmt.Errorf("peer certificate common name %q is not the allowed %q", leaf.Subject.CommonName, p.AllowedCN)
		}
		if p.AllowedHostname != "" && leaf.VerifyHostname(p.AllowedHostname) != nil {
			return fmt.Errorf("peer certificate is not valid for the allowed host name %q", p.AllowedHostname)
		}
		return checkRevoked(chains[0])
	}
	dial = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, RootCAs: pool}
	if generated && pool == nil {
		// --peer-auto-tls: the peers' self-signed certificates cannot be
		// verified (etcd skips it too). Given certificates without a CA
		// are verified against the system's roots.
		dial.InsecureSkipVerify = true
	}
	if revoked != nil {
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
