package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/connectivity"
	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/syncgroup"
)

// CreateGroup creates a syncgroup with this node as its admin and first
// member, of device type dev, syncing the rows under prefixes.
func (n *Node) CreateGroup(name string, prefixes []string, private bool, dev syncnode.DevType) (syncgroup.Spec, error) {
	return n.CreateGroupWith(GroupOptions{Name: name, Prefixes: prefixes, Private: private, DevType: dev})
}

// GroupOptions describe a syncgroup to create.
type GroupOptions struct {
	Name     string
	Prefixes []string
	// Private: only members may learn of the group.
	Private bool
	// DevType is this node's device type in the group.
	DevType syncnode.DevType
	// Copies is how many servers of the group must hold a verified copy
	// of a blob before a device evicts its own (default 1, at most
	// syncgroup.MaxCopies).
	Copies int
	// Budget bounds what each writer's rows may cost every member (zero
	// fields: syncgroup.DefaultBudget's); admins change it later with
	// ChangeGroup (syncgroup.SetBudget).
	Budget syncgroup.Budget
}

// CreateGroupWith creates a syncgroup as o describes, with this node as
// its admin and first member.
func (n *Node) CreateGroupWith(o GroupOptions) (syncgroup.Spec, error) {
	key := n.h.Peerstore().PrivKey(n.h.ID())
	g, err := syncgroup.Create(o.Name, o.Prefixes, o.Private, key, o.DevType, n.conn.Addrs(), time.Now())
	if err != nil {
		return syncgroup.Spec{}, err
	}
	if err := g.SetCopies(o.Copies); err != nil {
		return syncgroup.Spec{}, err
	}
	if err := g.SetGroupBudget(o.Budget); err != nil {
		return syncgroup.Spec{}, err
	}
	if err := n.sync.Add(g); err != nil {
		return syncgroup.Spec{}, err
	}
	if err := n.setName(g.ID()); err != nil {
		return syncgroup.Spec{}, err
	}
	n.records.KeepOrWarn(g.ID())
	return n.GroupSpec(g.ID())
}

// Invite issues an invitation for peer p to join group g as device type
// dev, valid for ttl. This node must be one of the group's admins. The
// invitation carries, signed, the addresses of this node and of the
// group's servers: it is all the joiner needs (see JoinGroup).
func (n *Node) Invite(g syncnode.GroupID, p peer.ID, dev syncnode.DevType, ttl time.Duration) (syncgroup.Invitation, error) {
	if spec, err := n.GroupSpec(g); err == nil && !n.sync.IsAdmin(g, n.h.ID()) {
		// Every admin would refuse it at the join.
		return syncgroup.Invitation{}, fmt.Errorf("%w: only an admin of %s invites, and this node is not one%s",
			syncgroup.ErrNotAllowed, n.names().GroupName(g), n.names().AskAdmins(spec))
	}
	return n.sync.Invite(g, p, dev, time.Now().Add(ttl), n.conn.InvitationAddrs(g))
}

// ErrAdminUnreachable reports a join that could reach no admin of the
// group: the one that issued the invitation, nor any other it names.
var ErrAdminUnreachable = connectivity.ErrAdminUnreachable

// JoinGroup joins a group with an invitation an admin issued to this node,
// and syncs once with the admin that admits it: the issuer, or any other
// admin of the group. The invitation carries where to reach the issuer,
// the group's other admins and its servers; extra addresses (those of an
// invitation from an older node, which carries none) are the issuer's
// unless they end in another peer's /p2p/ ID. With no address at all, a
// node with LAN discovery looks for the issuer on the LAN. An admin must
// be online: the group's servers cannot admit (the error then wraps
// ErrAdminUnreachable).
func (n *Node) JoinGroup(ctx context.Context, inv syncgroup.Invitation, extra ...ma.Multiaddr) (syncgroup.Spec, error) {
	ctx, done, err := n.call(ctx)
	if err != nil {
		return syncgroup.Spec{}, err
	}
	defer done()
	admins, err := n.conn.ReachAdmin(ctx, inv, extra, n.cfg.IOTimeout)
	if err != nil {
		return syncgroup.Spec{}, err
	}
	// Shares of the group still here from an earlier membership (an
	// escrow that came back after this node was out, say) are kept: they
	// may be the group's only ones. If the group made up for them
	// meanwhile, a server that holds its two calls them surplus at the
	// next hand-off, and they go then.
	id, err := n.sync.Join(ctx, inv, admins, n.conn.Addrs())
	if errors.Is(err, syncer.ErrNoAdmin) && !slices.Contains(admins, inv.Admin) {
		return syncgroup.Spec{}, fmt.Errorf("%w: %s, which issued the invitation, is offline, and no other admin of the group answered "+
			"(admins admit, not the group's servers: try again once one is online): %v", ErrAdminUnreachable, inv.Admin, err)
	}
	if err != nil {
		return syncgroup.Spec{}, err
	}
	if err := n.setName(id); err != nil {
		return syncgroup.Spec{}, err
	}
	// The group's servers may have seen this node already: behind a NAT,
	// that is its public address, for AutoNAT to try and members to dial.
	n.goRun(n.conn.ChooseObserved)
	n.goRun(func() { n.syncAll(id) })
	n.records.KeepOrWarn(id)
	return n.GroupSpec(id)
}

