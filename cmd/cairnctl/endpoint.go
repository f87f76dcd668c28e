package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (c *ctl) endpointCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint <subcommand>", Short: "Endpoint related commands"}
	var cluster bool
	var rev int64
	cmd.PersistentFlags().BoolVar(&cluster, "cluster", false, "use all endpoints from the cluster member list")
	hashkv := &cobra.Command{
		Use:   "hashkv",
		Short: "Prints the KV history hash for each endpoint in --endpoints",
		RunE: func(cmd *cobra.Command, args []string) error {
			eps, err := c.clusterEndpoints(cluster)
			if err != nil {
				return err
			}
			cli, err := c.client()
			if err != nil {
				return err
			}
			list := []epHashKV{}
			var ferr error
			for _, ep := range eps {
				ctx, cancel := c.commandCtx()
				resp, err := cli.HashKV(ctx, ep, rev)
				cancel()
				if err != nil {
					ferr = err
					fmt.Fprintf(c.errOut, "Failed to get the hash of endpoint %s (%v)\n", ep, err)
					continue
				}
				// (hash_revision is newer than the API etcdctl v3.5 prints.)
				r := &pb.HashKVResponse{Header: resp.Header, Hash: resp.Hash, CompactRevision: resp.CompactRevision}
				list = append(list, epHashKV{ep, r})
			}
			if err := c.p.show(hashKVView(list)); err != nil {
				return err
			}
			if ferr != nil {
				return fail(exitError, ferr)
			}
			return nil
		},
	}
	hashkv.PersistentFlags().Int64Var(&rev, "rev", 0, "maximum revision to hash (default: all revisions)")
	cmd.AddCommand(
		&cobra.Command{
			Use:   "health",
			Short: "Checks the healthiness of endpoints specified in `--endpoints` flag",
			RunE: func(cmd *cobra.Command, args []string) error {
				eps, err := c.clusterEndpoints(cluster)
				if err != nil {
					return err
				}
				list := c.health(eps)
				if err := c.p.show(healthView(list, c.errOut)); err != nil {
					return err
				}
				for _, h := range list {
					if h.Error != "" {
						return fail(exitError, errors.New("unhealthy cluster"))
					}
				}
				return nil
			},
		},
		&cobra.Command{
			Use:   "status",
			Short: "Prints out the status of endpoints specified in `--endpoints` flag",
			Long: `When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.
The items in the lists are endpoint, ID, version, db size, is leader, is learner, raft term, raft index, raft applied index, errors.
`,
			RunE: func(cmd *cobra.Command, args []string) error {
				eps, err := c.clusterEndpoints(cluster)
				if err != nil {
					return err
				}
				cli, err := c.client()
				if err != nil {
					return err
				}
				list, failed := c.statuses(cli, eps)
				if err := c.p.show(statusView(list)); err != nil {
					return err
				}
				if failed {
					return silentExit(exitError)
				}
				return nil
			},
		},
		hashkv,
	)
	return cmd
}

// clusterEndpoints are the endpoints a command goes to one by one: every
// member's client URLs with --cluster, else the global endpoints.
func (c *ctl) clusterEndpoints(cluster bool) ([]string, error) {
	if !cluster {
		return c.g.endpoints, nil
	}
	cli, err := c.client()
	if err != nil {
		return nil, withCode(exitError, err)
	}
	ctx, cancel := c.commandCtx()
	defer cancel()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		return nil, failf(exitError, "failed to fetch endpoints from etcd cluster member list: %v", err)
	}
	var eps []string
	for _, m := range resp.Members {
		eps = append(eps, m.ClientURLs...)
	}
	return eps, nil
}

// epHealth is one endpoint's health, as etcdctl writes it in JSON.
type epHealth struct {
	Ep     string `json:"endpoint"`
	Health bool   `json:"health"`
	Took   string `json:"took"`
	Error  string `json:"error,omitempty"`
}

// health checks each endpoint at once, with a client of its own: healthy
// when a linearizable get of "health" succeeds (or is refused for lack of
// permission: the member answered) and it raises no alarm.
func (c *ctl) health(eps []string) []epHealth {
	list := make([]epHealth, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			list[i] = c.healthOf(ep)
		}()
	}
	wg.Wait()
	return list
}

func (c *ctl) healthOf(ep string) epHealth {
	cfg, err := c.config([]string{ep})
	if err != nil {
		return epHealth{Ep: ep, Error: err.Error()}
	}
	cli, err := c.dial(cfg)
	if err != nil {
		return epHealth{Ep: ep, Error: err.Error()}
	}
	start := time.Now()
	ctx, cancel := c.commandCtx()
	defer cancel()
	_, err = cli.Get(ctx, "health")
	h := epHealth{Ep: ep, Took: time.Since(start).String()}
	if err == nil || errors.Is(err, rpctypes.ErrPermissionDenied) {
		h.Health = true
	} else {
		h.Error = err.Error()
		return h
	}
	alarms, err := cli.AlarmList(ctx)
	switch {
	case err != nil:
		h.Health, h.Error = false, "Unable to fetch the alarm list"
	case len(alarms.Alarms) > 0:
		h.Health = false
		h.Error = "Active Alarm(s): "
		for _, a := range alarms.Alarms {
			switch a.Alarm {
			case pb.AlarmType_NOSPACE, pb.AlarmType_CORRUPT:
				h.Error += a.Alarm.String() + " "
			default:
				h.Error += "UNKNOWN "
			}
		}
	}
	return h
}

