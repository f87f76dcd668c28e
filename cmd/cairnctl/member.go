package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (c *ctl) memberCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "member <subcommand>", Short: "Membership related commands"}
	var peerURLs string
	var learner bool
	add := &cobra.Command{
		Use:   "add <memberName> [options]",
		Short: "Adds a member into the cluster",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return fail(exitBadArgs, errors.New("member name not provided"))
			}
			if len(args) > 1 {
				msg := "too many arguments"
				for _, s := range args {
					if strings.HasPrefix(strings.ToLower(s), "http") {
						msg += ", did you mean --peer-urls=" + s
					}
				}
				return fail(exitBadArgs, errors.New(msg))
			}
			name := args[0]
			if peerURLs == "" {
				return fail(exitBadArgs, errors.New("member peer urls not provided"))
			}
			urls := strings.Split(peerURLs, ",")
			cli, err := c.client()
			if err != nil {
				return err
			}
			ctx, cancel := c.commandCtx()
			var resp *clientv3.MemberAddResponse
			if learner {
				resp, err = cli.MemberAddAsLearner(ctx, urls)
			} else {
				resp, err = cli.MemberAdd(ctx, urls)
			}
			cancel()
			if err != nil {
				return fail(exitError, err)
			}
			r := (*pb.MemberAddResponse)(resp)
			if err := c.p.show(view{
				msg: r,
				simple: func(p *printer) {
					fmt.Fprintf(p.w, "Member %16x added to cluster %16x\n", r.Member.ID, r.Header.ClusterId)
				},
			}); err != nil {
				return err
			}
			if c.p.format != "simple" {
				return nil
			}
			// The lines that start the new member, as its environment.
			var conf []string
			for _, m := range r.Members {
				n := m.Name
				if m.ID == r.Member.ID {
					n = name
				}
				for _, u := range m.PeerURLs {
					conf = append(conf, n+"="+u)
				}
			}
			fmt.Fprint(c.out, "\n")
			fmt.Fprintf(c.out, "ETCD_NAME=%q\n", name)
			fmt.Fprintf(c.out, "ETCD_INITIAL_CLUSTER=%q\n", strings.Join(conf, ","))
			fmt.Fprintf(c.out, "ETCD_INITIAL_ADVERTISE_PEER_URLS=%q\n", peerURLs)
			fmt.Fprintf(c.out, "ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n")
			return nil
		},
	}
	add.Flags().StringVar(&peerURLs, "peer-urls", "", "comma separated peer URLs for the new member.")
	add.Flags().BoolVar(&learner, "learner", false, "indicates if the new member is raft learner")

	var updateURLs string
	update := &cobra.Command{
		Use:   "update <memberID> [options]",
		Short: "Updates a member in the cluster",
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := memberID(args)
			if err != nil {
				return err
			}
			if updateURLs == "" {
				return fail(exitBadArgs, errors.New("member peer urls not provided"))
			}
			return c.call(func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.MemberUpdate(ctx, id, strings.Split(updateURLs, ","))
				if err != nil {
					return err
				}
				return c.p.show(memberChangeView((*pb.MemberUpdateResponse)(resp), (*pb.MemberUpdateResponse)(resp).Header, id, "updated in"))
			})
		},
	}
	update.Flags().StringVar(&updateURLs, "peer-urls", "", "comma separated peer URLs for the updated member.")

	cmd.AddCommand(add,
		&cobra.Command{
			Use:   "remove <memberID>",
			Short: "Removes a member from the cluster",
			RunE: func(cmd *cobra.Command, args []string) error {
				id, err := memberID(args)
				if err != nil {
					return err
				}
				return c.call(func(ctx context.Context, cli *clientv3.Client) error {
					resp, err := cli.MemberRemove(ctx, id)
					if err != nil {
						return err
					}
					return c.p.show(memberChangeView((*pb.MemberRemoveResponse)(resp), (*pb.MemberRemoveResponse)(resp).Header, id, "removed from"))
				})
			},
		},
		update,
		&cobra.Command{
			Use:   "list",
			Short: "Lists all members in the cluster",
			Long: `When --write-out is set to simple, this command prints out comma-separated member lists for each endpoint.
The items in the lists are ID, Status, Name, Peer Addrs, Client Addrs, Is Learner.
`,
			RunE: func(cmd *cobra.Command, args []string) error {
				return c.call(func(ctx context.Context, cli *clientv3.Client) error {
					resp, err := cli.MemberList(ctx)
					if err != nil {
						return err
					}
					return c.p.show(memberListView((*pb.MemberListResponse)(resp), c.p.hex))
				})
			},
		},
		&cobra.Command{
			Use:   "promote <memberID>",
			Short: "Promotes a non-voting member in the cluster",
			Long:  "Promotes a non-voting learner member to a voting one in the cluster.\n",
			RunE: func(cmd *cobra.Command, args []string) error {
				id, err := memberID(args)
				if err != nil {
					return err
				}
				return c.call(func(ctx context.Context, cli *clientv3.Client) error {
					resp, err := cli.MemberPromote(ctx, id)
					if err != nil {
						return err
					}
					return c.p.show(memberChangeView((*pb.MemberPromoteResponse)(resp), (*pb.MemberPromoteResponse)(resp).Header, id, "promoted in"))
				})
			},
		},
	)
	return cmd
}

