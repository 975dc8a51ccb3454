// Package signposting keeps a node's signposts in step with its groups:
// what rows and members say of where blobs are, checked against the
// membership before it is believed, and what each peer may be told.
package signposting

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// ErrAccess reports a request for a blob the requester may not fetch.
var ErrAccess = errors.New("signposting: access denied")

// Groups is the membership of this node's groups, as signposting checks
// what it is told against it.
type Groups interface {
	signpost.Policy
	// Groups lists the groups this node is in.
	Groups() []syncnode.GroupID
	// Member returns p's membership of g.
	Member(g syncnode.GroupID, p peer.ID) (syncgroup.Member, bool)
	// Spec returns g's spec.
	Spec(g syncnode.GroupID) (syncgroup.Spec, error)
	// MayFetch reports whether p may fetch a blob of groups.
	MayFetch(p peer.ID, groups []syncnode.GroupID) bool
	// Members lists g's members.
	Members(g syncnode.GroupID) []syncgroup.Member
}

// Book is one node's signposts, kept against its groups.
type Book struct {
	self   peer.ID
	store  *signpost.Store
	groups Groups
	// addrs returns this node's addresses as its memberships publish
	// them.
	addrs func() []string
	// dial learns where a peer may be dialled: addresses a signpost or a
	// membership names.
	dial func(p peer.ID, addrs []string)
	// unreferenced reports a group whose rows, on this node, no longer
	// name a blob (see SetUnreferenced).
	unreferenced func(ref syncnode.BlobRef, g syncnode.GroupID) bool
	log          *slog.Logger
}

// New returns the book of store's signposts for node self; addrs returns
// this node's addresses, dial is told where others may be dialled.
func New(self peer.ID, store *signpost.Store, groups Groups, addrs func() []string, dial func(peer.ID, []string), log *slog.Logger) *Book {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dial == nil {
		dial = func(peer.ID, []string) {}
	}
	return &Book{self: self, store: store, groups: groups, addrs: addrs, dial: dial, log: log}
}

// SetUnreferenced makes Merge drop, from a peer's signpost, the groups
// whose rows on this node no longer reference the blob: a peer's word
// neither keeps a blob the rows let go nor makes a server fetch it again.
// It is called once, before the book is used.
func (b *Book) SetUnreferenced(fn func(ref syncnode.BlobRef, g syncnode.GroupID) bool) {
	b.unreferenced = fn
}

// Signpost returns ref's signpost (syncnode.ErrNotFound: none).
func (b *Book) Signpost(ref syncnode.BlobRef) (signpost.Signpost, error) { return b.store.Get(ref) }

// MembersOf returns the other members of those of groups this node is in,
// servers first, each once, their addresses learnt.
func (b *Book) MembersOf(groups []syncnode.GroupID) []peer.ID {
	var servers, others []peer.ID
	seen := map[peer.ID]bool{b.self: true}
	for _, g := range groups {
		if !b.groups.IsMember(b.self, g) {
			continue
		}
		for _, m := range b.groups.Members(g) {
			if seen[m.Peer] {
				continue
			}
			seen[m.Peer] = true
			b.dial(m.Peer, m.Addrs)
			if m.DevType == syncnode.Server {
				servers = append(servers, m.Peer)
			} else {
				others = append(others, m.Peer)
			}
		}
	}
	return append(servers, others...)
}

// Get returns ref's signpost (syncnode.ErrNotFound: none).
func (b *Book) Get(ref syncnode.BlobRef) (signpost.Signpost, error) { return b.store.Get(ref) }

// GroupsOf returns the groups ref's signpost names.
func (b *Book) GroupsOf(ref syncnode.BlobRef) []syncnode.GroupID {
	sp, err := b.store.Get(ref)
	if err != nil {
		return nil
	}
	return sp.Groups()
}