func healthView(list []epHealth, errOut io.Writer) view {
	return view{
		msg:    list,
		noWire: true,
		simple: func(p *printer) {
			for _, h := range list {
				if h.Error == "" {
					fmt.Fprintf(p.w, "%s is healthy: successfully committed proposal: took = %v\n", h.Ep, h.Took)
				} else {
					fmt.Fprintf(errOut, "%s is unhealthy: failed to commit proposal: %v\n", h.Ep, h.Error)
				}
			}
		},
		fields: func(f *fields) {
			for _, h := range list {
				f.s("Endpoint", h.Ep)
				f.n("Health", h.Health)
				f.n("Took", h.Took)
				f.n("Error", h.Error)
				f.blank()
			}
		},
		table: func() *table {
			t := &table{header: []string{"endpoint", "health", "took", "error"}}
			for _, h := range list {
				t.rows = append(t.rows, []string{h.Ep, fmt.Sprint(h.Health), h.Took, h.Error})
			}
			return t
		},
	}
}

// epStatus is one endpoint's status, as etcdctl writes it in JSON.
type epStatus struct {
	Ep   string             `json:"Endpoint"`
	Resp *pb.StatusResponse `json:"Status"`
}

// statuses asks each endpoint for its status; failed says one did not
// answer (said on stderr).
func (c *ctl) statuses(cli *clientv3.Client, eps []string) (list []epStatus, failed bool) {
	list = []epStatus{}
	for _, ep := range eps {
		ctx, cancel := c.commandCtx()
		resp, err := cli.Status(ctx, ep)
		cancel()
		if err != nil {
			failed = true
			fmt.Fprintf(c.errOut, "Failed to get the status of endpoint %s (%v)\n", ep, err)
			continue
		}
		// The fields of etcd v3.5's API (the storage version, quota and
		// downgrade are newer).
		r := &pb.StatusResponse{Header: resp.Header, Version: resp.Version, DbSize: resp.DbSize, Leader: resp.Leader,
			RaftIndex: resp.RaftIndex, RaftTerm: resp.RaftTerm, RaftAppliedIndex: resp.RaftAppliedIndex,
			Errors: resp.Errors, DbSizeInUse: resp.DbSizeInUse, IsLearner: resp.IsLearner}
		list = append(list, epStatus{ep, r})
	}
	return list, failed
}

func statusView(list []epStatus) view {
	rows := func() *table {
		t := &table{header: []string{"endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term",
			"raft index", "raft applied index", "errors"}}
		for _, s := range list {
			r := s.Resp
			t.rows = append(t.rows, []string{s.Ep, fmt.Sprintf("%x", r.Header.MemberId), r.Version,
				siBytes(uint64(r.DbSize)), fmt.Sprint(r.Leader == r.Header.MemberId), fmt.Sprint(r.IsLearner),
				fmt.Sprint(r.RaftTerm), fmt.Sprint(r.RaftIndex), fmt.Sprint(r.RaftAppliedIndex), strings.Join(r.Errors, ", ")})
		}
		return t
	}
	return view{
		msg:    list,
		noWire: true,
		simple: func(p *printer) { rows().simple(p.w) },
		fields: func(f *fields) {
			for _, s := range list {
				r := s.Resp
				f.header(r.Header)
				f.s("Version", r.Version)
				f.n("DBSize", r.DbSize)
				f.n("Leader", r.Leader)
				f.n("IsLearner", r.IsLearner)
				f.n("RaftIndex", r.RaftIndex)
				f.n("RaftAppliedIndex", r.RaftAppliedIndex)
				f.n("Errors", r.Errors)
				f.s("Endpoint", s.Ep)
				f.blank()
			}
		},
		table: rows,
	}
}

// epHashKV is one endpoint's hash, as etcdctl writes it in JSON.
type epHashKV struct {
	Ep   string             `json:"Endpoint"`
	Resp *pb.HashKVResponse `json:"HashKV"`
}

func hashKVView(list []epHashKV) view {
	rows := func() *table {
		t := &table{header: []string{"endpoint", "hash"}}
		for _, h := range list {
			t.rows = append(t.rows, []string{h.Ep, fmt.Sprint(h.Resp.Hash)})
		}
		return t
	}
	return view{
		msg:    list,
		noWire: true,
		simple: func(p *printer) { rows().simple(p.w) },
		fields: func(f *fields) {
			for _, h := range list {
				f.header(h.Resp.Header)
				f.s("Endpoint", h.Ep)
				f.n("Hash", h.Resp.Hash)
				f.blank()
			}
		},
		table: rows,
	}
}
