package rawconn

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// pair returns a server side accepted through Listener and a plain client
// side of a loopback TCP connection.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := Listener{Listener: ln}.Accept()
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	if sc == nil {
		t.Fatal("accept failed")
	}
	c, ok := sc.(*Conn)
	if !ok {
		t.Fatalf("a TCP connection was not wrapped: %T", sc)
	}
	t.Cleanup(func() { c.Close(); client.Close() })
	return c, client
}

// TestEcho sends random messages both ways through a wrapped connection,
// some much larger than the socket buffers, so that writes wait for the
// reader and reads come back short.
func TestEcho(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	c, client := pair(t)
	for i := 0; i < 40; i++ {
		size := 1 + rng.Intn(1<<10)
		if i%4 == 0 {
			size = 1 + rng.Intn(4<<20)
		}
		msg := make([]byte, size)
		rng.Read(msg)
		// client -> wrapped
		errc := make(chan error, 1)
		go func() { _, err := client.Write(msg); errc <- err }()
		got := make([]byte, size)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("message %d (%d bytes): read: %v", i, size, err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("message %d (%d bytes) read back differs", i, size)
		}
		// wrapped -> client
		go func() { _, err := io.ReadFull(client, got); errc <- err }()
		if n, err := c.Write(msg); err != nil || n != size {
			t.Fatalf("message %d: wrote %d of %d: %v", i, n, size, err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("message %d (%d bytes) written differs", i, size)
		}
	}
	if n, err := c.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	if n, err := c.Write(nil); n != 0 || err != nil {
		t.Fatalf("empty write: %d, %v", n, err)
	}
}

func TestEOF(t *testing.T) {
	c, client := pair(t)
	if _, err := client.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	client.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "last" {
		t.Fatalf("read %q, %v; want \"last\" then EOF", got, err)
	}
	if n, err := c.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF: %d, %v", n, err)
	}
}

func TestDeadline(t *testing.T) {
	c, _ := pair(t)
	if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 8))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v, want a timeout", err)
	}
	// A deadline set while a read waits ends the wait.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 8)); errc <- err }()
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("waiting read: %v, want the deadline", err)
	}
	// Writes wait for a full buffer until their deadline.
	big := make([]byte, 64<<20)
	if err := c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Write(big) // the client never reads
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= 64<<20 {
		t.Fatalf("write into a full buffer: %d, %v; want part written, then the deadline", n, err)
	}
}

func TestCloseEndsRead(t *testing.T) {
	c, _ := pair(t)
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 8)); errc <- err }()
	// Whether Close comes before the read starts or while it waits, the
	// read ends with net.ErrClosed.
	c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v", err)
	}
}

// TestResetPeer: the system call's error comes back as net's would, an
// *net.OpError around the errno.
func TestResetPeer(t *testing.T) {
	c, client := pair(t)
	if err := client.(*net.TCPConn).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	client.Close() // RST
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = c.Write(make([]byte, 1<<10))
		if err == nil {
			_, err = c.Read(make([]byte, 8))
		}
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || !(errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		t.Fatalf("after the peer's reset: %v (%T), want an OpError with ECONNRESET or EPIPE", err, err)
	}
}

func TestWrapLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("a connection without a descriptor was wrapped")
	}
}

// TestNoAllocs: a read of data already there and a write that fits
// allocate nothing.
func TestNoAllocs(t *testing.T) {
	c, client := pair(t)
	if _, err := client.Write(make([]byte, 200)); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil { // the data has arrived
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := c.Read(one); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations a read", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := c.Write(one); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations a write", n)
	}
}
