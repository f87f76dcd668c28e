package member

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Probing, as etcd's peer prober: every probeInterval a member asks each
// peer for an empty answer over the peer transport and records the round
// trip (etcd_network_peer_round_trip_time_seconds, by peer).

// requestProbe asks a peer for an empty answer.
const requestProbe byte = 8

// probeInterval is etcd's (its peer read timeout less a second).
const probeInterval = 4 * time.Second

// newRTTMetric is etcd's round-trip histogram.
func newRTTMetric(reg prometheus.Registerer) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "etcd", Subsystem: "network", Name: "peer_round_trip_time_seconds",
		Help: "Round-Trip-Time histogram between peers", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"To"})
	reg.MustRegister(h)
	return h
}

// probeLoop probes every peer every probeInterval until the member stops.
func (m *Member) probeLoop() {
	defer m.done.Done()
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.stopping:
			return
		case <-tick.C:
		}
		for _, id := range m.tr.PeerIDs() {
			ctx, cancel := context.WithTimeout(context.Background(), probeInterval)
			start := time.Now()
			_, err := m.tr.Request(ctx, id, []byte{requestProbe})
			cancel()
			if err == nil {
				m.metrics.peerRTT.WithLabelValues(hexID(id)).Observe(time.Since(start).Seconds())
			}
		}
	}
}
