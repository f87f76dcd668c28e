package main

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestFlagsAndEnvironment: etcd's flag names, defaults, and ETCD_* /
// CAIRN_* variables for flags not given.
func TestFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{"ETCD_NAME": "from-env", "CAIRN_MAX_TXN_OPS": "7", "ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:1,http://127.0.0.1:2"}
	cfg, _, _, err := parseFlags([]string{"--heartbeat-interval=50", "--election-timeout", "500", "--max-txn-ops=9"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "from-env" || cfg.MaxTxnOps != 9 || cfg.HeartbeatInterval != 50*time.Millisecond || cfg.ElectionTimeout != 500*time.Millisecond ||
		len(cfg.ListenClientURLs) != 2 || cfg.AdvertiseClientURLs[0] != "http://127.0.0.1:2379" {
		t.Fatalf("config %+v", cfg)
	}
	if _, _, _, err := parseFlags([]string{"--no-such-flag"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Fatal("an unknown flag was accepted")
	}
	if _, _, _, err := parseFlags(nil, func(k string) string { return map[string]string{"ETCD_MAX_TXN_OPS": "x"}[k] }, io.Discard); err == nil {
		t.Fatal("a bad environment value was accepted")
	}
}

// TestBinaryServesAndStopsCleanly builds cairn, runs it on 127.0.0.1,
// writes through etcd's client, stops it with SIGTERM (it must exit 0),
// and runs it again over the same data directory: the write is there.
func TestBinaryServesAndStopsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cairn")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	run := func() *exec.Cmd {
		cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--listen-client-urls", url, "--advertise-client-urls", url)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
		return cmd
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := run()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "hello", "world"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	cmd = run()
	c, err = clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Get(ctx, "hello")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "world" {
		t.Fatalf("after restart: %+v %v", resp, err)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("second exit: %v", err)
	}
}
