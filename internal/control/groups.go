package control

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
	"github.com/syncnode/syncnode/value"
)

// The group, row, peer and status handlers.

func (s *server) createGroup(r *http.Request) (api.Group, error) {
	var req api.CreateRequest
	if err := decode(r, &req); err != nil {
		return api.Group{}, err
	}
	dev, err := syncnode.ParseDevType(req.DevType)
	if err != nil {
		return api.Group{}, badRequest("%v", err)
	}
	o := node.GroupOptions{Name: req.Name, Prefixes: req.Prefixes, Private: req.Private, DevType: dev, Copies: req.Copies}
	if req.Budget != nil {
		o.Budget = syncgroup.Budget(*req.Budget)
	}
	spec, err := s.n.CreateGroupWith(o)
	if err != nil {
		return api.Group{}, badRequest("%v", err)
	}
	return groupView(spec), nil
}

func groupView(s syncgroup.Spec) api.Group {
	g := api.Group{ID: string(s.ID), Name: s.Name, Prefixes: s.Prefixes, Private: s.Private, Copies: s.ServerCopies()}
	if s.Budget != nil {
		b := api.Budget(*s.Budget)
		g.Budget = &b
	}
	for _, a := range s.Admins {
		g.Admins = append(g.Admins, a.String())
	}
	return g
}

// specOps maps the control API's names of spec changes to the chain's.
var specOps = map[string]syncgroup.Op{
	"admin-add": syncgroup.AddAdmin, "admin-remove": syncgroup.RemoveAdmin,
	"prefix-add": syncgroup.AddPrefix, "prefix-remove": syncgroup.RemovePrefix, "copies": syncgroup.SetCopies,
	"budget": syncgroup.SetBudget,
}

func (s *server) changeSpec(r *http.Request) (api.Group, error) {
	var req api.SpecChange
	if err := decode(r, &req); err != nil {
		return api.Group{}, err
	}
	op, ok := specOps[req.Op]
	if !ok {
		return api.Group{}, badRequest("op %q: one of admin-add, admin-remove, prefix-add, prefix-remove, copies, budget", req.Op)
	}
	c := syncgroup.Change{Op: op, Prefix: req.Prefix, N: req.Copies}
	if op == syncgroup.SetBudget {
		if req.Budget == nil {
			return api.Group{}, badRequest("a budget change names the budget")
		}
		b := syncgroup.Budget(*req.Budget)
		c.Budget = &b
	}
	if op == syncgroup.AddAdmin || op == syncgroup.RemoveAdmin {
		p, err := s.memberPeer(syncnode.GroupID(req.Group), req.Peer)
		if err != nil {
			return api.Group{}, err
		}
		c.Peer = p
	}
	spec, err := s.n.ChangeGroup(syncnode.GroupID(req.Group), c)
	if err != nil {
		return api.Group{}, err
	}
	return groupView(spec), nil
}

func (s *server) listGroups(*http.Request) ([]api.Group, error) {
	out := []api.Group{}
	for _, spec := range s.n.Groups() {
		out = append(out, groupView(spec))
	}
	return out, nil
}

func (s *server) invite(r *http.Request) (api.Invitation, error) {
	var req api.InviteRequest
	if err := decode(r, &req); err != nil {
		return api.Invitation{}, err
	}
	p, err := peer.Decode(req.Peer)
	if err != nil {
		return api.Invitation{}, badRequest("peer %q is no peer ID (the joiner's `syncnode status` prints it): %v", req.Peer, err)
	}
	dev, err := syncnode.ParseDevType(req.DevType)
	if err != nil {
		return api.Invitation{}, badRequest("%v", err)
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			return api.Invitation{}, badRequest("ttl %q", req.TTL)
		}
	}
	inv, err := s.n.Invite(syncnode.GroupID(req.Group), p, dev, ttl)
	if err != nil {
		return api.Invitation{}, err
	}
	b, err := inv.Marshal()
	if err != nil {
		return api.Invitation{}, err
	}
	return api.Invitation{Invitation: b}, nil
}

func (s *server) join(r *http.Request) (api.Group, error) {
	var req api.Invitation
	if err := decode(r, &req); err != nil {
		return api.Group{}, err
	}
	inv, err := syncgroup.UnmarshalInvitation(req.Invitation)
	if err != nil {
		return api.Group{}, badRequest("%v", err)
	}
	var addrs []ma.Multiaddr
	for _, a := range req.AdminAddrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return api.Group{}, badRequest("address %q: %v", a, err)
		}
		addrs = append(addrs, m)
	}
	spec, err := s.n.JoinGroup(r.Context(), inv, addrs...)
	if err != nil {
		return api.Group{}, err
	}
	return groupView(spec), nil
}

