package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/testdns"
	"github.com/cairn-kv/cairn/internal/testlog"
	"github.com/cairn-kv/cairn/internal/testport"
	"github.com/cairn-kv/cairn/server/discovery"
)

// TestDiscoverySRV: three members started with --discovery-srv and no
// --initial-cluster find each other in SRV records (a DNS server on
// 127.0.0.1), form one cluster and replicate; they agree on HashKV.
func TestDiscoverySRV(t *testing.T) {
	dns, err := testdns.Start()
	require.NoError(t, err)
	defer dns.Close()
	saved := discovery.Resolver
	discovery.Resolver = dns.Resolver()
	defer func() { discovery.Resolver = saved }()
	ports := testport.Free(t, 6)
	dir := t.TempDir()
	var clientURLs []string
	for i := range 3 {
		dns.AddSRV("_etcd-server._tcp.cairn.test", testdns.SRV{Target: fmt.Sprintf("m%d.cairn.test", i+1), Port: uint16(ports[i])})
		dns.AddA(fmt.Sprintf("m%d.cairn.test", i+1), net.IPv4(127, 0, 0, 1))
		clientURLs = append(clientURLs, fmt.Sprintf("http://127.0.0.1:%d", ports[3+i]))
	}
	codes := make([]chan int, 3)
	sigs := make([]chan os.Signal, 3)
	var logs [3]testlog.Buffer
	for i := range 3 {
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[i])
		args := []string{"--name", fmt.Sprintf("m%d", i+1), "--data-dir", filepath.Join(dir, fmt.Sprint(i)),
			"--initial-advertise-peer-urls", peer, "--listen-peer-urls", peer,
			"--listen-client-urls", clientURLs[i], "--advertise-client-urls", clientURLs[i],
			"--discovery-srv", "cairn.test", "--initial-cluster-token", "srv-test"}
		codes[i], sigs[i] = make(chan int, 1), make(chan os.Signal, 1)
		go func() { codes[i] <- run(args, nil, io.Discard, &logs[i], sigs[i], nil) }()
	}
	defer func() {
		for i := range 3 {
			sigs[i] <- syscall.SIGTERM
			require.Equal(t, 0, <-codes[i], "member %d's exit code; its log:\n%s", i+1, logs[i].String())
		}
	}()
	c, err := clientv3.New(clientv3.Config{Endpoints: clientURLs, DialTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = c.Put(ctx, "k", "v")
	require.NoError(t, err)
	members, err := c.MemberList(ctx)
	require.NoError(t, err)
	require.Len(t, members.Members, 3)
	var rev int64
	for _, u := range clientURLs {
		st, err := c.Status(ctx, u)
		require.NoError(t, err)
		require.Equal(t, members.Header.ClusterId, st.Header.ClusterId, "one cluster")
		rev = max(rev, st.Header.Revision)
	}
	var hashes []uint32
	for _, u := range clientURLs {
		h, err := c.HashKV(ctx, u, rev)
		require.NoError(t, err)
		hashes = append(hashes, h.Hash)
	}
	require.Equal(t, hashes[0], hashes[1])
	require.Equal(t, hashes[0], hashes[2])
}
