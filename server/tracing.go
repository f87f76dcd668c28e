package server

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Tracing is etcd's --experimental-enable-distributed-tracing and its
// settings: a span of every gRPC call, exported over OTLP/gRPC.
type Tracing struct {
	Enabled bool
	// Address is the OTLP collector's (host:port, cleartext, as etcd).
	Address string
	// ServiceName and InstanceID name the member in its spans.
	ServiceName, InstanceID string
	// SamplingRatePerMillion is how many traces a member starts it
	// samples, per million; a call in a trace the client sampled is
	// sampled whatever the rate (0: only those).
	SamplingRatePerMillion int
}

// maxSamplingRatePerMillion is etcd's bound.
const maxSamplingRatePerMillion = 1000000

// Check refuses what etcd refuses.
func (t Tracing) Check() error {
	if !t.Enabled {
		return nil
	}
	switch {
	case t.SamplingRatePerMillion < 0:
		return errors.New("distributed tracing configurition is not valid: (tracing sampling rate must be positive)")
	case t.SamplingRatePerMillion > maxSamplingRatePerMillion:
		return fmt.Errorf("distributed tracing configurition is not valid: (tracing sampling rate must be less than %d)", maxSamplingRatePerMillion)
	}
	return nil
}

// provider makes the tracer provider that exports to the collector.
func (t Tracing) provider(ctx context.Context) (*sdktrace.TracerProvider, error) {
	exporter, err := otlptracegrpc.New(ctx, otlptracegrpc.WithInsecure(), otlptracegrpc.WithEndpoint(t.Address))
	if err != nil {
		return nil, fmt.Errorf("distributed tracing: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", t.ServiceName)}
	if t.InstanceID != "" {
		attrs = append(attrs, attribute.String("service.instance.id", t.InstanceID))
	}
	sampler := sdktrace.NeverSample()
	if t.SamplingRatePerMillion > 0 {
		sampler = sdktrace.TraceIDRatioBased(float64(t.SamplingRatePerMillion) / maxSamplingRatePerMillion)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sdktrace.ParentBased(sampler))), nil
}