func (s *server) leave(r *http.Request) (api.Left, error) {
	var req api.GroupRequest
	if err := decode(r, &req); err != nil {
		return api.Left{}, err
	}
	atRisk, err := s.n.LeaveGroupWith(r.Context(), syncnode.GroupID(req.Group), node.LeaveOptions{Force: req.Force})
	if err != nil {
		return api.Left{}, err
	}
	out := api.Left{Left: req.Group}
	for _, ref := range atRisk {
		out.AtRisk = append(out.AtRisk, ref.String())
	}
	return out, nil
}

// eject ejects a member, or with DryRun says what the ejection would do
// about the blobs it keeps shares of.
func (s *server) eject(r *http.Request) (api.Ejection, error) {
	var req api.EjectRequest
	if err := decode(r, &req); err != nil {
		return api.Ejection{}, err
	}
	g := syncnode.GroupID(req.Group)
	p, err := s.memberPeer(g, req.Peer)
	if err != nil {
		return api.Ejection{}, err
	}
	out := api.Ejection{Group: req.Group, Peer: p.String(), Name: s.n.NameOf(p), DryRun: req.DryRun}
	if req.DryRun {
		plan, err := s.n.PlanEjection(r.Context(), g, p)
		if err != nil {
			return api.Ejection{}, err
		}
		out.Member, out.Unanswered = plan.Member, plan.Unanswered
		out.Held, out.Fetch, out.AtRisk = refStrings(plan.Held), refStrings(plan.Fetch), refStrings(plan.AtRisk)
		return out, nil
	}
	out.Member = s.isMember(g, p)
	e, err := s.n.EjectMemberWith(r.Context(), g, p, node.EjectOptions{Force: req.Force})
	if err != nil {
		return api.Ejection{}, err
	}
	out.Ejected = true
	out.Held, out.Kept, out.AtRisk = refStrings(e.Held), refStrings(e.Kept), refStrings(e.AtRisk)
	return out, nil
}

// memberPeer reads who names: a peer ID, or the name of exactly one
// member of g.
func (s *server) memberPeer(g syncnode.GroupID, who string) (peer.ID, error) {
	if p, err := peer.Decode(who); err == nil {
		return p, nil
	}
	if _, err := s.n.GroupSpec(g); err != nil {
		return "", err
	}
	var found []peer.ID
	for _, m := range s.n.Members(g) {
		if m.Name != "" && m.Name == who {
			found = append(found, m.Peer)
		}
	}
	switch len(found) {
	case 0:
		return "", badRequest("%q is neither a peer ID nor the name of a member of %s", who, g)
	case 1:
		return found[0], nil
	}
	return "", badRequest("%d members of %s are named %q: give the peer ID", len(found), g, who)
}

func (s *server) isMember(g syncnode.GroupID, p peer.ID) bool {
	for _, m := range s.n.Members(g) {
		if m.Peer == p {
			return true
		}
	}
	return false
}

func refStrings(refs []syncnode.BlobRef) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.String())
	}
	return out
}

func (s *server) members(r *http.Request) ([]api.Member, error) {
	g := syncnode.GroupID(r.URL.Query().Get("group"))
	if _, err := s.n.GroupSpec(g); err != nil {
		return nil, err
	}
	out := []api.Member{}
	for _, m := range s.n.Members(g) {
		out = append(out, api.Member{Peer: m.Peer.String(), Name: m.Name, DevType: m.DevType.String(), Addrs: m.Addrs})
	}
	return out, nil
}

func rowView(r syncgroup.Row) api.Row {
	v, err := value.ToJSON(r.Value)
	if err != nil {
		v, _ = json.Marshal(map[string]string{"$undecodable": err.Error()})
	}
	return api.Row{Key: r.Key, Value: v, Writer: r.Writer.String(), Time: time.Unix(0, r.TS.Wall).UTC(), Seq: r.Seq}
}

func (s *server) putRow(r *http.Request) (api.Row, error) {
	var req api.RowRequest
	if err := decode(r, &req); err != nil {
		return api.Row{}, err
	}
	v, err := value.FromJSON(req.Value)
	if err != nil {
		return api.Row{}, badRequest("%v", err)
	}
	row, err := s.n.PutRow(syncnode.GroupID(req.Group), req.Key, v)
	if err != nil {
		return api.Row{}, err
	}
	return rowView(row), nil
}

// getRows answers one live row (with key) or the live rows under prefix.
func (s *server) getRows(r *http.Request) ([]api.Row, error) {
	q := r.URL.Query()
	g := syncnode.GroupID(q.Get("group"))
	if key := q.Get("key"); key != "" {
		row, ok, err := s.n.GetRow(g, key)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("row %q: %w", key, syncnode.ErrNotFound)
		}
		return []api.Row{rowView(row)}, nil
	}
	rows, err := s.n.ListRows(g, q.Get("prefix"))
	if err != nil {
		return nil, err
	}
	out := []api.Row{}
	for _, row := range rows {
		out = append(out, rowView(row))
	}
	return out, nil
}

