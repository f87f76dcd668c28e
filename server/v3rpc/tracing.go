package v3rpc

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// tracing makes a server span of each gRPC call, continuing the trace a
// client's W3C trace context (and baggage) names, as etcd's otelgrpc
// interceptors do with --experimental-enable-distributed-tracing.
type tracing struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
}

// SetTracer traces every call with tp's tracer from now on (before the
// services serve).
func (s *Services) SetTracer(tp trace.TracerProvider) {
	s.tracing = &tracing{tracer: tp.Tracer("go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"),
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
}

// metadataCarrier reads a call's incoming metadata as a text map.
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }
func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// start begins a call's span.
func (tr *tracing) start(ctx context.Context, fullMethod string) (context.Context, trace.Span) {
	md, _ := metadata.FromIncomingContext(ctx)
	ctx = tr.propagator.Extract(ctx, metadataCarrier(md))
	svc, method := splitMethod(fullMethod)
	return tr.tracer.Start(ctx, strings.TrimPrefix(fullMethod, "/"), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("rpc.system", "grpc"), attribute.String("rpc.service", svc), attribute.String("rpc.method", method)))
}

// end ends a call's span with its status.
func end(span trace.Span, err error) {
	st := status.Convert(err)
	span.SetAttributes(attribute.Int64("rpc.grpc.status_code", int64(st.Code())))
	if err != nil {
		span.SetStatus(otelcodes.Error, st.Message())
	}
	span.End()
}

func (tr *tracing) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, span := tr.start(ctx, info.FullMethod)
	resp, err := h(ctx, req)
	end(span, err)
	return resp, err
}

// tracedStream carries a stream's span in its context.
type tracedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s tracedStream) Context() context.Context { return s.ctx }

func (tr *tracing) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, span := tr.start(ss.Context(), info.FullMethod)
	err := h(srv, tracedStream{ss, ctx})
	end(span, err)
	return err
}
