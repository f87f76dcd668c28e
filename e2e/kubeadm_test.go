package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kubeadmPKI writes the etcd certificates kubeadm makes
// (/etc/kubernetes/pki/etcd): a CA, the server's and the peer's (serving
// and client, for localhost, the node and its address), and the
// clients' of the health check and of the API server.
func kubeadmPKI(t *testing.T, dir, node string) {
	t.Helper()
	key := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name string, der []byte, k *rsa.PrivateKey) {
		if err := os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write("ca", caDER, caKey)
	for i, c := range []struct {
		name, cn string
		usage    []x509.ExtKeyUsage
		hosts    bool
	}{
		{"server", node, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true},
		{"peer", node, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true},
		{"healthcheck-client", "kube-etcd-healthcheck-client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false},
		{"apiserver-etcd-client", "kube-apiserver-etcd-client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false},
	} {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: c.cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: c.usage}
		if c.hosts {
			tmpl.DNSNames = []string{"localhost", node}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(c.name, der, k)
	}
}

// TestKubeadmStaticPod: the command line of the etcd static pod kubeadm
// writes starts cairn unchanged; etcdctl with kubeadm's client
// certificates works; the pod's liveness and startup probes (the metrics
// port's /health) pass; the member restarts over its data with the
// initial corruption check on.
func TestKubeadmStaticPod(t *testing.T) {
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki", "etcd")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	node := "node-1"
	kubeadmPKI(t, pki, node)
	client, peer := freeURL(t, "https"), freeURL(t, "https")
	metrics := freeURL(t, "http")
	// As kubeadm writes them (its manifest lists them sorted), with the
	// node's address as 127.0.0.1 and free ports.
	args := []string{
		"--advertise-client-urls=" + client,
		"--cert-file=" + filepath.Join(pki, "server.crt"),
		"--client-cert-auth=true",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--experimental-initial-corrupt-check=true",
		"--experimental-watch-progress-notify-interval=5s",
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=" + node + "=" + peer,
		"--key-file=" + filepath.Join(pki, "server.key"),
		"--listen-client-urls=" + client,
		"--listen-metrics-urls=" + metrics,
		"--listen-peer-urls=" + peer,
		"--name=" + node,
		"--peer-cert-file=" + filepath.Join(pki, "peer.crt"),
		"--peer-client-cert-auth=true",
		"--peer-key-file=" + filepath.Join(pki, "peer.key"),
		"--peer-trusted-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--snapshot-count=10000",
		"--trusted-ca-file=" + filepath.Join(pki, "ca.crt"),
	}
	ctl := func(m *member, cert string, a ...string) (string, error) {
		return m.ctlTLS(filepath.Join(pki, "ca.crt"), filepath.Join(pki, cert+".crt"), filepath.Join(pki, cert+".key"), a...)
	}
	probe := func(path string) (int, string) {
		resp, err := http.Get(metrics + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for round := range 2 { // started, then restarted over its data
		m := &member{t: t, url: client, done: make(chan struct{})}
		m.spawn(args)
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := ctl(m, "healthcheck-client", "endpoint", "health")
			if err == nil && strings.Contains(out, "is healthy") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: not healthy after 20 s: %s %v", round, out, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// kubeadm's probes: liveness, then startup.
		for _, path := range []string{"/health?exclude=NOSPACE&serializable=true", "/health?serializable=false"} {
			if code, body := probe(path); code != http.StatusOK || !strings.Contains(body, `"health":"true"`) {
				t.Fatalf("round %d: probe %s: %d %s", round, path, code, body)
			}
		}
		if round == 0 {
			if out, err := ctl(m, "apiserver-etcd-client", "put", "/registry/k", "v"); err != nil || !strings.Contains(out, "OK") {
				t.Fatalf("put with the API server's certificate: %v %s", err, out)
			}
		}
		if out, err := ctl(m, "apiserver-etcd-client", "get", "/registry/k", "--print-value-only"); err != nil || strings.TrimSpace(out) != "v" {
			t.Fatalf("round %d: get: %v %q", round, err, out)
		}
		if out, err := m.ctlTLS(filepath.Join(pki, "ca.crt"), "", "", "endpoint", "health"); err == nil {
			t.Fatalf("round %d: a client without a certificate was served: %s", round, out)
		}
		m.stop()
	}
}

// ctlTLS runs etcdctl against the member with a CA and a client
// certificate ("" for none).
func (m *member) ctlTLS(ca, cert, key string, args ...string) (string, error) {
	flags := []string{"--cacert", ca}
	if cert != "" {
		flags = append(flags, "--cert", cert, "--key", key)
	}
	return m.ctlIn("", append(flags, args...)...)
}
