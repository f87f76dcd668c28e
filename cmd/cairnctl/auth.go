package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (c *ctl) authCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "auth <enable or disable>", Short: "Enable or disable authentication"}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "enable",
			Short: "Enables authentication",
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := noArgs(args, "auth enable command does not accept any arguments"); err != nil {
					return err
				}
				cli, err := c.client()
				if err != nil {
					return err
				}
				ctx, cancel := c.commandCtx()
				defer cancel()
				// Enabling needs a root role: made and granted to root
				// when missing.
				for err == nil {
					if _, err = cli.AuthEnable(ctx); err == nil {
						break
					}
					if errors.Is(err, rpctypes.ErrRootRoleNotExist) {
						if _, err = cli.RoleAdd(ctx, "root"); err == nil {
							_, err = cli.UserGrantRole(ctx, "root", "root")
						}
					}
				}
				if err != nil {
					return fail(exitError, err)
				}
				fmt.Fprintln(c.out, "Authentication Enabled")
				return nil
			},
		},
		&cobra.Command{
			Use:   "disable",
			Short: "Disables authentication",
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := noArgs(args, "auth disable command does not accept any arguments"); err != nil {
					return err
				}
				cli, err := c.client()
				if err != nil {
					return err
				}
				ctx, cancel := c.commandCtx()
				_, err = cli.AuthDisable(ctx)
				cancel()
				if err != nil {
					return fail(exitError, err)
				}
				fmt.Fprintln(c.out, "Authentication Disabled")
				return nil
			},
		},
		&cobra.Command{
			Use:   "status",
			Short: "Returns authentication status",
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := noArgs(args, "auth status command does not accept any arguments"); err != nil {
					return err
				}
				cli, err := c.client()
				if err != nil {
					return err
				}
				ctx, cancel := c.commandCtx()
				resp, err := cli.AuthStatus(ctx)
				cancel()
				if err != nil {
					return fail(exitError, err)
				}
				r := (*pb.AuthStatusResponse)(resp)
				return c.p.show(view{msg: r, simple: func(p *printer) {
					fmt.Fprintln(p.w, "Authentication Status:", r.Enabled)
					fmt.Fprintln(p.w, "AuthRevision:", r.AuthRevision)
				}})
			},
		},
	)
	return cmd
}

// authCall is a user or role command: its argument count checked (with
// etcdctl's message when wrong), then do with a client; no timeout, as in
// etcdctl.
func (c *ctl) authCall(use, short string, nargs int, usage string, do func(cli *clientv3.Client, args []string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		RunE: func(cmd *cobra.Command, args []string) error {
			if nargs >= 0 && len(args) != nargs || nargs < 0 && len(args) < -nargs {
				return fail(exitBadArgs, errors.New(usage))
			}
			cli, err := c.client()
			if err != nil {
				return err
			}
			return do(cli, args)
		},
	}
}

// header is a response's header, for a view whose fields are its header.
func headerFields(h *pb.ResponseHeader) func(f *fields) {
	return func(f *fields) { f.header(h) }
}