// memberChangeView is a membership change's response: "Member <id>
// <verb> cluster <cluster>" (ids space-padded to 16), as etcdctl prints it.
func memberChangeView(msg any, h *pb.ResponseHeader, id uint64, verb string) view {
	return view{msg: msg, simple: func(p *printer) {
		fmt.Fprintf(p.w, "Member %16x %s cluster %16x\n", id, verb, h.ClusterId)
	}}
}

// memberID parses the one argument, a member ID in hex.
func memberID(args []string) (uint64, error) {
	if len(args) != 1 {
		return 0, fail(exitBadArgs, errors.New("member ID is not provided"))
	}
	id, err := strconv.ParseUint(args[0], 16, 64)
	if err != nil {
		return 0, failf(exitBadArgs, "bad member ID arg (%v), expecting ID in Hex", err)
	}
	return id, nil
}

func memberListView(r *pb.MemberListResponse, hex bool) view {
	rows := func() *table {
		t := &table{header: []string{"ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"}}
		for _, m := range r.Members {
			status := "started"
			if m.Name == "" {
				status = "unstarted"
			}
			t.rows = append(t.rows, []string{fmt.Sprintf("%x", m.ID), status, m.Name,
				strings.Join(m.PeerURLs, ","), strings.Join(m.ClientURLs, ","), fmt.Sprint(m.IsLearner)})
		}
		return t
	}
	var msg any = r
	if hex {
		msg = json.RawMessage(memberListHexJSON(r))
	}
	return view{
		msg:    msg,
		simple: func(p *printer) { rows().simple(p.w) },
		fields: func(f *fields) {
			f.header(r.Header)
			for _, m := range r.Members {
				f.n("ID", m.ID)
				f.s("Name", m.Name)
				for _, u := range m.PeerURLs {
					f.s("PeerURL", u)
				}
				for _, u := range m.ClientURLs {
					f.s("ClientURL", u)
				}
				f.n("IsLearner", m.IsLearner)
				f.blank()
			}
		},
		table: rows,
	}
}

// memberListHexJSON is member list -w json --hex: the IDs as hex strings
// (and no revision or learner flag, as etcdctl writes it).
func memberListHexJSON(r *pb.MemberListResponse) []byte {
	var b bytes.Buffer
	h := r.Header
	if h == nil {
		h = &pb.ResponseHeader{}
	}
	fmt.Fprintf(&b, `{"header":{"cluster_id":"%x","member_id":"%x","raft_term":%d}`, h.ClusterId, h.MemberId, h.RaftTerm)
	for i, m := range r.Members {
		if i == 0 {
			b.WriteString(`,"members":[`)
		} else {
			b.WriteString(",")
		}
		peers, _ := json.Marshal(m.PeerURLs)
		clients, _ := json.Marshal(m.ClientURLs)
		fmt.Fprintf(&b, `{"ID":"%x","name":"%s","peerURLs":%s,"clientURLS":%s}`, m.ID, m.Name, peers, clients)
		if i == len(r.Members)-1 {
			b.WriteString("]")
		}
	}
	b.WriteString("}")
	return b.Bytes()
}
