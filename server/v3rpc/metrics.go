package v3rpc

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// rpcMetrics count the calls of the gRPC services, as go-grpc-prometheus
// does in etcd: grpc_server_started_total and grpc_server_handled_total,
// by type, service, method (and code); with --metrics=extensive, their
// durations too (grpc_server_handling_seconds).
type rpcMetrics struct {
	grpcStarted  *prometheus.CounterVec
	grpcHandled  *prometheus.CounterVec
	grpcHandling *prometheus.HistogramVec // nil unless extensive
	grpcMsgRecv  *prometheus.CounterVec
	grpcMsgSent  *prometheus.CounterVec
	// Client message bytes, as etcd counts them in its codec.
	bytesRecv, bytesSent prometheus.Counter
	rpcs                 sync.Map // full method name -> *rpcCounters
}

// newRPCMetrics registers the counters with reg.
func newRPCMetrics(reg prometheus.Registerer, extensive bool) *rpcMetrics {
	mt := &rpcMetrics{
		grpcStarted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "grpc_server_started_total",
			Help: "Total number of RPCs started on the server."}, []string{"grpc_type", "grpc_service", "grpc_method"}),
		grpcHandled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "grpc_server_handled_total",
			Help: "Total number of RPCs completed on the server, regardless of success or failure."},
			[]string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}),
	}
	mt.grpcMsgRecv = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "grpc_server_msg_received_total",
		Help: "Total number of RPC stream messages received on the server."}, []string{"grpc_type", "grpc_service", "grpc_method"})
	mt.grpcMsgSent = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "grpc_server_msg_sent_total",
		Help: "Total number of gRPC stream messages sent by the server."}, []string{"grpc_type", "grpc_service", "grpc_method"})
	mt.bytesRecv = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "network", Name: "client_grpc_received_bytes_total",
		Help: "The total number of bytes received from grpc clients."})
	mt.bytesSent = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "network", Name: "client_grpc_sent_bytes_total",
		Help: "The total number of bytes sent to grpc clients."})
	reg.MustRegister(mt.grpcStarted, mt.grpcHandled, mt.grpcMsgRecv, mt.grpcMsgSent, mt.bytesRecv, mt.bytesSent)
	if extensive {
		mt.grpcHandling = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "grpc_server_handling_seconds",
			Help:    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			Buckets: prometheus.DefBuckets}, []string{"grpc_type", "grpc_service", "grpc_method"})
		reg.MustRegister(mt.grpcHandling)
	}
	return mt
}

// splitMethod splits "/etcdserverpb.KV/Range" into service and method.
func splitMethod(full string) (string, string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.Index(full, "/"); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// rpcCounters are one method's counters: started, and handled by code.
type rpcCounters struct {
	started          prometheus.Counter
	handled          [17]prometheus.Counter // codes.OK..codes.Unauthenticated
	vec              *prometheus.CounterVec // for a code past those
	handling         prometheus.Observer    // nil unless extensive
	recv, sent       prometheus.Counter     // messages received and sent
	bytesRecv        prometheus.Counter     // their bytes, all methods together
	bytesSent        prometheus.Counter
	typ, svc, method string
}

// counters returns a method's counters, made on its first call; looking
// the labels up on every call would cost more than the count.
func (mt *rpcMetrics) counters(typ, fullMethod string) *rpcCounters {
	if rc, ok := mt.rpcs.Load(fullMethod); ok {
		return rc.(*rpcCounters)
	}
	svc, method := splitMethod(fullMethod)
	rc := &rpcCounters{started: mt.grpcStarted.WithLabelValues(typ, svc, method), vec: mt.grpcHandled, typ: typ, svc: svc, method: method}
	for i := range rc.handled {
		rc.handled[i] = mt.grpcHandled.WithLabelValues(typ, svc, method, codes.Code(i).String())
	}
	if mt.grpcHandling != nil {
		rc.handling = mt.grpcHandling.WithLabelValues(typ, svc, method)
	}
	rc.recv, rc.sent = mt.grpcMsgRecv.WithLabelValues(typ, svc, method), mt.grpcMsgSent.WithLabelValues(typ, svc, method)
	rc.bytesRecv, rc.bytesSent = mt.bytesRecv, mt.bytesSent
	got, _ := mt.rpcs.LoadOrStore(fullMethod, rc)
	return got.(*rpcCounters)
}

// begin is when a call began, if its duration is measured.
func (rc *rpcCounters) begin() time.Time {
	rc.started.Inc()
	if rc.handling == nil {
		return time.Time{}
	}
	return time.Now()
}

func (rc *rpcCounters) done(start time.Time, err error) {
	if rc.handling != nil {
		rc.handling.Observe(time.Since(start).Seconds())
	}
	code := status.Code(err)
	if int(code) < len(rc.handled) {
		rc.handled[code].Inc()
	} else {
		rc.vec.WithLabelValues(rc.typ, rc.svc, rc.method, code.String()).Inc()
	}
}

func (mt *rpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	rc := mt.counters("unary", info.FullMethod)
	start := rc.begin()
	rc.recv.Inc()
	rc.bytesRecv.Add(float64(msgSize(req)))
	resp, err := h(ctx, req)
	if err == nil {
		rc.sent.Inc()
		rc.bytesSent.Add(float64(msgSize(resp)))
	}
	rc.done(start, err)
	return resp, err
}

func (mt *rpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	typ := "bidi_stream"
	switch {
	case info.IsClientStream && !info.IsServerStream:
		typ = "client_stream"
	case !info.IsClientStream && info.IsServerStream:
		typ = "server_stream"
	}
	rc := mt.counters(typ, info.FullMethod)
	start := rc.begin()
	err := h(srv, countingStream{ss, rc})
	rc.done(start, err)
	return err
}

// countingStream counts a stream's messages, as go-grpc-prometheus does.
type countingStream struct {
	grpc.ServerStream
	rc *rpcCounters
}

func (s countingStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	if err == nil {
		s.rc.sent.Inc()
		s.rc.bytesSent.Add(float64(msgSize(m)))
	}
	return err
}

func (s countingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.rc.recv.Inc()
		s.rc.bytesRecv.Add(float64(msgSize(m)))
	}
	return err
}

// msgSize is a message's encoded size.
func msgSize(m any) int {
	if pm, ok := m.(proto.Message); ok {
		return proto.Size(pm)
	}
	return 0
}