func (c *ctl) userCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "user <subcommand>", Short: "User related commands"}
	var interactive, noPassword, detail bool
	var newPassword string
	add := c.authCall("add <user name or user:password> [options]", "Adds a new user", 1,
		"user add command requires user name as its argument",
		func(cli *clientv3.Client, args []string) error {
			user, password := args[0], ""
			switch {
			case noPassword:
			case newPassword != "":
				password = newPassword
			default:
				name, pw, ok := strings.Cut(args[0], ":")
				if ok {
					if name == "" {
						return fail(exitBadArgs, errors.New("empty user name is not allowed"))
					}
					user, password = name, pw
				} else {
					var err error
					if password, err = c.newPassword(user, interactive); err != nil {
						return err
					}
				}
			}
			resp, err := cli.UserAddWithOptions(context.TODO(), user, password, &clientv3.UserAddOptions{NoPassword: noPassword})
			if err != nil {
				return fail(exitError, err)
			}
			r := (*pb.AuthUserAddResponse)(resp)
			return c.p.show(view{msg: r, fields: headerFields(r.Header),
				simple: func(p *printer) { fmt.Fprintf(p.w, "User %s created\n", user) }})
		})
	add.Flags().BoolVar(&interactive, "interactive", true, "Read password from stdin instead of interactive terminal")
	add.Flags().StringVar(&newPassword, "new-user-password", "", "Supply password from the command line flag")
	add.Flags().BoolVar(&noPassword, "no-password", false, "Create a user without password (CN based auth only)")

	get := c.authCall("get <user name> [options]", "Gets detailed information of a user", 1,
		"user get command requires user name as its argument",
		func(cli *clientv3.Client, args []string) error {
			name := args[0]
			resp, err := cli.UserGet(context.TODO(), name)
			if err != nil {
				return fail(exitError, err)
			}
			if !detail {
				r := (*pb.AuthUserGetResponse)(resp)
				return c.p.show(view{msg: r, simple: func(p *printer) {
					fmt.Fprintf(p.w, "User: %s\n", name)
					fmt.Fprint(p.w, "Roles:")
					for _, role := range r.Roles {
						fmt.Fprintf(p.w, " %s", role)
					}
					fmt.Fprint(p.w, "\n")
				}})
			}
			fmt.Fprintf(c.out, "User: %s\n", name)
			for _, role := range resp.Roles {
				fmt.Fprint(c.out, "\n")
				rr, err := cli.RoleGet(context.TODO(), role)
				if err != nil {
					return fail(exitError, err)
				}
				if err := c.p.show(roleGetView(role, (*pb.AuthRoleGetResponse)(rr))); err != nil {
					return err
				}
			}
			return nil
		})
	get.Flags().BoolVar(&detail, "detail", false, "Show permissions of roles granted to the user")

	var passwdInteractive bool
	passwd := c.authCall("passwd <user name> [options]", "Changes password of user", 1,
		"user passwd command requires user name as its argument",
		func(cli *clientv3.Client, args []string) error {
			password, err := c.newPassword(args[0], passwdInteractive)
			if err != nil {
				return err
			}
			resp, err := cli.UserChangePassword(context.TODO(), args[0], password)
			if err != nil {
				return fail(exitError, err)
			}
			r := (*pb.AuthUserChangePasswordResponse)(resp)
			return c.p.show(view{msg: r, fields: headerFields(r.Header),
				simple: func(p *printer) { fmt.Fprintln(p.w, "Password updated") }})
		})
	passwd.Flags().BoolVar(&passwdInteractive, "interactive", true, "If true, read password from stdin instead of interactive terminal")

	cmd.AddCommand(add,
		c.authCall("delete <user name>", "Deletes a user", 1, "user delete command requires user name as its argument",
			func(cli *clientv3.Client, args []string) error {
				resp, err := cli.UserDelete(context.TODO(), args[0])
				if err != nil {
					return fail(exitError, err)
				}
				r := (*pb.AuthUserDeleteResponse)(resp)
				return c.p.show(view{msg: r, fields: headerFields(r.Header),
					simple: func(p *printer) { fmt.Fprintf(p.w, "User %s deleted\n", args[0]) }})
			}),
		get,
		c.authCall("list", "Lists all users", 0, "user list command requires no arguments",
			func(cli *clientv3.Client, args []string) error {
				resp, err := cli.UserList(context.TODO())
				if err != nil {
					return fail(exitError, err)
				}
				r := (*pb.AuthUserListResponse)(resp)
				return c.p.show(view{msg: r, simple: func(p *printer) {
					for _, u := range r.Users {
						fmt.Fprintf(p.w, "%s\n", u)
					}
				}})
			}),
		passwd,
		c.authCall("grant-role <user name> <role name>", "Grants a role to a user", 2,
			"user grant command requires user name and role name as its argument",
			func(cli *clientv3.Client, args []string) error {
				resp, err := cli.UserGrantRole(context.TODO(), args[0], args[1])
				if err != nil {
					return fail(exitError, err)
				}
				r := (*pb.AuthUserGrantRoleResponse)(resp)
				return c.p.show(view{msg: r, fields: headerFields(r.Header), simple: func(p *printer) {
					fmt.Fprintf(p.w, "Role %s is granted to user %s\n", args[1], args[0])
				}})
			}),
		c.authCall("revoke-role <user name> <role name>", "Revokes a role from a user", 2,
			"user revoke-role requires user name and role name as its argument",
			func(cli *clientv3.Client, args []string) error {
				resp, err := cli.UserRevokeRole(context.TODO(), args[0], args[1])
				if err != nil {
					return fail(exitError, err)
				}
				r := (*pb.AuthUserRevokeRoleResponse)(resp)
				return c.p.show(view{msg: r, fields: headerFields(r.Header), simple: func(p *printer) {
					fmt.Fprintf(p.w, "Role %s is revoked from user %s\n", args[1], args[0])
				}})
			}),
	)
	return cmd
}