// Merge merges a signpost peer from sent. Only groups that the sender
// shares with this node are kept (a peer cannot make this node's server
// fetcher act for a group it is not in), and not those whose rows here no
// longer reference the blob (SetUnreferenced), and a location naming this node
// is dropped: this node knows better what it holds. sp is left filtered;
// ok is false if nothing was left to merge.
func (b *Book) Merge(from peer.ID, ref syncnode.BlobRef, sp *signpost.Signpost) (signpost.Signpost, bool) {
	if !b.admit(from, ref, sp) {
		return signpost.Signpost{}, false
	}
	merged, err := b.store.Merge(ref, *sp)
	if err != nil {
		b.log.Error("signpost not merged", "blob", ref, "err", err)
		return signpost.Signpost{}, false
	}
	return merged, true
}

// admit filters a signpost from for Merge, and reports whether anything
// is left to merge.
func (b *Book) admit(from peer.ID, ref syncnode.BlobRef, sp *signpost.Signpost) bool {
	for g := range sp.SgIDs {
		if !b.groups.IsMember(from, g) || !b.groups.IsMember(b.self, g) || b.unreferenced != nil && b.unreferenced(ref, g) {
			delete(sp.SgIDs, g)
		}
	}
	delete(sp.Locations, b.self)
	// A location counts as a server copy only on the server's own word
	// (its signpost naming itself) and only if the membership says it is a
	// server in one of the blob's groups: a member cannot make a blob look
	// safe by naming a server, real or invented, as its holder.
	for p, l := range sp.Locations {
		l.IsServer = p == from && b.IsServerMember(p, sp.Groups())
		sp.Locations[p] = l
	}
	return len(sp.SgIDs) > 0 && len(sp.Locations) > 0
}

// Learn merges the signpost a peer that lacks ref answered with, and
// learns where its locations may be dialled. An answer about a blob this
// node knows from rows names no group of its own: which groups reference
// a blob, rows tell, not a peer's word.
func (b *Book) Learn(from peer.ID, ref syncnode.BlobRef, sp *signpost.Signpost) {
	for p, l := range sp.Locations {
		b.dial(p, l.Addrs)
	}
	if mine := b.GroupsOf(ref); len(mine) > 0 {
		for g := range sp.SgIDs {
			if !slices.Contains(mine, g) {
				delete(sp.SgIDs, g)
			}
		}
	}
	b.Merge(from, ref, sp)
}

// For answers a peer that asks about a blob this node lacks: what it may
// see of the signpost, if anything.
func (b *Book) For(requester peer.ID, ref syncnode.BlobRef) (signpost.Signpost, bool) {
	sp, err := b.store.Get(ref)
	if err != nil {
		return signpost.Signpost{}, false
	}
	f := signpost.Filter(sp, requester, b.groups)
	return f, len(f.Locations) > 0
}

// MayServe decides whether requester may fetch ref from this node: only
// if the blob was learned through a group the requester may see.
func (b *Book) MayServe(requester peer.ID, ref syncnode.BlobRef) error {
	sp, err := b.store.Get(ref)
	if err != nil {
		return fmt.Errorf("%w: %s is in no syncgroup shared with %s", ErrAccess, ref, requester)
	}
	if !b.groups.MayFetch(requester, sp.Groups()) {
		return fmt.Errorf("%w: %s may not see the syncgroups of %s", ErrAccess, requester, ref)
	}
	return nil
}

// Record records blob refs found in a row of group g at key, written by
// writer and received from from (this node, for a local write): groups
// (those of this node that cover key) join the signposts, and the writer
// and the sender become locations (the sender as a proxy if it did not
// write the row); this node, when it writes a row of a blob it holds.
func (b *Book) Record(g syncnode.GroupID, groups []syncnode.GroupID, writer, from peer.ID, ref syncnode.BlobRef, holds bool) error {
	return b.RecordAll(g, []Found{{Groups: groups, Writer: writer, From: from, Ref: ref, Holds: holds}})
}

