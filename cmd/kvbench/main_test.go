package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/kvbench"
	"github.com/cairn-kv/cairn/internal/testcert"
	"github.com/cairn-kv/cairn/internal/testmember"
	"github.com/cairn-kv/cairn/server"
)

// member starts a cairn member on 127.0.0.1 for the test and returns its
// client URL.
func member(t *testing.T) string { return memberWith(t, nil) }

// memberWith is member with the configuration changed by set.
func memberWith(t *testing.T, set func(*server.Config)) string {
	t.Helper()
	return testmember.Start(t, set).ClientURLs()[0]
}

// kvbenchCmd runs the command with args and returns its stdout and stderr.
func kvbenchCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errw bytes.Buffer
	cmd := newCommand(&out, &errw)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), errw.String(), err
}

// TestCommandRuns: a put run's JSON report; the text report with the
// progress lines on stderr; an HTML report.
func TestCommandRuns(t *testing.T) {
	ep := member(t)
	out, errs, err := kvbenchCmd(t, "put", "--endpoints", ep, "--total", "100", "--clients", "4", "--conns", "2",
		"--key-space", "10", "--output", "json", "--seed", "7")
	require.NoError(t, err, errs)
	var rep kvbench.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Equal(t, "put", rep.Workload)
	require.Equal(t, uint64(100), rep.Requests)
	require.Equal(t, 4, rep.Clients)
	require.Contains(t, errs, "seed 7 (replay with --seed 7)")
	require.Contains(t, errs, "done,", "progress lines when stderr is not a terminal")

	dir := filepath.Join(t.TempDir(), "r")
	out, errs, err = kvbenchCmd(t, "range", "--endpoints", ep, "--duration", "300ms", "--rate", "200", "--key-space", "20",
		"--limit", "5", "--consistency", "s", "--report", dir, "--progress", "none")
	require.NoError(t, err, errs)
	require.Contains(t, out, "open loop at 200/s")
	require.Contains(t, out, "range")
	require.NotContains(t, errs, "done,")
	page, err := os.ReadFile(filepath.Join(dir, "index.html"))
	require.NoError(t, err)
	require.Equal(t, 3, strings.Count(string(page), "<svg"))
}

