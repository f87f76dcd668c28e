package server

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/cairn-kv/cairn/server/discovery"
	"github.com/cairn-kv/cairn/server/member"
)

// ParseInitialCluster reads --initial-cluster and checks it as etcd does
// at bootstrap: name=URL pairs (a name may have several URLs), this
// member's name among them with exactly its advertised peer URLs. An
// empty --initial-cluster is this member alone (nil).
func ParseInitialCluster(name string, peerURLs []string, cluster string) ([]member.InitialMember, error) {
	if cluster == "" {
		return nil, nil
	}
	var members []member.InitialMember
	index := map[string]int{}
	for _, part := range strings.Split(cluster, ",") {
		n, u, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || n == "" || u == "" {
			return nil, fmt.Errorf("--initial-cluster %q: %q is not name=URL", cluster, part)
		}
		if _, err := url.Parse(u); err != nil {
			return nil, fmt.Errorf("--initial-cluster %q: %w", cluster, err)
		}
		i, seen := index[n]
		if !seen {
			i = len(members)
			index[n] = i
			members = append(members, member.InitialMember{Name: n})
		}
		members[i].PeerURLs = append(members[i].PeerURLs, u)
	}
	// The member's own bootstrap checks: this name present with exactly
	// its advertised peer URLs, no URL twice.
	return members, member.CheckInitialCluster(member.Config{Name: name, InitialAdvertisePeerURLs: peerURLs, InitialCluster: members, Resolver: discovery.Resolver})
}