// Held names this node a holder of ref, a server one if it is a server in
// one of ref's groups.
func (b *Book) Held(ref syncnode.BlobRef) {
	sp, err := b.store.Get(ref)
	if err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		b.log.Error("signpost unreadable", "blob", ref, "err", err)
		return
	}
	var g syncnode.GroupID
	if gs := sp.Groups(); len(gs) > 0 {
		g = gs[0]
	}
	loc := b.Location(g, b.self, false)
	loc.IsServer = b.IsServerIn(sp.Groups())
	b.add(ref, b.self, loc)
}

// Dropped stops naming this node a holder of ref.
func (b *Book) Dropped(ref syncnode.BlobRef) { b.Forget(ref, []peer.ID{b.self}) }

// Forget drops peers from ref's signpost: they no longer hold it, or they
// sent bytes that did not verify.
func (b *Book) Forget(ref syncnode.BlobRef, peers []peer.ID) {
	_, err := b.store.Update(ref, func(sp *signpost.Signpost) {
		for _, p := range peers {
			delete(sp.Locations, p)
		}
	})
	if err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		b.log.Error("signpost not updated", "blob", ref, "err", err)
	}
}

// Took names member p of g a holder of ref: it accepted shares this node
// offered, which it does only holding the blob verified — how a device
// learns its blob is safe.
func (b *Book) Took(ref syncnode.BlobRef, g syncnode.GroupID, p peer.ID) {
	b.add(ref, p, b.Location(g, p, false))
}

func (b *Book) add(ref syncnode.BlobRef, p peer.ID, loc signpost.Location) {
	if _, err := b.store.Update(ref, func(sp *signpost.Signpost) { sp.AddLocation(p, loc) }); err != nil {
		b.log.Error("signpost not updated", "blob", ref, "err", err)
	}
}

// Location describes member p of g as a place a blob may be.
func (b *Book) Location(g syncnode.GroupID, p peer.ID, proxy bool) signpost.Location {
	l := signpost.Location{WhenSeen: time.Now(), IsProxy: proxy}
	if m, ok := b.groups.Member(g, p); ok {
		l.IsServer = m.DevType == syncnode.Server
		l.Addrs = m.Addrs
	}
	if p == b.self {
		l.Addrs = b.addrs()
	}
	if len(l.Addrs) > signpost.MaxAddrs {
		l.Addrs = l.Addrs[:signpost.MaxAddrs]
	}
	return l
}

// Covering returns g and this node's other groups whose prefixes cover
// key.
func (b *Book) Covering(g syncnode.GroupID, key string) []syncnode.GroupID {
	out := []syncnode.GroupID{g}
	for _, id := range b.groups.Groups() {
		if id == g {
			continue
		}
		if s, err := b.groups.Spec(id); err == nil && s.Covers(key) && b.groups.IsMember(b.self, id) {
			out = append(out, id)
		}
	}
	return out
}

// Public reports whether a blob that groups reference may be named in the
// DHT, announced or looked up: no group of this node references it, or a
// public one does. A group whose spec cannot be read counts as private.
func (b *Book) Public(groups []syncnode.GroupID) bool {
	if len(groups) == 0 {
		return true
	}
	for _, g := range groups {
		if spec, err := b.groups.Spec(g); err == nil && !spec.Private {
			return true
		}
	}
	return false
}

// Announced reports whether a held blob is provided in the DHT: a public
// group this node is in references it. A blob that only private groups
// reference is never announced: the DHT is open to strangers, and a
// provider record would tell them the ref and who holds it. Members find
// it through signposts.
func (b *Book) Announced(ref syncnode.BlobRef) bool {
	for _, g := range b.GroupsOf(ref) {
		spec, err := b.groups.Spec(g)
		if err == nil && !spec.Private && b.groups.IsMember(b.self, g) {
			return true
		}
	}
	return false
}

// IsServerMember reports whether the membership makes p a server in one
// of groups.
func (b *Book) IsServerMember(p peer.ID, groups []syncnode.GroupID) bool {
	for _, g := range groups {
		if m, ok := b.groups.Member(g, p); ok && m.DevType == syncnode.Server {
			return true
		}
	}
	return false
}

