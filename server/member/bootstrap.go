package member

import (
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/server/transport"
)

// InitialMember is one member of --initial-cluster: its name and peer
// URLs.
type InitialMember struct {
	Name     string
	PeerURLs []string
}

// MemberID derives a member's id as etcd does: the first 8 bytes (big
// endian) of the SHA-1 of its sorted peer URLs joined, then the cluster
// token. Two clusters with the same URLs and token get the same ids.
func MemberID(peerURLs []string, token string) uint64 {
	urls := slices.Clone(peerURLs)
	slices.Sort(urls)
	sum := sha1.Sum([]byte(strings.Join(urls, "") + token))
	return binary.BigEndian.Uint64(sum[:8])
}

// ClusterID derives a cluster's id as etcd does from its members' ids: the
// first 8 bytes of the SHA-1 of the sorted ids, 8 bytes each, big endian.
func ClusterID(ids []uint64) uint64 {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	b := make([]byte, 0, 8*len(ids))
	for _, id := range ids {
		b = binary.BigEndian.AppendUint64(b, id)
	}
	sum := sha1.Sum(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// IDs returns a single member's id and its cluster's, for a cluster of
// that member alone.
func IDs(peerURLs []string, token string) (member, cluster uint64) {
	member = MemberID(peerURLs, token)
	return member, ClusterID([]uint64{member})
}

// bootstrap is what a new member derives from its configuration: its own
// id, the cluster's, and every initial member with its id.
type bootstrap struct {
	id, cluster uint64
	members     []bootstrapMember // sorted by id
}

type bootstrapMember struct {
	id uint64
	InitialMember
}

// matches refuses a data directory (dir, of member id in cluster) that the
// bootstrap flags describe otherwise.
func (b *bootstrap) matches(dir string, id, cluster uint64) error {
	if b.cluster != cluster {
		return fmt.Errorf("the data directory %s belongs to cluster %x, --initial-cluster describes cluster %x", dir, cluster, b.cluster)
	}
	if b.id != id {
		return fmt.Errorf("the data directory %s is member %x's, the flags make this member %x", dir, id, b.id)
	}
	return nil
}

// CheckInitialCluster checks --initial-cluster against this member's name
// and advertised peer URLs as a new member would at its start (etcd's
// errors): cmd/cairn refuses bad flags with it before starting anything.
func CheckInitialCluster(cfg Config) error {
	_, err := newBootstrap(cfg)
	return err
}

// InitialMembers are the members of a new cluster as cfg describes it
// (--initial-cluster, or cfg's member alone), checked as a new member
// checks them, each with the id it derives from its peer URLs and the
// cluster token: what a snapshot restored for that cluster records.
func InitialMembers(cfg Config) ([]engine.Member, error) {
	b, err := newBootstrap(cfg)
	if err != nil {
		return nil, err
	}
	members := make([]engine.Member, len(b.members))
	for i, m := range b.members {
		members[i] = engine.Member{ID: m.id, Name: m.Name, PeerURLs: m.PeerURLs}
	}
	return members, nil
}

// voters returns the initial members' ids, sorted.
func (b *bootstrap) voters() []uint64 {
	ids := make([]uint64, len(b.members))
	for i, m := range b.members {
		ids[i] = m.id
	}
	return ids
}

// newBootstrap checks --initial-cluster as etcd does and derives the ids:
// this member's name must be in it, with exactly its advertised peer URLs;
// no two members may share a name, an id or a peer URL. An empty cluster
// is this member alone.
func newBootstrap(cfg Config) (*bootstrap, error) {
	initial := cfg.InitialCluster
	if len(initial) == 0 {
		initial = []InitialMember{{Name: cfg.Name, PeerURLs: cfg.InitialAdvertisePeerURLs}}
	}
	b := &bootstrap{}
	names, urls := map[string]bool{}, map[string]bool{}
	found := false
	for _, im := range initial {
		if im.Name == "" || len(im.PeerURLs) == 0 {
			return nil, fmt.Errorf("--initial-cluster: a member without a name or peer URLs")
		}
		if names[im.Name] {
			return nil, fmt.Errorf("--initial-cluster: member name %q given twice", im.Name)
		}
		names[im.Name] = true
		for _, u := range im.PeerURLs {
			if urls[u] {
				return nil, fmt.Errorf("--initial-cluster: peer URL %s given twice", u)
			}
			urls[u] = true
		}
		id := MemberID(im.PeerURLs, cfg.InitialClusterToken)
		if slices.ContainsFunc(b.members, func(m bootstrapMember) bool { return m.id == id }) {
			return nil, fmt.Errorf("--initial-cluster: two members have id %x", id)
		}
		b.members = append(b.members, bootstrapMember{id: id, InitialMember: im})
		if im.Name == cfg.Name {
			found = true
			b.id = id
			if !urlsEqual(cfg.Resolver, cfg.InitialAdvertisePeerURLs, im.PeerURLs) {
				return nil, fmt.Errorf("--initial-cluster has %s but missing from --initial-advertise-peer-urls=%s",
					strings.Join(im.PeerURLs, ","), strings.Join(cfg.InitialAdvertisePeerURLs, ","))
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("couldn't find local name %q in the initial cluster configuration", cfg.Name)
	}
	slices.SortFunc(b.members, func(x, y bootstrapMember) int { return compareU64(x.id, y.id) })
	b.cluster = ClusterID(b.voters())
	return b, nil
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fetchCluster asks the members --initial-cluster names (but this one)
// for their cluster's members, as a member joining a running cluster does
// (--initial-cluster-state existing): its own id is the one the cluster
// added at its advertised peer URLs, which it must not have started with
// before.
func fetchCluster(cfg Config) (id, cluster uint64, members []engine.Member, err error) {
	var errs []error
	for _, im := range cfg.InitialCluster {
		if im.Name == cfg.Name {
			continue
		}
		for _, u := range im.PeerURLs {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c, list, ferr := transport.FetchMembers(ctx, u, cfg.PeerTLS)
			cancel()
			if ferr == nil {
				ferr = json.Unmarshal(list, &members)
			}
			if ferr != nil || len(members) == 0 {
				errs = append(errs, fmt.Errorf("%s: %v", u, cmp.Or(ferr, errors.New("no members"))))
				continue
			}
			want := slices.Sorted(slices.Values(cfg.InitialAdvertisePeerURLs))
			for _, mem := range members {
				if !slices.Equal(slices.Sorted(slices.Values(mem.PeerURLs)), want) {
					continue
				}
				if mem.Name != "" && mem.Name != cfg.Name {
					return 0, 0, nil, fmt.Errorf("member %x at %s has already started, as %q", mem.ID, strings.Join(want, ","), mem.Name)
				}
				return mem.ID, c, members, nil
			}
			return 0, 0, nil, fmt.Errorf("the cluster has no member at peer URLs %s: add it first (etcdctl member add)", strings.Join(want, ","))
		}
	}
	return 0, 0, nil, fmt.Errorf("cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs (%w)", errors.Join(errs...))
}

// The WAL's metadata record, little-endian: this member's id, the
// cluster's, then (from format 2) the voters the log starts from:
//
//	id:u64 cluster:u64 [nVoters:u32 voter:u64*]
//
// A record of 16 bytes is a cluster of this member alone.
func encodeWALMetadata(id, cluster uint64, voters []uint64) []byte {
	b := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, id), cluster)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(voters)))
	for _, v := range voters {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

var errBadMetadata = errors.New("the WAL's metadata record is damaged")

// DecodeWALMetadata reads the WAL's metadata record: the member's id, its
// cluster's, and the voters the log starts from (none for a member that
// joined a running cluster).
func DecodeWALMetadata(b []byte) (id, cluster uint64, voters []uint64, err error) {
	if len(b) < 16 {
		return 0, 0, nil, errBadMetadata
	}
	id, cluster = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
	if len(b) == 16 {
		return id, cluster, []uint64{id}, nil
	}
	if len(b) < 20 {
		return 0, 0, nil, errBadMetadata
	}
	n := binary.LittleEndian.Uint32(b[16:])
	if uint64(len(b)) != 20+8*uint64(n) {
		return 0, 0, nil, errBadMetadata
	}
	for i := range int(n) {
		voters = append(voters, binary.LittleEndian.Uint64(b[20+8*i:]))
	}
	return id, cluster, voters, nil
}

// urlsEqual reports whether two lists of peer URLs are the same, as etcd
// compares them: as given, or with every host resolved (so that
// --initial-cluster, or SRV records, may name by host name a member that
// advertises its address).
func urlsEqual(r *net.Resolver, a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	if slices.Equal(a, b) {
		return true
	}
	if len(a) != len(b) {
		return false
	}
	if r == nil {
		r = net.DefaultResolver
	}
	resolve := func(us []string) ([]string, bool) {
		out := make([]string, len(us))
		for i, s := range us {
			u, err := url.Parse(s)
			if err != nil {
				return nil, false
			}
			host, port, err := net.SplitHostPort(u.Host)
			if err != nil {
				return nil, false
			}
			if net.ParseIP(host) == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				ips, err := r.LookupIPAddr(ctx, host)
				cancel()
				if err != nil || len(ips) == 0 {
					return nil, false
				}
				host = ips[0].IP.String()
			}
			out[i] = u.Scheme + "://" + net.JoinHostPort(host, port)
		}
		slices.Sort(out)
		return out, true
	}
	ra, okA := resolve(a)
	rb, okB := resolve(b)
	return okA && okB && slices.Equal(ra, rb)
}
