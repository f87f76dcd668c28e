package jepsen

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSenderID: the proxy reads the sender from cairn's peer hello and
// from etcd's X-Server-From header, and knows no sender otherwise.
func TestSenderID(t *testing.T) {
	hello := append([]byte("CRNP"), 1, 0, 1, 0)
	hello = binary.LittleEndian.AppendUint64(hello, 7)    // cluster
	hello = binary.LittleEndian.AppendUint64(hello, 0xab) // from
	hello = binary.LittleEndian.AppendUint64(hello, 0xcd) // to
	require.Equal(t, uint64(0xab), senderID(bufio.NewReader(strings.NewReader(string(hello)+"frames"))))

	req := "GET /raft/stream/message/1 HTTP/1.1\r\nHost: x\r\nX-Server-From: 8e9e05c52164694d\r\nX-Etcd-Cluster-ID: 1\r\n\r\n"
	require.Equal(t, uint64(0x8e9e05c52164694d), senderID(bufio.NewReader(strings.NewReader(req))))
	require.Zero(t, senderID(bufio.NewReader(strings.NewReader("GET /version HTTP/1.1\r\nHost: x\r\n\r\n"))))
	require.Zero(t, senderID(bufio.NewReader(strings.NewReader("\x16\x03\x01 a TLS hello"))))
}

// echoMember is a member's peer port that echoes what it reads.
func echoMember(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// dialAs connects to the proxy as member id, with cairn's hello.
func dialAs(t *testing.T, addr string, id uint64) net.Conn {
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	hello := append([]byte("CRNP"), 1, 0, 1, 0)
	hello = binary.LittleEndian.AppendUint64(hello, 7)
	hello = binary.LittleEndian.AppendUint64(hello, id)
	hello = binary.LittleEndian.AppendUint64(hello, 99)
	_, err = c.Write(hello)
	require.NoError(t, err)
	got := make([]byte, len(hello))
	_, err = io.ReadFull(c, got) // echoed
	require.NoError(t, err)
	return c
}

// roundTrip says whether msg sent on c comes back within a second (a
// cut link never answers; the bound only ends the wait).
func roundTrip(c net.Conn, msg string) bool {
	if _, err := c.Write([]byte(msg)); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	defer c.SetReadDeadline(time.Time{})
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	return err == nil && string(got) == msg
}

// TestNetLinks: a link cut one way drops what goes that way only, the
// other way still flows; a partition cuts both ways between groups and
// not within them; a connection that dropped bytes is closed on heal; a
// delayed or slow link delivers everything in order.
func TestNetLinks(t *testing.T) {
	nt := NewNet(3, 1)
	t.Cleanup(nt.Close)
	addrs := make([]string, 3)
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		nt.Listen(i, ln, echoMember(t))
		addrs[i] = ln.Addr().String()
		nt.SetID(uint64(100+i), i)
	}
	// Member 0 talks to member 1 (through 1's proxy).
	c := dialAs(t, addrs[1], 100)
	require.True(t, roundTrip(c, "hello"))

	// 1 → 0 cut: 0's bytes reach 1, the echo does not come back.
	nt.Set(1, 0, Link{Cut: true})
	require.False(t, roundTrip(c, "one-way"))
	nt.Heal()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	require.Error(t, err, "a connection that lost bytes is closed on heal")

	// A partition {0} | {1, 2}: 0 cannot reach 1; 2 still can.
	c0, c2 := dialAs(t, addrs[1], 100), dialAs(t, addrs[1], 102)
	nt.Partition([]int{0}, []int{1, 2})
	require.False(t, roundTrip(c0, "cut"))
	require.True(t, roundTrip(c2, "same side"))
	nt.Heal()

	// Delayed and slow links deliver it all, in order.
	nt.Set(0, 1, Link{Delay: 5 * time.Millisecond, Jitter: 10 * time.Millisecond, Slow: 0.2})
	nt.Set(1, 0, Link{Delay: 5 * time.Millisecond, Jitter: 10 * time.Millisecond})
	c = dialAs(t, addrs[1], 100)
	var want strings.Builder
	for i := range 50 {
		want.WriteString(strings.Repeat(string(rune('a'+i%26)), 100))
	}
	_, err = c.Write([]byte(want.String()))
	require.NoError(t, err)
	got := make([]byte, want.Len())
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, want.String(), string(got))
}