// TestCommandCompare: --compare runs each set in each round and reports
// the ratios and their median.
func TestCommandCompare(t *testing.T) {
	a, b := member(t), member(t)
	out, errs, err := kvbenchCmd(t, "put", "--compare", "one="+a+",two="+b, "--rounds", "3", "--total", "60",
		"--clients", "3", "--output", "json", "--progress", "none")
	require.NoError(t, err, errs)
	var got struct {
		A, B   string
		Rounds []kvbench.Round
		Rows   []kvbench.CompareRow
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Equal(t, "one", got.A)
	require.Equal(t, "two", got.B)
	require.Len(t, got.Rounds, 3)
	for _, rd := range got.Rounds {
		require.Len(t, rd.Reports, 2)
		require.Equal(t, []string{a}, rd.Reports[0].Endpoints)
		require.Equal(t, []string{b}, rd.Reports[1].Endpoints)
	}
	measures := map[string]kvbench.CompareRow{}
	for _, r := range got.Rows {
		measures[r.Measure] = r
	}
	// The servers' CPU counts 10 ms ticks (process_cpu_seconds_total): a
	// round this short may read none, and has no ratio then.
	for _, m := range []string{"throughput (requests/s)", "p99 (ms)", "server CPU (µs a request)", "client CPU (µs a request)"} {
		row, ok := measures[m]
		if !ok && m == "server CPU (µs a request)" {
			continue
		}
		require.True(t, ok, m)
		var want []float64
		for _, v := range row.Values {
			if v[0] > 0 && v[1] > 0 {
				want = append(want, v[0]/v[1])
			}
		}
		require.InDeltaSlice(t, want, row.Ratios, 1e-9, m)
		if m != "server CPU (µs a request)" {
			require.Len(t, row.Ratios, 3, m)
		}
		require.Equal(t, kvbench.Median(row.Ratios), row.Median, m)
	}
	for _, r := range []string{"round 1 of 3: one", "round 3 of 3: two"} {
		require.Contains(t, errs, r)
	}

	out, errs, err = kvbenchCmd(t, "get", "--compare", a+","+b, "--rounds", "1", "--total", "20", "--progress", "none")
	require.NoError(t, err, errs)
	require.Contains(t, out, "get: A against B, 1 rounds")
	require.Contains(t, out, "median ratio")
}

// TestCommandTLSAndAuth: over TLS with a client certificate (the CA, cert
// and key flags), as a user (--user name:password, or --password), on
// both transports; without the user the puts fail, counted by code.
func TestCommandTLSAndAuth(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.New(t, dir)
	srvCert, srvKey := ca.Issue(t, dir, "server", true)
	ep := memberWith(t, func(cfg *server.Config) {
		cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
		cfg.CertFile, cfg.KeyFile, cfg.TrustedCAFile, cfg.ClientCertAuth = srvCert, srvKey, ca.File, true
		cfg.BcryptCost = 4
	})
	cert, key := ca.Issue(t, dir, "kvbench", false)
	pair, err := tls.LoadX509KeyPair(cert, key)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second,
		TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = c.UserAdd(ctx, "root", "pw")
	require.NoError(t, err)
	_, err = c.UserGrantRole(ctx, "root", "root")
	require.NoError(t, err)
	_, err = c.AuthEnable(ctx)
	require.NoError(t, err)

	tlsFlags := []string{"--endpoints", ep, "--cacert", ca.File, "--cert", cert, "--key", key, "--total", "20", "--output", "json", "--progress", "none"}
	for _, tr := range kvbench.Transports {
		for _, user := range [][]string{{"--user", "root:pw"}, {"--user", "root", "--password", "pw"}} {
			out, errs, err := kvbenchCmd(t, append(append([]string{"put", "--transport", tr}, user...), tlsFlags...)...)
			require.NoError(t, err, errs)
			var rep kvbench.Report
			require.NoError(t, json.Unmarshal([]byte(out), &rep))
			require.Equal(t, uint64(20), rep.Requests, "%s %v", tr, user)
			require.Zero(t, rep.Errors, "%s %v: %v", tr, user, rep.ErrorCodes)
		}
		out, errs, err := kvbenchCmd(t, append([]string{"put", "--transport", tr}, tlsFlags...)...)
		require.NoError(t, err, errs)
		var rep kvbench.Report
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		require.Equal(t, uint64(20), rep.Errors, "%s: no user, the certificate's name is no user", tr)
		require.Len(t, rep.ErrorCodes, 1, "%v", rep.ErrorCodes)
	}
	_, _, err = kvbenchCmd(t, append([]string{"put", "--user", "root:wrong"}, tlsFlags...)...)
	require.ErrorContains(t, err, `authenticating as "root"`)
}

// TestCommandRefusals: bad flags are refused with what is wrong, before
// any connection.
func TestCommandRefusals(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"put", "--output", "xml"}, `--output "xml": want text, json or csv`},
		{[]string{"put", "--key-dist", "pareto"}, `--key-dist "pareto": want one of [sequential uniform zipfian]`},
		{[]string{"put", "--key-space", "0"}, "--key-space must be at least 1"},
		{[]string{"put", "--key-size", "2", "--key-prefix", "abc"}, `--key-size 2 leaves no room after the prefix "abc"`},
		{[]string{"put", "--key-size", "1", "--key-space", "1000"}, "--key-space 1000 does not fit in 1 bytes after the prefix; raise --key-size"},
		{[]string{"put", "--key-dist", "zipfian", "--zipf-s", "1"}, "--zipf-s must be above 1, not 1"},
		{[]string{"get", "--consistency", "x"}, `--consistency "x": want l or s`},
		{[]string{"mixed", "--read-ratio", "2"}, "--read-ratio must be in [0, 1], not 2"},
		{[]string{"put", "--rate", "-1"}, "--rate must not be negative"},
		{[]string{"put", "--clients", "0"}, "--conns and --clients must be at least 1"},
		{[]string{"watch", "--watchers", "0"}, "--watchers must be at least 1 for the watch workload"},
		{[]string{"put", "--compare", "a"}, `--compare wants two endpoint sets, A,B (a set's endpoints joined by +), not "a"`},
		{[]string{"put", "--user", "root"}, "--user has no password: give it as --user name:password or --password"},
		{[]string{"put", "--profile", "heap"}, `--profile "heap": want cpu, mem or mutex`},
		{[]string{"put", "--progress", "fancy"}, `--progress "fancy": want auto, bar, lines or none`},
		{[]string{"put", "--preload", "maybe"}, `--preload "maybe": want auto, true or false`},
		{[]string{"put", "--transport", "quic"}, `--transport "quic": want one of [lean grpc-go]`},
		{[]string{"scan"}, `unknown command "scan" for "kvbench"`},
	} {
		_, _, err := kvbenchCmd(t, append(c.args, "--endpoints", "127.0.0.1:1", "--dial-timeout", "100ms")...)
		require.Error(t, err, "%v", c.args)
		require.Equal(t, c.want, err.Error(), "%v", c.args)
	}
}