// newPassword asks for a user's new password: twice on the terminal
// (interactive), or as one word on the input.
func (c *ctl) newPassword(user string, interactive bool) (string, error) {
	if !interactive {
		var pw string
		fmt.Fscanf(c.in, "%s", &pw)
		return pw, nil
	}
	pw1, err := c.askPassword(fmt.Sprintf("Password of %s: ", user))
	if err != nil {
		return "", failf(exitBadArgs, "failed to ask password: %s", err)
	}
	if pw1 == "" {
		return "", fail(exitBadArgs, errors.New("empty password"))
	}
	pw2, err := c.askPassword(fmt.Sprintf("Type password of %s again for confirmation: ", user))
	if err != nil {
		return "", failf(exitBadArgs, "failed to ask password: %s", err)
	}
	if pw1 != pw2 {
		return "", fail(exitBadArgs, errors.New("given passwords are different"))
	}
	return pw1, nil
}

func (c *ctl) roleCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "role <subcommand>", Short: "Role related commands"}
	var grantPrefix, grantFromKey, revokePrefix, revokeFromKey bool
	grant := c.authCall("grant-permission [options] <role name> <permission type> <key> [endkey]",
		"Grants a key to a role", -3,
		"role grant command requires role name, permission type, and key [endkey] as its argument",
		func(cli *clientv3.Client, args []string) error {
			perm, err := clientv3.StrToPermissionType(args[1])
			if err != nil {
				return fail(exitBadArgs, err)
			}
			key, end, err := permRange(args[2:], grantPrefix, grantFromKey)
			if err != nil {
				return err
			}
			resp, err := cli.RoleGrantPermission(context.TODO(), args[0], key, end, perm)
			if err != nil {
				return fail(exitError, err)
			}
			r := (*pb.AuthRoleGrantPermissionResponse)(resp)
			return c.p.show(view{msg: r, fields: headerFields(r.Header),
				simple: func(p *printer) { fmt.Fprintf(p.w, "Role %s updated\n", args[0]) }})
		})
	grant.Flags().BoolVar(&grantPrefix, "prefix", false, "grant a prefix permission")
	grant.Flags().BoolVar(&grantFromKey, "from-key", false, "grant a permission of keys that are greater than or equal to the given key using byte compare")
	revoke := c.authCall("revoke-permission <role name> <key> [endkey]", "Revokes a key from a role", -2,
		"role revoke-permission command requires role name and key [endkey] as its argument",
		func(cli *clientv3.Client, args []string) error {
			key, end, err := permRange(args[1:], revokePrefix, revokeFromKey)
			if err != nil {
				return err
			}
			resp, err := cli.RoleRevokePermission(context.TODO(), args[0], key, end)
			if err != nil {
				return fail(exitError, err)
			}
			r := (*pb.AuthRoleRevokePermissionResponse)(resp)
			return c.p.show(view{msg: r, fields: headerFields(r.Header), simple: func(p *printer) {
				switch {
				case end == "":
					fmt.Fprintf(p.w, "Permission of key %s is revoked from role %s\n", args[1], args[0])
				case end != "\x00":
					fmt.Fprintf(p.w, "Permission of range [%s, %s) is revoked from role %s\n", args[1], end, args[0])
				default:
					fmt.Fprintf(p.w, "Permission of range [%s, <open ended> is revoked from role %s\n", args[1], args[0])
				}
			}})
		})
	revoke.Flags().BoolVar(&revokePrefix, "prefix", false, "revoke a prefix permission")
	revoke.Flags().BoolVar(&revokeFromKey, "from-key", false, "revoke a permission of keys that are greater than or equal to the given key using byte compare")

	cmd.AddCommand(
		c.authCall("add <role name>", "Adds a new role", 1, "role add command requires role name as its argument",
			func(cli *clientv3.Client, args []string) error {
				resp, err := cli.RoleAdd(context.TODO(), args[0])
				if err != nil {
					return fail(exitError, err)
				}
				r := (*pb.AuthRoleAddResponse)(resp)
				return c.p.show(view{msg: r, fields: headerFields(r.Header),
					simple: func(p *printer) { fmt.Fprintf(p.w, "Role %s created\n", args[0]) }})
			}),
		c.authCall("delete <role name>", "Deletes a role", 1, "role delete command requires role name as its argument",
			func(cli *clientv3.Client, args []string) error {
				resp, err := cli.RoleDelete(context.TODO(), args[0])
				if err != nil {
					return fail(exitError, err)
				}
				r := (*pb.AuthRoleDeleteResponse)(resp)
				return c.p.show(view{msg: r, fields: headerFields(r.Header),
					simple: func(p *printer) { fmt.Fprintf(p.w, "Role %s deleted\n", args[0]) }})
			}),
		c.authCall("get <role name>", "Gets detailed information of a role", 1, "role get command requires role name as its argument",
			func(cli *clientv3.Client, args []string) error {
				resp, err := cli.RoleGet(context.TODO(), args[0])
				if err != nil {
					return fail(exitError, err)
				}
				return c.p.show(roleGetView(args[0], (*pb.AuthRoleGetResponse)(resp)))
			}),
		c.authCall("list", "Lists all roles", 0, "role list command requires no arguments",
			func(cli *clientv3.Client, args []string) error {
				resp, err := cli.RoleList(context.TODO())
				if err != nil {
					return fail(exitError, err)
				}
				r := (*pb.AuthRoleListResponse)(resp)
				return c.p.show(view{msg: r,
					simple: func(p *printer) {
						for _, role := range r.Roles {
							fmt.Fprintf(p.w, "%s\n", role)
						}
					},
					fields: func(f *fields) {
						f.header(r.Header)
						fmt.Fprint(f.w, `"Roles" :`)
						for _, role := range r.Roles {
							fmt.Fprintf(f.w, " %q", role)
						}
						fmt.Fprintln(f.w)
					}})
			}),
		grant, revoke,
	)
	return cmd
}

