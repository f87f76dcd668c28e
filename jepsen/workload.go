package jepsen

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
)

// Workload is one kind of traffic with the checker that judges it.
type Workload interface {
	Name() string
	// Setup prepares the keys the workload needs, before any fault.
	Setup(ctx context.Context, r *Run) error
	// Run drives the workload's clients until ctx ends.
	Run(ctx context.Context, r *Run)
	// Check judges what the workload recorded, once the faults have
	// ended and the cluster is healthy again.
	Check(ctx context.Context, r *Run) Result
}

// Result is one checker's verdict.
type Result struct {
	Workload  string         `json:"workload"`
	Valid     bool           `json:"valid"`
	Ops       int            `json:"ops"`
	OK        int            `json:"ok"`
	Fail      int            `json:"fail"`
	Unknown   int            `json:"unknown"`
	Anomalies []string       `json:"anomalies,omitempty"`
	Stats     map[string]any `json:"stats,omitempty"`
}

// maxAnomalies bounds the anomalies a result lists (it counts them all).
const maxAnomalies = 20

func (r *Result) anomaly(format string, args ...any) {
	r.Valid = false
	if len(r.Anomalies) < maxAnomalies {
		r.Anomalies = append(r.Anomalies, fmt.Sprintf(format, args...))
	}
	if r.Stats == nil {
		r.Stats = map[string]any{}
	}
	n, _ := r.Stats["anomalies"].(int)
	r.Stats["anomalies"] = n + 1
}

// count fills the result's operation counts from ops.
func (r *Result) count(ops []Op) {
	for _, op := range ops {
		r.Ops++
		switch op.Status {
		case StatusOK:
			r.OK++
		case StatusFail:
			r.Fail++
		case StatusUnknown:
			r.Unknown++
		}
	}
}

// Workloads are the workloads by name.
var Workloads = []string{"register", "bank", "watch", "lease", "lock"}

// NewWorkload returns the workload called name.
func NewWorkload(name string) (Workload, error) {
	switch name {
	case "register":
		return &register{}, nil
	case "bank":
		return &bank{}, nil
	case "watch":
		return &watch{}, nil
	case "lease":
		return lease{}, nil
	case "lock":
		return lock{}, nil
	}
	return nil, fmt.Errorf("jepsen: no workload %q (have %s)", name, strings.Join(Workloads, ", "))
}

// client is one process of a workload: its id in the history, the member
// it talks to, and its own random source.
type client struct {
	process int
	member  int
	rng     *rand.Rand
}
