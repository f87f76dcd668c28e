// Package testport picks ports on 127.0.0.1 for tests that start servers
// on fixed addresses (a cluster's members must know each other's URLs
// before any of them listens).
package testport

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"
)

// Free returns n ports free on 127.0.0.1 a moment ago, each handed out
// once in this process. They are below the kernel's ephemeral range
// (32768 up): a port the kernel hands out on its own (a client's local
// port, a :0 listener) is never one of these, so it stays free until the
// test's server binds it.
func Free(t testing.TB, n int) []int {
	t.Helper()
	ports, err := Pick(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

// Pick is Free for a program that is not a test (the fault-injection
// harness's command).
func Pick(n int) ([]int, error) {
	given.Lock()
	defer given.Unlock()
	if given.ports == nil {
		given.ports = map[int]bool{}
		given.rng = rand.New(rand.NewSource(time.Now().UnixNano()))
	}
	var ports []int
	for try := 0; len(ports) < n; try++ {
		if try == 10000 {
			return nil, errors.New("testport: no free ports below 32000 on 127.0.0.1")
		}
		p := 10000 + given.rng.Intn(22000)
		if given.ports[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		given.ports[p] = true
		ports = append(ports, p)
	}
	return ports, nil
}

var given struct {
	sync.Mutex
	ports map[int]bool
	rng   *rand.Rand
}
