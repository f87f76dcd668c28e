// Package testcert makes a certificate authority and certificates for TLS
// tests, written as PEM files.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority valid for an hour either side of now.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	File string // the CA's certificate, PEM
}

// New makes a CA and writes its certificate into dir as ca.pem.
func New(t testing.TB, dir string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, File: file}
}

// Issue writes a certificate for cn (a server's for 127.0.0.1, or a
// client's) and its key, and returns their files.
func (ca *CA) Issue(t testing.TB, dir, cn string, server bool) (certFile, keyFile string) {
	t.Helper()
	return ca.IssueFor(t, dir, cn, server, !server)
}

// IssueFor writes a certificate for cn, for serving (127.0.0.1) and as a
// client as asked (a peer's is both), and its key.
func (ca *CA) IssueFor(t testing.TB, dir, cn string, serverAuth, clientAuth bool) (certFile, keyFile string) {
	t.Helper()
	var ips []net.IP
	if serverAuth {
		ips = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	return ca.Make(t, dir, cn, serverAuth, clientAuth, ips)
}

// IssueAt writes a peer's certificate (server and client) for cn at ips.
func (ca *CA) IssueAt(t testing.TB, dir, cn string, ips ...net.IP) (certFile, keyFile string) {
	t.Helper()
	return ca.Make(t, dir, cn, true, true, ips)
}

// Make writes a certificate for cn with the usages asked, valid for ips,
// and its key, as dir/cn.pem and dir/cn-key.pem.
func (ca *CA) Make(t testing.TB, dir, cn string, serverAuth, clientAuth bool, ips []net.IP) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
	if clientAuth {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	if serverAuth {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	tmpl.IPAddresses = ips
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