// Groups lists the groups this node is in.
func (b *Book) Groups() []syncnode.GroupID { return b.groups.Groups() }

// IsServerIn reports whether this node is a server in any of groups.
func (b *Book) IsServerIn(groups []syncnode.GroupID) bool { return b.IsServerMember(b.self, groups) }

// GroupDurability says how safe one group's blobs are, as far as this node
// knows.
type GroupDurability struct {
	Group syncnode.GroupID
	// Copies is how many verified server copies the group wants.
	Copies int
	// Referenced is the blobs rows of the group reference.
	Referenced int
	// AtRisk is those with fewer verified server copies known than the
	// group wants: server locations in the signpost (each on the server's
	// own word), and this node's copy if it is a server of the group.
	AtRisk int
	// AtRiskRefs lists up to 100 of them.
	AtRiskRefs []syncnode.BlobRef
}

// ServerCopies returns how many servers of group g are known to hold ref
// verified, by sp (ref's signpost): the server locations of members that
// are servers of g (on their own word, see Merge), and this node if it is
// one and holds a copy.
func (b *Book) ServerCopies(g syncnode.GroupID, sp signpost.Signpost, heldHere bool) int {
	n := 0
	for p, l := range sp.Locations {
		if l.IsServer && !l.IsProxy && p != b.self && b.IsServerMember(p, []syncnode.GroupID{g}) {
			n++
		}
	}
	if heldHere && b.IsServerMember(b.self, []syncnode.GroupID{g}) {
		n++
	}
	return n
}

// CopiesMet reports whether every group ref was learned through has the
// verified server copies it wants apart from this node's: what lets a
// device evict its copy once its shares moved (a group that wants one
// copy has it once a server took the shares). A blob no group refers to
// has none.
func (b *Book) CopiesMet(ref syncnode.BlobRef) (bool, error) {
	sp, err := b.store.Get(ref)
	if errors.Is(err, syncnode.ErrNotFound) {
		return false, nil
	}
	if err != nil || len(sp.SgIDs) == 0 {
		return false, err
	}
	for g := range sp.SgIDs {
		if k := b.CopiesWanted(g); k > 1 && b.ServerCopies(g, sp, false) < k {
			return false, nil
		}
	}
	return true, nil
}

// CopiesWanted returns how many verified server copies group g wants.
func (b *Book) CopiesWanted(g syncnode.GroupID) int {
	spec, err := b.groups.Spec(g)
	if err != nil {
		return 1
	}
	return spec.ServerCopies()
}

// Durability returns, per group this node is in, how many referenced
// blobs have fewer verified server copies known than the group wants;
// holds reports a blob held here.
func (b *Book) Durability(holds func(syncnode.BlobRef) bool) ([]GroupDurability, error) {
	byGroup := map[syncnode.GroupID]*GroupDurability{}
	var order []syncnode.GroupID
	for _, g := range b.groups.Groups() {
		byGroup[g] = &GroupDurability{Group: g, Copies: b.CopiesWanted(g)}
		order = append(order, g)
	}
	err := b.store.Scan(func(ref syncnode.BlobRef, sp signpost.Signpost) error {
		held := -1 // not asked yet
		for g := range sp.SgIDs {
			d := byGroup[g]
			if d == nil {
				continue
			}
			if held < 0 {
				held = 0
				if holds(ref) {
					held = 1
				}
			}
			d.Referenced++
			if b.ServerCopies(g, sp, held == 1) < d.Copies {
				d.AtRisk++
				if len(d.AtRiskRefs) < 100 {
					d.AtRiskRefs = append(d.AtRiskRefs, ref)
				}
			}
		}
		return nil
	})
	slices.Sort(order)
	out := make([]GroupDurability, 0, len(order))
	for _, g := range order {
		out = append(out, *byGroup[g])
	}
	return out, err
}
