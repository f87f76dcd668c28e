package discovery

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testdns"
)

// withDNS points the resolver at a DNS server of the test's.
func withDNS(t *testing.T) *testdns.Server {
	t.Helper()
	dns, err := testdns.Start()
	require.NoError(t, err)
	saved := Resolver
	Resolver = dns.Resolver()
	t.Cleanup(func() { Resolver = saved; dns.Close() })
	return dns
}

// TestSRVCluster: the cluster comes from both services' records, this
// member named by its advertised URL, the others numbered; a service name
// is a suffix; a member not in the records, or no records, is refused.
func TestSRVCluster(t *testing.T) {
	dns := withDNS(t)
	for i, host := range []string{"m1.cairn.test", "m2.cairn.test", "m3.cairn.test"} {
		dns.AddA(host, net.IPv4(127, 0, 0, byte(i+1)))
	}
	dns.AddSRV("_etcd-server._tcp.cairn.test", testdns.SRV{Target: "m1.cairn.test", Port: 2380})
	dns.AddSRV("_etcd-server._tcp.cairn.test", testdns.SRV{Target: "m2.cairn.test", Port: 2380})
	dns.AddSRV("_etcd-server-ssl._tcp.cairn.test", testdns.SRV{Target: "m3.cairn.test", Port: 2380})
	dns.AddSRV("_etcd-server-other._tcp.cairn.test", testdns.SRV{Target: "m1.cairn.test", Port: 2381})

	got, err := SRVCluster("n2", "cairn.test", "", []string{"http://127.0.0.2:2380"})
	require.NoError(t, err)
	// (Records of equal priority come in a random order, so the numbers
	// the other members get do too.)
	parts := strings.Split(got, ",")
	require.Len(t, parts, 3)
	require.Equal(t, "0=https://m3.cairn.test:2380", parts[0], "the https service first")
	require.Contains(t, parts, "n2=http://m2.cairn.test:2380")
	require.True(t, slices.Contains(parts, "1=http://m1.cairn.test:2380") || slices.Contains(parts, "2=http://m1.cairn.test:2380"), got)

	got, err = SRVCluster("n1", "cairn.test", "other", []string{"http://m1.cairn.test:2381"})
	require.NoError(t, err)
	require.Equal(t, "n1=http://m1.cairn.test:2381", got)

	_, err = SRVCluster("n9", "cairn.test", "", []string{"http://127.0.0.9:2380"})
	require.EqualError(t, err, `cannot find local etcd member "n9" in SRV records`)

	_, err = SRVCluster("n1", "none.test", "", []string{"http://127.0.0.1:2380"})
	require.ErrorContains(t, err, "error querying DNS SRV records for _etcd-server")

	_, err = SRVCluster("n3", "cairn.test", "", []string{"http://127.0.0.3:2380"})
	require.ErrorContains(t, err, "has scheme mismatch with expected peer http://127.0.0.3:2380")
}
