package jepsen

import (
	"slices"
)

// Summary is a run in numbers, for tables: operations, anomalies, and
// the throughput and latency of successful operations, overall and
// while a fault was on.
type Summary struct {
	Ops             int     `json:"ops"`
	OK              int     `json:"ok"`
	Unknown         int     `json:"unknown"`
	Anomalies       int     `json:"anomalies"`
	Throughput      float64 `json:"ok_per_second"`
	P50             float64 `json:"p50_ms"`
	P99             float64 `json:"p99_ms"`
	FaultThroughput float64 `json:"ok_per_second_in_faults"` // ok ops/s while a fault was on
	FaultP99        float64 `json:"p99_ms_in_faults"`        // ok ops called while a fault was on
}

func summarize(ops []Op, faults []Fault, results []Result) Summary {
	var s Summary
	for _, r := range results {
		if r.Workload == "hashkv" {
			continue
		}
		n, _ := r.Stats["anomalies"].(int)
		s.Anomalies += n
	}
	var all, during []float64
	var end int64
	inFault := func(t int64) bool {
		for _, f := range faults {
			if t >= f.Start && t <= f.End {
				return true
			}
		}
		return false
	}
	var faultTime int64
	for _, f := range faults {
		faultTime += f.End - f.Start
	}
	for _, op := range ops {
		s.Ops++
		end = max(end, op.Return)
		switch op.Status {
		case StatusUnknown:
			s.Unknown++
		case StatusOK:
			s.OK++
			ms := float64(op.Return-op.Call) / 1e6
			all = append(all, ms)
			if inFault(op.Call) {
				during = append(during, ms)
			}
		}
	}
	if end > 0 {
		s.Throughput = float64(s.OK) / (float64(end) / 1e9)
	}
	if faultTime > 0 {
		s.FaultThroughput = float64(len(during)) / (float64(faultTime) / 1e9)
	}
	s.P50, s.P99 = percentile(all, 0.5), percentile(all, 0.99)
	s.FaultP99 = percentile(during, 0.99)
	return s
}

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[min(len(v)-1, int(p*float64(len(v))))]
}
