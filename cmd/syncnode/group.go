package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"strings"

	"github.com/syncnode/syncnode/internal/api"
)

// The syncgroup commands.

func groupCmd() *command {
	return &command{name: "sg", sub: []*command{
		{name: "create", args: "NAME", short: "create a syncgroup with this node as its admin, print its ID", nargs: 1, json: true, flags: sgCreate},
		{name: "invite", args: "GROUP PEER", short: "print an invitation for peer to join the group", nargs: 2, json: true, flags: sgInvite},
		{name: "join", args: "INVITATION", short: "join with an invitation from an admin", nargs: 1, json: true, flags: sgJoin},
		{name: "leave", args: "GROUP", short: "leave a group, handing this node's shares in it to members first", nargs: 1, flags: sgLeave},
		{name: "ls", short: "the groups this node is in", nargs: 0, json: true, flags: sgLs},
		{name: "members", args: "GROUP", short: "a group's members, their device types and addresses", nargs: 1, json: true, flags: sgMembers},
	}}
}

func sgCreate(fs *flag.FlagSet) func(*cmd) error {
	var prefixes stringList
	fs.Var(&prefixes, "prefix", "key prefix the group syncs (repeatable, at least one)")
	private := fs.Bool("private", false, "only members may learn of the group")
	dev := fs.String("type", "normal", "this device's type in the group: normal, server or leaf")
	copies := fs.Int("copies", 1, "verified server copies of each blob wanted before a device evicts its own")
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			g, err := cl.CreateGroup(c.ctx, api.CreateRequest{Name: c.pos[0], Prefixes: prefixes, Private: *private, DevType: *dev, Copies: *copies})
			return show(c, g, err, func(g api.Group) { fmt.Fprintln(c.stdout, g.ID) })
		})
	}
}

func sgInvite(fs *flag.FlagSet) func(*cmd) error {
	dev := fs.String("type", "normal", "the joiner's device type: normal, server or leaf")
	ttl := fs.String("ttl", "24h", "how long the invitation is valid")
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			inv, err := cl.Invite(c.ctx, api.InviteRequest{Group: c.pos[0], Peer: c.pos[1], DevType: *dev, TTL: *ttl})
			return show(c, inv, err, func(inv api.Invitation) {
				fmt.Fprintln(c.stdout, base64.RawURLEncoding.EncodeToString(inv.Invitation))
			})
		})
	}
}

func sgJoin(fs *flag.FlagSet) func(*cmd) error {
	var addrs stringList
	fs.Var(&addrs, "addr", "another address of the admin (repeatable), or of a server if it ends in /p2p/ID: the invitation carries the addresses it needs, unless an older node printed it")
	return func(c *cmd) error {
		inv, err := parseInvitation(c.pos[0])
		if err != nil {
			return fmt.Errorf("sg join: the invitation is not what sg invite printed: %w", err)
		}
		inv.AdminAddrs = append(inv.AdminAddrs, addrs...)
		return c.with(func(cl *api.Client) error {
			g, err := cl.Join(c.ctx, inv)
			return show(c, g, err, func(g api.Group) { fmt.Fprintln(c.stdout, "joined", g.ID) })
		})
	}
}

// parseInvitation reads an invitation as sg invite prints it: the signed
// invitation, base64url. What older nodes printed, base64url JSON with
// the admin's addresses beside the invitation, is read too.
func parseInvitation(s string) (api.Invitation, error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return api.Invitation{}, err
	}
	if len(raw) > 0 && raw[0] == '{' { // msgpack begins with a map's header, never '{'
		var inv api.Invitation
		err := json.Unmarshal(raw, &inv)
		return inv, err
	}
	return api.Invitation{Invitation: raw}, nil
}

func sgLeave(fs *flag.FlagSet) func(*cmd) error {
	force := fs.Bool("force", false, "leave even if some blobs whose shares this node holds could be handed to no member (they are then at risk), or no member answers (rows written here may be lost)")
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			left, err := cl.LeaveWith(c.ctx, api.GroupRequest{Group: c.pos[0], Force: *force})
			return show(c, left, err, func(l api.Left) {
				fmt.Fprintln(c.stdout, "left", l.Left)
				if len(l.AtRisk) > 0 {
					fmt.Fprintf(c.stdout, "%d blobs left at risk (no member took their shares):\n", len(l.AtRisk))
					for _, ref := range l.AtRisk {
						fmt.Fprintln(c.stdout, " ", ref)
					}
				}
			})
		})
	}
}

func sgLs(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			gs, err := cl.ListGroups(c.ctx)
			return show(c, gs, err, func(gs []api.Group) {
				rows := [][]string{{"GROUP", "PREFIXES", "PRIVATE"}}
				for _, g := range gs {
					rows = append(rows, []string{g.ID, strings.Join(g.Prefixes, ","), fmt.Sprint(g.Private)})
				}
				c.table(rows)
			})
		})
	}
}

func sgMembers(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			ms, err := cl.Members(c.ctx, c.pos[0])
			return show(c, ms, err, func(ms []api.Member) {
				rows := [][]string{{"NAME", "PEER", "TYPE", "ADDRS"}}
				for _, m := range ms {
					rows = append(rows, []string{nameOr(m.Name), m.Peer, m.DevType, strings.Join(m.Addrs, " ")})
				}
				c.table(rows)
			})
		})
	}
}