// permRange is the key and range end of a permission: a key, a key and an
// end, a prefix (--prefix) or every key from one on (--from-key); an empty
// key with either flag is every key.
func permRange(args []string, prefix, fromKey bool) (key, end string, err error) {
	key = args[0]
	both := fail(exitBadArgs, errors.New("--from-key and --prefix flags are mutually exclusive"))
	if key == "" {
		if prefix && fromKey {
			return "", "", both
		}
		if prefix || fromKey {
			end = "\x00"
		}
		return "\x00", end, nil
	}
	if len(args) == 1 {
		switch {
		case prefix && fromKey:
			return "", "", both
		case prefix:
			return key, clientv3.GetPrefixRangeEnd(key), nil
		case fromKey:
			return key, "\x00", nil
		}
		return key, "", nil
	}
	switch {
	case prefix:
		return "", "", fail(exitBadArgs, errors.New("unexpected endkey argument with --prefix flag"))
	case fromKey:
		return "", "", fail(exitBadArgs, errors.New("unexpected endkey argument with --from-key flag"))
	}
	return key, args[1], nil
}

func roleGetView(role string, r *pb.AuthRoleGetResponse) view {
	return view{
		msg: r,
		simple: func(p *printer) {
			fmt.Fprintf(p.w, "Role %s\n", role)
			perms := func(kinds ...authpb.Permission_Type) {
				for _, perm := range r.Perm {
					if perm.PermType != kinds[0] && perm.PermType != kinds[1] {
						continue
					}
					key, end := string(perm.Key), string(perm.RangeEnd)
					switch {
					case end == "":
						fmt.Fprintf(p.w, "\t%s\n", key)
						continue
					case end != "\x00":
						fmt.Fprintf(p.w, "\t[%s, %s)", key, end)
					default:
						fmt.Fprintf(p.w, "\t[%s, <open ended>", key)
					}
					if clientv3.GetPrefixRangeEnd(key) == end {
						fmt.Fprintf(p.w, " (prefix %s)", key)
					}
					fmt.Fprint(p.w, "\n")
				}
			}
			fmt.Fprintln(p.w, "KV Read:")
			perms(clientv3.PermRead, clientv3.PermReadWrite)
			fmt.Fprintln(p.w, "KV Write:")
			perms(clientv3.PermWrite, clientv3.PermReadWrite)
		},
		fields: func(f *fields) {
			f.header(r.Header)
			for _, perm := range r.Perm {
				fmt.Fprintln(f.w, `"PermType" : `, perm.PermType.String())
				f.s("Key", string(perm.Key))
				f.s("RangeEnd", string(perm.RangeEnd))
			}
		},
	}
}
