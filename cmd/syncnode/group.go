package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/syncgroup"
)

// The syncgroup commands.

func groupCmd() *command {
	return &command{name: "sg", sub: []*command{
		{name: "create", args: "NAME", short: "create a syncgroup with this node as its admin, print its ID", nargs: 1, json: true, flags: sgCreate},
		{name: "invite", args: "GROUP PEER", short: "print an invitation for peer to join the group", nargs: 2, json: true, flags: sgInvite},
		{name: "join", args: "INVITATION", short: "join with an invitation from an admin", nargs: 1, json: true, flags: sgJoin},
		{name: "leave", args: "GROUP", short: "leave a group, handing this node's shares in it to members first", nargs: 1, flags: sgLeave},
		{name: "eject", args: "GROUP PEER", short: "eject a member (admins only): say what it would put at risk, keep its blobs, then eject", nargs: 2, json: true, flags: sgEject},
		{name: "admin", sub: []*command{
			{name: "add", args: "GROUP PEER", short: "make a member an admin (admins only)", nargs: 2, json: true, flags: sgSpec("admin-add")},
			{name: "remove", args: "GROUP PEER", short: "take a junior admin's role, or this node's own (never the last admin's)", nargs: 2, json: true, flags: sgSpec("admin-remove")},
		}},
		{name: "prefix", sub: []*command{
			{name: "add", args: "GROUP PREFIX", short: "sync the keys under another prefix (admins only)", nargs: 2, json: true, flags: sgSpec("prefix-add")},
			{name: "remove", args: "GROUP PREFIX", short: "stop syncing the keys under a prefix (admins only): its rows leave the group", nargs: 2, json: true, flags: sgSpec("prefix-remove")},
		}},
		{name: "copies", args: "GROUP K", short: "set the verified server copies wanted before devices evict (admins only)", nargs: 2, json: true, flags: sgSpec("copies")},
		{name: "budget", args: "GROUP", short: "set what each writer's rows may cost every member (admins only); a raise lets writers write more", nargs: 1, json: true, flags: sgBudget},
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
	budget := budgetFlags(fs, "writer-")
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			req := api.CreateRequest{Name: c.pos[0], Prefixes: prefixes, Private: *private, DevType: *dev, Copies: *copies}
			b, err := budget()
			if err != nil {
				return err
			}
			if b != (api.Budget{}) {
				req.Budget = &b
			}
			g, err := cl.CreateGroup(c.ctx, req)
			return show(c, g, err, func(g api.Group) { fmt.Fprintln(c.stdout, g.ID) })
		})
	}
}

// sgSpec is the body of a command changing a group's spec with op.
func sgSpec(op string) func(*flag.FlagSet) func(*cmd) error {
	return func(*flag.FlagSet) func(*cmd) error {
		return func(c *cmd) error {
			req := api.SpecChange{Group: c.pos[0], Op: op}
			switch op {
			case "admin-add", "admin-remove":
				req.Peer = c.pos[1]
			case "prefix-add", "prefix-remove":
				req.Prefix = c.pos[1]
			default:
				k, err := strconv.Atoi(c.pos[1])
				if err != nil {
					return fmt.Errorf("copies %q: a number from 1 to 8", c.pos[1])
				}
				req.Copies = k
			}
			return changeSpec(c, req)
		}
	}
}

// changeSpec sends req and prints the spec it leads to.
func changeSpec(c *cmd, req api.SpecChange) error {
	return c.with(func(cl *api.Client) error {
		g, err := cl.ChangeSpec(c.ctx, req)
		return show(c, g, err, func(g api.Group) {
			fmt.Fprintf(c.stdout, "%s\n  admins:   %s\n  prefixes: %s\n  copies:   %d\n  budget:   %s\n", g.ID, strings.Join(g.Admins, ", "), strings.Join(g.Prefixes, ", "), g.Copies, budgetText(g.Budget))
		})
	})
}

// budgetFlags defines the flags of a writer budget, named with prefix,
// and returns a function reading them.
func budgetFlags(fs *flag.FlagSet, prefix string) func() (api.Budget, error) {
	rows := fs.Int(prefix+"rows", 0, "rows each writer may keep in the group (0: the default, 250,000)")
	mib := fs.Int64(prefix+"mib", 0, "MiB of rows each writer may keep in the group (0: the default, 64)")
	refs := fs.Int(prefix+"refs", 0, "blob references each writer's rows may name (0: the default, 500,000)")
	return func() (api.Budget, error) {
		if *rows < 0 || *rows > syncgroup.MaxBudgetRows || *mib < 0 || *mib > syncgroup.MaxBudgetBytes>>20 || *refs < 0 || *refs > syncgroup.MaxBudgetRefs {
			return api.Budget{}, fmt.Errorf("%w: -%srows from 0 to %d, -%smib from 0 to %d, -%srefs from 0 to %d (0: the default)",
				errArgs, prefix, syncgroup.MaxBudgetRows, prefix, syncgroup.MaxBudgetBytes>>20, prefix, syncgroup.MaxBudgetRefs)
		}
		return api.Budget{Rows: *rows, Bytes: *mib << 20, Refs: *refs}, nil
	}
}

// budgetText shows a group's writer budget.
func budgetText(b *api.Budget) string {
	if b == nil {
		return "the default"
	}
	field := func(n int64, unit string) string {
		if n == 0 {
			return "default " + unit
		}
		return fmt.Sprintf("%d %s", n, unit)
	}
	return fmt.Sprintf("%s, %s, %s per writer", field(int64(b.Rows), "rows"), field(b.Bytes, "bytes"), field(int64(b.Refs), "references"))
}

