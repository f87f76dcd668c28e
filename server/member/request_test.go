package member

import (
	"fmt"
	"math/rand"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// entryID finds the header's id in encoded requests of every shape apply
// meets, whatever comes before and after the header, and never in what
// is not one.
func TestEntryID(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	bytes := func() []byte {
		b := make([]byte, rng.Intn(3)*rng.Intn(300))
		rng.Read(b)
		return b
	}
	for i := range 2000 {
		req := &pb.InternalRaftRequest{}
		switch rng.Intn(5) {
		case 0:
			req.Put = &pb.PutRequest{Key: bytes(), Value: bytes(), Lease: rng.Int63()}
		case 1:
			req.Txn = &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: bytes(), Value: bytes()}}}}}
		case 2:
			req.DeleteRange = &pb.DeleteRangeRequest{Key: bytes(), RangeEnd: bytes()}
		case 3:
			req.LeaseGrant = &pb.LeaseGrantRequest{TTL: rng.Int63(), ID: rng.Int63()}
		}
		if rng.Intn(4) == 0 {
			req.ID = rng.Uint64() // the top-level field 1, not the header's
		}
		id := rng.Uint64() >> uint(rng.Intn(64))
		hasHeader := rng.Intn(8) != 0
		if hasHeader {
			req.Header = &pb.RequestHeader{ID: id, Username: fmt.Sprintf("user%x", bytes()), AuthRevision: rng.Uint64()}
		}
		data, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := entryID(data)
		if want := hasHeader && id != 0; ok != want || (ok && got != id) {
			t.Fatalf("request %d (%v): entryID = %d, %v; want %d, %v", i, req, got, ok, id, want)
		}
		// Cut short, it is not found or is found whole.
		if got, ok := entryID(data[:rng.Intn(len(data)+1)]); ok && got != id {
			t.Fatalf("request %d cut short: entryID = %d, want %d or none", i, got, id)
		}
	}
}