// LeaveGroup leaves group g: the other members are told, and its rows are
// dropped here.
func (n *Node) LeaveGroup(ctx context.Context, g syncnode.GroupID) error {
	_, err := n.LeaveGroupWith(ctx, g, LeaveOptions{})
	return err
}

// LeaveOptions modify LeaveGroupWith.
type LeaveOptions struct {
	// Force leaves even when some blobs whose shares this node holds in
	// the group could be handed to no member (they are left at risk), or
	// no member answers (rows written here may be lost with the replica).
	Force bool
}

// LeaveGroupWith leaves group g as LeaveGroup does, after handing every
// share this node holds in g to a member (a server first, else any
// member but a leaf), who fetches the blob from it first if needed. If a
// blob's shares could be handed to no one, it refuses with ErrAtRisk and
// the blobs, unless o.Force: then it leaves and returns the blobs left at
// risk. It also refuses (ErrAtRisk) when no other member answers a round:
// rows written here may have reached none of them. Once it has left,
// shares of g pin nothing here.
func (n *Node) LeaveGroupWith(ctx context.Context, g syncnode.GroupID, o LeaveOptions) (atRisk []syncnode.BlobRef, err error) {
	ctx, done, err := n.call(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	if _, err := n.GroupSpec(g); err != nil {
		return nil, err
	}
	// Refused before anything is handed on.
	if err := n.sync.With(g, (*syncgroup.Group).CheckLeave); err != nil {
		return nil, err
	}
	// The user asks now: members that failed a dial a moment ago (back
	// on a new port, say) are tried again.
	var ids []peer.ID
	for _, m := range n.Members(g) {
		ids = append(ids, m.Peer)
	}
	connectivity.ClearDialBackoff(n.h, ids)
	return n.handoffs.Leave(ctx, g, o.Force)
}

// ChangeGroup makes change c to group g's spec: adds or removes an admin
// (syncgroup.AddAdmin, RemoveAdmin) or a prefix (AddPrefix,
// RemovePrefix), or sets the server copies wanted (SetCopies) or the
// budget of each writer's rows (SetBudget: a raise lets writers write
// more; rows refused under the old budget stay refused). This node
// must be an admin allowed to make it: an admin removes itself or one
// junior to it, never the last (syncgroup.ErrLastAdmin). The change is
// signed, joins the group's chain of changes and spreads to the members;
// concurrent changes resolve alike on every member. It returns the spec
// as it stands here.
func (n *Node) ChangeGroup(g syncnode.GroupID, c syncgroup.Change) (syncgroup.Spec, error) {
	return n.sync.ChangeSpec(g, c)
}

// Groups returns the specs of the groups this node syncs.
func (n *Node) Groups() []syncgroup.Spec {
	var out []syncgroup.Spec
	for _, id := range n.sync.Groups() {
		if s, err := n.GroupSpec(id); err == nil {
			out = append(out, s)
		}
	}
	return out
}

// GroupSpec returns group g's spec.
func (n *Node) GroupSpec(g syncnode.GroupID) (syncgroup.Spec, error) { return n.sync.Spec(g) }

// Members returns group g's members.
func (n *Node) Members(g syncnode.GroupID) []syncgroup.Member { return n.sync.Members(g) }

// setName writes this node's name (Config.Name) into its membership row
// of group g if the row does not carry it yet.
func (n *Node) setName(g syncnode.GroupID) error {
	if n.cfg.Name == "" {
		return nil
	}
	return n.sync.SetName(g, n.cfg.Name)
}

// NameOf returns the name peer p gave itself in a group this node shares
// with it, or "" if none.
func (n *Node) NameOf(p peer.ID) string { return n.sync.NameOf(p) }

// Seen reports whether this node is connected to p now, and when its
// last connection to p ended (zero if it never saw one end).
func (n *Node) Seen(p peer.ID) (online bool, last time.Time) {
	if t, ok := n.lastSeen.Load(p); ok {
		last = t.(time.Time)
	}
	return n.connected(p), last
}

// DevType returns this node's device type in group g.
func (n *Node) DevType(g syncnode.GroupID) (syncnode.DevType, bool) { return n.sync.DevType(g) }

// Priority returns this node's priority in group g.
func (n *Node) Priority(g syncnode.GroupID) (syncnode.Priority, error) { return n.sync.Priority(g) }

// PutRow writes a msgpack value at key in group g and pushes it to the
// members online. The write is checked first, so a refused one changes
// nothing; then the blob refs inside the value are recorded: the
// signposts name this node where it holds the blob, and the creator's
// shares are granted.
func (n *Node) PutRow(g syncnode.GroupID, key string, value []byte) (syncgroup.Row, error) {
	rows, err := n.PutRows(g, []syncgroup.KV{{Key: key, Value: value}})
	if err != nil {
		return syncgroup.Row{}, err
	}
	return rows[0], nil
}

// PutRows writes the rows of kvs in group g as one batch: all of them,
// durable together before it returns, or none (the error names the row
// refused). The blobs they reference are looked for as PutRow's are.
func (n *Node) PutRows(g syncnode.GroupID, kvs []syncgroup.KV) ([]syncgroup.Row, error) {
	_, done, err := n.call(context.Background())
	if err != nil {
		return nil, err
	}
	defer done()
	refs := make([][]syncnode.BlobRef, len(kvs))
	for i, kv := range kvs {
		which := ""
		if len(kvs) > 1 {
			which = fmt.Sprintf("row %d: ", i+1)
		}
		if err := n.sync.CheckPut(g, kv.Key, kv.Value); err != nil {
			return nil, n.overBudget(g, fmt.Errorf("node: %s%w", which, err))
		}
		if refs[i], err = syncgroup.FindRefs(kv.Value); err != nil {
			return nil, fmt.Errorf("node: %svalue of %q: %w", which, kv.Key, err)
		}
	}
	for i, kv := range kvs {
		if len(refs[i]) > 0 {
			if err := n.disc.Discover(g, kv.Key, n.h.ID(), n.h.ID(), refs[i]); err != nil {
				return nil, err
			}
		}
	}
	rows, err := n.sync.PutAll(g, kvs)
	return rows, n.overBudget(g, err)
}

// overBudget adds to a refusal over group g's budget who may raise it,
// and how.
func (n *Node) overBudget(g syncnode.GroupID, err error) error {
	if !errors.Is(err, syncgroup.ErrOverBudget) {
		return err
	}
	spec, _ := n.GroupSpec(g)
	return fmt.Errorf("%w; the group's admins may raise what each writer keeps (ChangeGroup with syncgroup.SetBudget, or syncnode sg budget)%s", err, n.names().AskAdmins(spec))
}

// DeleteRow writes a tombstone at key in group g.
func (n *Node) DeleteRow(g syncnode.GroupID, key string) (syncgroup.Row, error) {
	return n.sync.Delete(g, key)
}

// GetRow returns the winning version of key in group g; ok is false if
// there is none or it is deleted.
func (n *Node) GetRow(g syncnode.GroupID, key string) (row syncgroup.Row, ok bool, err error) {
	err = n.sync.With(g, func(gr *syncgroup.Group) error {
		var err error
		row, ok, err = gr.Rows().Lookup(key)
		ok = ok && !row.Deleted
		return err
	})
	return row, ok, err
}

// ListRowsFrom returns a page of the live rows of group g under prefix:
// up to limit rows from key start on, sorted by key, and the start of
// the next page ("" after the last).
func (n *Node) ListRowsFrom(g syncnode.GroupID, prefix, start string, limit int) ([]syncgroup.Row, string, error) {
	return n.sync.RowsFrom(g, prefix, start, limit)
}

// ListRows returns the live rows of group g under prefix, sorted by key.
func (n *Node) ListRows(g syncnode.GroupID, prefix string) ([]syncgroup.Row, error) {
	return n.sync.Rows(g, prefix)
}

// connected reports whether this node has a connection to p.
func (n *Node) connected(p peer.ID) bool { return connectivity.Connected(n.h, p) }