func sgBudget(fs *flag.FlagSet) func(*cmd) error {
	budget := budgetFlags(fs, "")
	return func(c *cmd) error {
		b, err := budget()
		if err != nil {
			return err
		}
		return changeSpec(c, api.SpecChange{Group: c.pos[0], Op: "budget", Budget: &b})
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

func sgEject(fs *flag.FlagSet) func(*cmd) error {
	force := fs.Bool("force", false, "eject even if blobs only the member is known to hold cannot be fetched first (they are then at risk), or it does not answer")
	dryRun := fs.Bool("dry-run", false, "only say what the ejection would do")
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			req := api.EjectRequest{Group: c.pos[0], Peer: c.pos[1], Force: *force, DryRun: true}
			plan, err := cl.Eject(c.ctx, req)
			if err != nil {
				return err
			}
			if *dryRun {
				return show(c, plan, nil, func(p api.Ejection) { printEjectPlan(c.stdout, p, *force) })
			}
			if !c.asJSON {
				printEjectPlan(c.stdout, plan, *force)
			}
			if plan.Unanswered != "" && !*force {
				// The daemon refuses such an ejection: no need to wait
				// for the member a second time to hear it.
				return fmt.Errorf("sg eject: %s does not answer, so what it keeps in %s cannot be checked; -force ejects it going by what this node knows",
					memberText(plan.Name, plan.Peer), plan.Group)
			}
			req.DryRun = false
			e, err := cl.Eject(c.ctx, req)
			return show(c, e, err, func(e api.Ejection) {
				fmt.Fprintf(c.stdout, "ejected %s from %s\n", memberText(e.Name, e.Peer), e.Group)
				if len(e.Kept) > 0 {
					fmt.Fprintf(c.stdout, "%s fetched and kept here with the group's shares:\n", blobsText(len(e.Kept)))
					for _, ref := range e.Kept {
						fmt.Fprintln(c.stdout, " ", ref)
					}
				}
				if len(e.AtRisk) > 0 {
					fmt.Fprintf(c.stdout, "%s left at risk (they could not be fetched):\n", blobsText(len(e.AtRisk)))
					for _, ref := range e.AtRisk {
						fmt.Fprintln(c.stdout, " ", ref)
					}
				}
			})
		})
	}
}

// printEjectPlan says what an ejection would do, from its dry run.
func printEjectPlan(w io.Writer, p api.Ejection, force bool) {
	who := memberText(p.Name, p.Peer)
	fmt.Fprintf(w, "ejecting %s from %s:\n", who, p.Group)
	if !p.Member {
		fmt.Fprintln(w, "  it is no member (invited, never joined): it keeps nothing; the ejection bans it")
		return
	}
	if p.Unanswered != "" {
		why, _, _ := strings.Cut(p.Unanswered, "\n")
		fmt.Fprintf(w, "  it does not answer (%s)\n", strings.TrimSuffix(why, ":"))
		if force {
			fmt.Fprintln(w, "  -force: the ejection goes by what this node knows")
		} else {
			fmt.Fprintln(w, "  the ejection is refused unless -force, which goes by what this node knows")
		}
	}
	switch {
	case len(p.Held) == 0 && p.Unanswered != "":
		fmt.Fprintln(w, "  no blob of the group is known to be held by it alone")
	case len(p.Held) == 0:
		fmt.Fprintln(w, "  it keeps shares of no blob of the group")
	case p.Unanswered != "":
		fmt.Fprintf(w, "  %s of the group known to be held by it alone\n", blobsText(len(p.Held)))
	default:
		fmt.Fprintf(w, "  it keeps shares of %s of the group: their shares come here first\n", blobsText(len(p.Held)))
	}
	if len(p.Fetch) > 0 {
		fmt.Fprintf(w, "  %d of them not held here, fetched first:\n", len(p.Fetch))
		for _, ref := range p.Fetch {
			note := ""
			if slices.Contains(p.AtRisk, ref) {
				note = "  AT RISK: no peer asked holds it"
			}
			fmt.Fprintf(w, "    %s%s\n", ref, note)
		}
	}
	switch {
	case len(p.AtRisk) == 0:
		fmt.Fprintln(w, "  at risk: none")
	case force:
		fmt.Fprintf(w, "  at risk: %s, which -force leaves at risk\n", blobsText(len(p.AtRisk)))
	default:
		fmt.Fprintf(w, "  at risk: %s: the ejection is refused unless -force\n", blobsText(len(p.AtRisk)))
	}
}

// blobsText is "1 blob" or "N blobs".
func blobsText(n int) string {
	if n == 1 {
		return "1 blob"
	}
	return fmt.Sprintf("%d blobs", n)
}

// memberText is a member's name and peer ID, or its ID alone.
func memberText(name, p string) string {
	if name == "" {
		return p
	}
	return name + " (" + p + ")"
}

func sgLs(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			gs, err := cl.ListGroups(c.ctx)
			return show(c, gs, err, func(gs []api.Group) {
				rows := [][]string{{"GROUP", "PREFIXES", "PRIVATE", "COPIES", "ADMINS"}}
				for _, g := range gs {
					rows = append(rows, []string{g.ID, strings.Join(g.Prefixes, ","), fmt.Sprint(g.Private), fmt.Sprint(g.Copies), strings.Join(g.Admins, ",")})
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
