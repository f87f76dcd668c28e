package server

import (
	"context"
	"encoding/hex"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// collector is an OTLP trace collector on 127.0.0.1 that keeps the spans
// it is sent: their names, trace ids and resources' attributes.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []collected
}

type collected struct {
	name, traceID string
	resource      map[string]string
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		attrs := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			attrs[kv.Key] = kv.GetValue().GetStringValue()
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				c.spans = append(c.spans, collected{name: sp.Name, traceID: hex.EncodeToString(sp.TraceId), resource: attrs})
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (c *collector) named(name string) []collected {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []collected
	for _, s := range c.spans {
		if s.name == name {
			out = append(out, s)
		}
	}
	return out
}

func startCollector(t *testing.T) (*collector, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	c := &collector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return c, ln.Addr().String()
}

// TestDistributedTracing: with --experimental-enable-distributed-tracing a
// member exports a span of each gRPC call to the OTLP collector, named by
// the method, its resource the service name and instance id; at a
// sampling rate of 0 it starts no trace of its own but follows one a
// client sampled (W3C trace context in the call's metadata).
func TestDistributedTracing(t *testing.T) {
	col, addr := startCollector(t)
	for _, rate := range []int{1000000, 0} {
		s, c, stop := startMemberWith(t, filepath.Join(t.TempDir(), "m"), func(cfg *Config) {
			cfg.Tracing = Tracing{Enabled: true, Address: addr, ServiceName: "etcd", InstanceID: "m1", SamplingRatePerMillion: rate}
		})
		_ = s
		_, err := c.Put(ctxT(t), "traced", "v")
		require.NoError(t, err)
		const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
		ctx := metadata.AppendToOutgoingContext(ctxT(t), "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		_, err = c.Get(ctx, "traced")
		require.NoError(t, err)
		stop() // exports what is left
		puts, gets := col.named("etcdserverpb.KV/Put"), col.named("etcdserverpb.KV/Range")
		if rate > 0 {
			require.NotEmpty(t, puts, "a span of the put")
			require.Equal(t, map[string]string{"service.name": "etcd", "service.instance.id": "m1"}, puts[0].resource)
		} else {
			require.Len(t, puts, 1, "no span of the put at rate 0 (the one from the first member only)")
		}
		require.NotEmpty(t, gets)
		require.Equal(t, traceID, gets[len(gets)-1].traceID, "the client's trace continued")
	}
}
