package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/testdiscovery"
	"github.com/cairn-kv/cairn/internal/testdns"
	"github.com/cairn-kv/cairn/internal/testlog"
	"github.com/cairn-kv/cairn/internal/testport"
	"github.com/cairn-kv/cairn/server/discovery"
)

// withTestDNS points SRV discovery at a DNS server on 127.0.0.1 for the
// test's length.
func withTestDNS(t *testing.T) *testdns.Server {
	t.Helper()
	dns, err := testdns.Start()
	require.NoError(t, err)
	saved := discovery.Resolver
	discovery.Resolver = dns.Resolver()
	t.Cleanup(func() { discovery.Resolver = saved; dns.Close() })
	return dns
}

// TestDiscoverySRV: three members started with --discovery-srv and no
// --initial-cluster find each other in SRV records (a DNS server on
// 127.0.0.1), form one cluster and replicate; they agree on HashKV.
func TestDiscoverySRV(t *testing.T) {
	dns := withTestDNS(t)
	ports := testport.Free(t, 6)
	dir := t.TempDir()
	for i := range 3 {
		dns.AddSRV("_etcd-server._tcp.cairn.test", testdns.SRV{Target: fmt.Sprintf("m%d.cairn.test", i+1), Port: uint16(ports[i])})
		dns.AddA(fmt.Sprintf("m%d.cairn.test", i+1), net.IPv4(127, 0, 0, 1))
	}
	urls := startMembers(t, ports, func(i int, peer, client string) []string {
		return []string{"--name", fmt.Sprintf("m%d", i+1), "--data-dir", filepath.Join(dir, fmt.Sprint(i)),
			"--initial-advertise-peer-urls", peer, "--listen-peer-urls", peer,
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--discovery-srv", "cairn.test", "--initial-cluster-token", "srv-test"}
	})
	checkOneCluster(t, urls, 3)
}

// startMembers runs len(ports)/2 members in this process with args each
// (member i's peer port ports[i], its client port ports[n+i]), and returns
// their client URLs; each is stopped at the test's end and must exit 0.
func startMembers(t *testing.T, ports []int, args func(i int, peer, client string) []string) []string {
	t.Helper()
	n := len(ports) / 2
	var clientURLs []string
	for i := range n {
		peer, client := fmt.Sprintf("http://127.0.0.1:%d", ports[i]), fmt.Sprintf("http://127.0.0.1:%d", ports[n+i])
		clientURLs = append(clientURLs, client)
		code, sig := make(chan int, 1), make(chan os.Signal, 1)
		var logs testlog.Buffer
		go func() { code <- run(args(i, peer, client), nil, io.Discard, &logs, sig, nil) }()
		t.Cleanup(func() {
			sig <- syscall.SIGTERM
			require.Equal(t, 0, <-code, "member %d's exit code; its log:\n%s", i+1, logs.String())
		})
	}
	return clientURLs
}

// checkOneCluster checks that the members at urls are one cluster of n
// that replicates, with the same HashKV.
func checkOneCluster(t *testing.T, urls []string, n int) {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: urls, DialTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.Put(ctx, "k", "v")
	require.NoError(t, err)
	members, err := c.MemberList(ctx)
	require.NoError(t, err)
	require.Len(t, members.Members, n)
	var rev int64
	for _, u := range urls {
		_, err := c.Get(ctx, "k") // each applies what the leader committed
		require.NoError(t, err)
		st, err := c.Status(ctx, u)
		require.NoError(t, err)
		require.Equal(t, members.Header.ClusterId, st.Header.ClusterId, "one cluster")
		rev = max(rev, st.Header.Revision)
	}
	var hashes []uint32
	for _, u := range urls {
		h, err := c.HashKV(ctx, u, rev)
		require.NoError(t, err)
		hashes = append(hashes, h.Hash)
	}
	for _, h := range hashes {
		require.Equal(t, hashes[0], h, "HashKV at revision %d", rev)
	}
}

// TestDiscoveryV2: three members started with --discovery (a v2
// discovery service on 127.0.0.1 whose token is for three) form one
// cluster; a fourth is refused, the cluster being full, with what to do
// instead of etcd's v2 proxy.
func TestDiscoveryV2(t *testing.T) {
	svc := httptest.NewServer(testdiscovery.NewService("token", 3))
	defer svc.Close()
	dir := t.TempDir()
	urls := startMembers(t, testport.Free(t, 6), func(i int, peer, client string) []string {
		return []string{"--name", fmt.Sprintf("m%d", i+1), "--data-dir", filepath.Join(dir, fmt.Sprint(i)),
			"--initial-advertise-peer-urls", peer, "--listen-peer-urls", peer,
			"--listen-client-urls", client, "--advertise-client-urls", client, "--discovery", svc.URL + "/token"}
	})
	checkOneCluster(t, urls, 3)

	peer, client := freeURL(t), freeURL(t)
	var stderr testlog.Buffer
	code := run([]string{"--name", "m4", "--data-dir", filepath.Join(dir, "4"),
		"--initial-advertise-peer-urls", peer, "--listen-peer-urls", peer,
		"--listen-client-urls", client, "--advertise-client-urls", client, "--discovery", svc.URL + "/token"}, nil, io.Discard, &stderr, nil, nil)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), "discovery: cluster is full: etcd would start a v2 proxy here")
}
