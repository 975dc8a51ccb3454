package signposting

import (
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	tpeer "github.com/libp2p/go-libp2p/core/test"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// groups is a fixed membership: members[g][p] is p's device type in g.
type groups map[syncnode.GroupID]map[peer.ID]syncnode.DevType

func (gs groups) CanSee(p peer.ID, g syncnode.GroupID) bool   { return gs.IsMember(p, g) }
func (gs groups) IsMember(p peer.ID, g syncnode.GroupID) bool { _, ok := gs[g][p]; return ok }
func (gs groups) Groups() []syncnode.GroupID {
	var out []syncnode.GroupID
	for g := range gs {
		out = append(out, g)
	}
	return out
}
func (gs groups) Member(g syncnode.GroupID, p peer.ID) (syncgroup.Member, bool) {
	d, ok := gs[g][p]
	return syncgroup.Member{Peer: p, DevType: d}, ok
}
func (gs groups) Spec(g syncnode.GroupID) (syncgroup.Spec, error) {
	return syncgroup.Spec{ID: g, Private: true}, nil
}
func (gs groups) Members(g syncnode.GroupID) []syncgroup.Member {
	var out []syncgroup.Member
	for p, d := range gs[g] {
		out = append(out, syncgroup.Member{Peer: p, DevType: d})
	}
	return out
}
func (gs groups) MayFetch(p peer.ID, ids []syncnode.GroupID) bool {
	for _, g := range ids {
		if gs.IsMember(p, g) {
			return true
		}
	}
	return false
}

// A member's signpost is believed only as far as the membership vouches
// for it: groups the sender or this node is not in are dropped, a
// location naming this node is dropped, and a location counts as a
// server copy only when a server says so of itself.
func TestMergeBelievesOnlyWhatTheMembershipVouchesFor(t *testing.T) {
	db, err := kv.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	self, liar, server, stranger := tpeer.RandPeerIDFatal(t), tpeer.RandPeerIDFatal(t), tpeer.RandPeerIDFatal(t), tpeer.RandPeerIDFatal(t)
	shared, theirs := syncnode.GroupID("shared"), syncnode.GroupID("theirs")
	gs := groups{
		shared: {self: syncnode.Normal, liar: syncnode.Normal, server: syncnode.Server},
		theirs: {liar: syncnode.Normal},
	}
	b := New(self, signpost.NewStore(db), gs, func() []string { return nil }, nil, nil)
	ref := testkit.Ref(testkit.RandomBytes(64, 1))

	var sp signpost.Signpost
	sp.AddGroup(shared)
	sp.AddGroup(theirs)
	sp.AddLocation(self, signpost.Location{WhenSeen: time.Now()})
	sp.AddLocation(server, signpost.Location{IsServer: true, WhenSeen: time.Now()}) // named by the liar
	sp.AddLocation(stranger, signpost.Location{IsServer: true, WhenSeen: time.Now()})
	merged, ok := b.Merge(liar, ref, &sp)
	if !ok {
		t.Fatal("nothing merged")
	}
	if got := merged.Groups(); len(got) != 1 || got[0] != shared {
		t.Errorf("groups %v, want only the shared one", got)
	}
	if _, ok := merged.Locations[self]; ok {
		t.Error("a location naming this node was believed")
	}
	for p, l := range merged.Locations {
		if l.IsServer {
			t.Errorf("%s counted as a server copy on the word of another member", p)
		}
	}
	// The server's own word counts.
	var own signpost.Signpost
	own.AddGroup(shared)
	own.AddLocation(server, signpost.Location{IsServer: true, WhenSeen: time.Now()})
	if merged, ok = b.Merge(server, ref, &own); !ok || !merged.Locations[server].IsServer {
		t.Errorf("the server's word about itself was not believed: %+v", merged.Locations[server])
	}
	// A peer in no group of this node's learns no group and no member's
	// location (only server copies, as signpost.Filter allows), and may
	// fetch nothing.
	if f, ok := b.For(stranger, ref); ok {
		if len(f.SgIDs) > 0 || len(f.Locations) != 1 || !f.Locations[server].IsServer {
			t.Errorf("a stranger was told %+v", f)
		}
	}
	if err := b.MayServe(stranger, ref); err == nil {
		t.Error("a stranger may fetch the blob")
	}
	if err := b.MayServe(liar, ref); err != nil {
		t.Errorf("a member of the blob's group may not fetch it: %v", err)
	}
}

// A peer's signpost does not bring back a group whose rows here no
// longer name the blob: a member could otherwise keep a collected blob
// on a server for good, or make it fetch the blob again.
func TestMergeDropsGroupsTheRowsLetGo(t *testing.T) {
	db, err := kv.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	self, member := tpeer.RandPeerIDFatal(t), tpeer.RandPeerIDFatal(t)
	photos, docs := syncnode.GroupID("photos"), syncnode.GroupID("docs")
	gs := groups{photos: {self: syncnode.Server, member: syncnode.Normal}, docs: {self: syncnode.Server, member: syncnode.Normal}}
	b := New(self, signpost.NewStore(db), gs, func() []string { return nil }, nil, nil)
	gone := testkit.Ref(testkit.RandomBytes(64, 2))
	b.SetUnreferenced(func(ref syncnode.BlobRef, g syncnode.GroupID) bool { return ref == gone && g == photos })

	var sp signpost.Signpost
	sp.AddGroup(photos)
	sp.AddLocation(member, signpost.Location{WhenSeen: time.Now()})
	if merged, ok := b.Merge(member, gone, &sp); ok || len(merged.SgIDs) != 0 {
		t.Fatalf("a peer's signpost brought back a group whose rows let the blob go: %v", merged.Groups())
	}
	// Another group, or another blob, is merged as before.
	sp = signpost.Signpost{}
	sp.AddGroup(photos)
	sp.AddGroup(docs)
	sp.AddLocation(member, signpost.Location{WhenSeen: time.Now()})
	if merged, ok := b.Merge(member, gone, &sp); !ok || len(merged.SgIDs) != 1 || merged.Groups()[0] != docs {
		t.Fatalf("merged %v, want only docs", merged.Groups())
	}
	other := testkit.Ref(testkit.RandomBytes(64, 3))
	sp = signpost.Signpost{}
	sp.AddGroup(photos)
	sp.AddLocation(member, signpost.Location{WhenSeen: time.Now()})
	if _, ok := b.Merge(member, other, &sp); !ok {
		t.Fatal("a referenced blob's signpost was dropped")
	}
}
