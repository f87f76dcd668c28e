package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// serverTLS builds the client ports' TLS configuration from the flags:
// --cert-file/--key-file (or --auto-tls, a self-signed pair kept in the
// data dir), and with --client-cert-auth, client certificates verified
// against --trusted-ca-file, not revoked in --client-crl-file, valid for
// one of --client-cert-allowed-hostname; versions and suites from the
// TLS policy. The certificate is read again when its files change.
func serverTLS(cfg *Config, log *slog.Logger) (*tls.Config, error) {
	certFile, keyFile := cfg.CertFile, cfg.KeyFile
	if certFile == "" && keyFile == "" && cfg.AutoTLS {
		dir := filepath.Join(cfg.DataDir, "fixtures", "client")
		var err error
		if certFile, keyFile, err = selfSigned(dir, cfg.AdvertiseClientURLs, cfg.TLS.validityYears()); err != nil {
			return nil, fmt.Errorf("--auto-tls: %w", err)
		}
		log.Warn("serving clients with a self-signed certificate (--auto-tls)", "cert-file", certFile)
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("an https client URL needs --cert-file and --key-file (or --auto-tls)")
	}
	certs, err := newCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, fmt.Errorf("loading the client certificate: %w", err)
	}
	tc, err := cfg.TLS.apply(certs.serve(&tls.Config{NextProtos: []string{"h2", "http/1.1"}}))
	if err != nil {
		return nil, err
	}
	if cfg.ClientCertAuth || cfg.TrustedCAFile != "" {
		if cfg.TrustedCAFile == "" {
			return nil, errors.New("--client-cert-auth needs --trusted-ca-file")
		}
		pool, err := certPool("--trusted-ca-file", cfg.TrustedCAFile)
		if err != nil {
			return nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
		if cfg.ClientCertAuth {
			tc.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	allowed, err := allowedNames("client", nil, cfg.ClientCertAllowedHostnames)
	if err != nil {
		return nil, err
	}
	checkRevoked := func([]*x509.Certificate) error { return nil }
	if cfg.ClientCRLFile != "" {
		if checkRevoked, err = revocations("--client-crl-file", cfg.ClientCRLFile); err != nil {
			return nil, err
		}
	}
	tc.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if len(chains) == 0 || len(chains[0]) == 0 {
			return nil // no certificate, where none is required
		}
		if err := allowed(chains[0][0]); err != nil {
			return err
		}
		return checkRevoked(chains[0])
	}
	return tc, nil
}

// certPool reads the CA certificates of flag's file.
func certPool(flag, path string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("%s %s holds no certificate", flag, path)
	}
	return pool, nil
}

// selfSigned returns a certificate and key in dir, made (ECDSA P-256,
// valid for years, for the hosts of urls and localhost) if not there yet.
func selfSigned(dir string, urls []string, years uint) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		return certFile, keyFile, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"cairn"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Duration(years) * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, u := range urls {
		if host, _, err := net.SplitHostPort(trimScheme(u)); err == nil {
			if ip := net.ParseIP(host); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, host)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func trimScheme(u string) string {
	for _, p := range []string{"https://", "http://"} {
		if len(u) > len(p) && u[:len(p)] == p {
			return u[len(p):]
		}
	}
	return u
}
