package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// localMembers are the Procfile's three members, by the offset of their
// client port from the base port (etcd's 2379, 22379, 32379; peers on
// 12380, 22380, 32380).
var localMembers = []struct {
	name             string
	client, peerPort int
}{{"infra1", 0, 10001}, {"infra2", 20000, 20001}, {"infra3", 30000, 30001}}

// localCluster runs `cairn local-cluster`: the Procfile's three members,
// each a cairn process of its own (this binary), until a signal on sig
// (passed on to them) or until one of them ends. It returns the exit code.
func localCluster(args []string, stderr io.Writer, sig <-chan os.Signal) int {
	fs := flag.NewFlagSet("local-cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("data-dir", ".", "Directory for the members' data directories (infra1.cairn, ...).")
	base := fs.Int("base-port", 2379, "The first member's client port; the others' ports follow the Procfile's pattern from it.")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *base <= 0 || *base+30001 > 65535 {
		fmt.Fprintf(stderr, "cairn local-cluster: --base-port %d: the ports would pass 65535\n", *base)
		return 2
	}
	bin, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "cairn local-cluster:", err)
		return 1
	}
	url := func(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }
	var initial []string
	for _, m := range localMembers {
		initial = append(initial, m.name+"="+url(*base+m.peerPort))
	}
	var cmds []*exec.Cmd
	done := make(chan int, len(localMembers))
	stopAll := func() {
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	for i, m := range localMembers {
		c := exec.Command(bin, "--name", m.name, "--data-dir", filepath.Join(*dir, m.name+".cairn"),
			"--listen-client-urls", url(*base+m.client), "--advertise-client-urls", url(*base+m.client),
			"--listen-peer-urls", url(*base+m.peerPort), "--initial-advertise-peer-urls", url(*base+m.peerPort),
			"--initial-cluster-token", "etcd-cluster-1", "--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--enable-pprof")
		c.Stdout, c.Stderr = stderr, stderr
		dieWithParent(c)
		if err := c.Start(); err != nil {
			fmt.Fprintln(stderr, "cairn local-cluster:", err)
			stopAll()
			for range cmds {
				<-done
			}
			return 1
		}
		cmds = append(cmds, c)
		go func() {
			err := c.Wait()
			code := 0
			if err != nil {
				code = 1
			}
			fmt.Fprintf(stderr, "cairn local-cluster: %s exited: %v\n", localMembers[i].name, err)
			done <- code
		}()
	}
	var endpoints []string
	for _, m := range localMembers {
		endpoints = append(endpoints, url(*base+m.client))
	}
	fmt.Fprintf(stderr, "cairn local-cluster: three members; etcdctl --endpoints=%s member list\n", strings.Join(endpoints, ","))
	// Until a signal, or until a member ends on its own (then the others
	// are stopped and the exit code is 1).
	code, exited := 0, 0
	select {
	case <-sig:
	case <-done:
		exited, code = 1, 1
	}
	stopAll()
	for ; exited < len(cmds); exited++ {
		if c := <-done; c != 0 {
			code = 1
		}
	}
	return code
}