func (s *server) deleteRow(r *http.Request) (api.Deleted, error) {
	q := r.URL.Query()
	row, err := s.n.DeleteRow(syncnode.GroupID(q.Get("group")), q.Get("key"))
	if err != nil {
		return api.Deleted{}, err
	}
	return api.Deleted{Deleted: row.Key, Time: time.Unix(0, row.TS.Wall).UTC(), Seq: row.Seq}, nil
}

func (s *server) peers(*http.Request) ([]api.Peer, error) {
	out := []api.Peer{}
	for _, p := range s.n.Peers() {
		pi := api.Peer{ID: p.ID.String(), Name: s.n.NameOf(p.ID)}
		for _, c := range p.Conns {
			pi.Addrs = append(pi.Addrs, c.Remote.String())
			if c.Relayed {
				pi.Relays = append(pi.Relays, c.Relay.String())
			} else {
				pi.Direct = true
			}
		}
		out = append(out, pi)
	}
	return out, nil
}

func (s *server) status(*http.Request) (api.Status, error) {
	ns := s.n.Stats()
	st := api.Status{ID: s.n.ID().String(), Groups: len(s.n.Groups()), Peers: len(s.n.Peers()),
		FetchQueue: ns.FetchQueue, Blobs: ns.Blobs, BlobBytes: ns.BlobBytes, TakingUp: ns.TakingUp,
		Uploads: s.n.UploadStats().Uploads, BytesOut: ns.BytesOut, BytesIn: ns.BytesIn,
		Unreferenced: ns.Unreferenced, Collected: ns.Collected, Pinned: ns.Pinned}
	for _, a := range s.n.Addrs() {
		st.Addrs = append(st.Addrs, a.String())
	}
	for p, n := range ns.RowsRefused {
		st.Refused = append(st.Refused, api.Refusal{Peer: p.String(), What: "rows", Count: n})
	}
	slices.SortFunc(st.Refused, func(a, b api.Refusal) int { return strings.Compare(a.Peer, b.Peer) })
	var serr error
	if st.Store, serr = s.n.StoreInfo(); serr != nil {
		st.StoreErr = serr.Error()
	}
	r := s.n.Reachability()
	st.Reachability = r.Status
	for _, p := range r.Relays {
		st.Relays = append(st.Relays, p.String())
	}
	dur, err := s.n.Durability()
	if err != nil {
		return st, err
	}
	for _, g := range dur {
		d := api.Durability{Group: string(g.Group), Copies: g.Copies, Referenced: g.Referenced, AtRisk: g.AtRisk}
		if spec, err := s.n.GroupSpec(g.Group); err == nil {
			for _, a := range spec.Admins {
				d.Admins = append(d.Admins, peerName(s.n, a))
			}
		}
		for _, r := range g.AtRiskRefs {
			d.AtRiskRefs = append(d.AtRiskRefs, r.String())
		}
		st.Durability = append(st.Durability, d)
	}
	return st, nil
}

// maxPage bounds a page of rows.
const maxPage = 10_000

// rowsPage answers a page of a group's rows: ?group, prefix, start (a
// key, inclusive) and limit (at most maxPage).
func (s *server) rowsPage(r *http.Request) (api.RowsPage, error) {
	q := r.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit <= 0 || limit > maxPage {
		return api.RowsPage{}, badRequest("limit %q: from 1 to %d", q.Get("limit"), maxPage)
	}
	rows, next, err := s.n.ListRowsFrom(syncnode.GroupID(q.Get("group")), q.Get("prefix"), q.Get("start"), limit)
	if err != nil {
		return api.RowsPage{}, err
	}
	out := api.RowsPage{Rows: make([]api.Row, 0, len(rows)), Next: next}
	for _, row := range rows {
		out.Rows = append(out.Rows, rowView(row))
	}
	return out, nil
}

// putRows writes a batch of rows: all, or none.
func (s *server) putRows(r *http.Request) ([]api.Row, error) {
	var req api.RowsRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	kvs := make([]syncgroup.KV, 0, len(req.Rows))
	for i, row := range req.Rows {
		v, err := value.FromJSON(row.Value)
		if err != nil {
			return nil, badRequest("row %d (%q): %v", i+1, row.Key, err)
		}
		kvs = append(kvs, syncgroup.KV{Key: row.Key, Value: v})
	}
	rows, err := s.n.PutRows(syncnode.GroupID(req.Group), kvs)
	if err != nil {
		return nil, err
	}
	out := make([]api.Row, 0, len(rows))
	for _, row := range rows {
		out = append(out, rowView(row))
	}
	return out, nil
}

// peerName names p as the status shows a peer: its name and ID, or its
// ID alone.
func peerName(n *node.Node, p peer.ID) string {
	if name := n.NameOf(p); name != "" {
		return name + " (" + p.String() + ")"
	}
	return p.String()
}
