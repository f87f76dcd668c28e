package server

import (
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader serves a certificate and key from their files, read again
// when either file's size or modification time changes, so a rotated
// certificate is served from the next handshake on without a restart (etcd
// reads its files at every handshake). A pair that fails to load, say
// halfway through being replaced, is logged and the last good one served.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu    sync.Mutex // guards the fields below
	stamp [2]fileStamp
	cert  *tls.Certificate
}

// fileStamp is what tells a file changed without reading it.
type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.Size(), fi.ModTime()}, nil
}

// newCertReloader loads the pair, and fails if it does not load.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// load reads both files and their stamps (taken first, so a change while
// reading is seen at the next handshake). r.mu held, or r not yet shared.
func (r *certReloader) load() error {
	cs, err := stampOf(r.certFile)
	if err != nil {
		return err
	}
	ks, err := stampOf(r.keyFile)
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.stamp, r.cert = [2]fileStamp{cs, ks}, &cert
	return nil
}

// get returns the current pair, reloading it if its files changed.
func (r *certReloader) get() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs, cerr := stampOf(r.certFile)
	ks, kerr := stampOf(r.keyFile)
	if cerr == nil && kerr == nil && [2]fileStamp{cs, ks} == r.stamp {
		return r.cert, nil
	}
	if err := r.load(); err != nil {
		r.log.Warn("failed to reload the certificate; serving the one loaded before",
			"cert-file", r.certFile, "key-file", r.keyFile, "error", err)
		return r.cert, nil
	}
	r.log.Info("reloaded the certificate", "cert-file", r.certFile, "key-file", r.keyFile)
	return r.cert, nil
}

// serve sets tc to serve the pair (and to present it when dialing).
func (r *certReloader) serve(tc *tls.Config) *tls.Config {
	tc.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.get() }
	tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return r.get() }
	return tc
}
