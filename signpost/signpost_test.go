package signpost

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// testPeer returns a valid, deterministic peer ID (an identity multihash).
func testPeer(i int) peer.ID {
	m, err := mh.Sum(fmt.Appendf(nil, "peer-%04d", i), mh.IDENTITY, -1)
	if err != nil {
		panic(err)
	}
	return peer.ID(m)
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func randLocated(rng *rand.Rand) Located {
	return Located{Peer: testPeer(rng.IntN(3)), Location: Location{
		WhenSeen: t0.Add(time.Duration(rng.IntN(3)) * time.Second),
		IsServer: rng.IntN(2) == 0, IsProxy: rng.IntN(2) == 0,
	}}
}

func TestBetterIsStrictWeakOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	ls := make([]Located, 60)
	for i := range ls {
		ls[i] = randLocated(rng)
	}
	equiv := func(a, b Located) bool { return !Better(a, b) && !Better(b, a) }
	for _, a := range ls {
		if Better(a, a) {
			t.Fatalf("irreflexivity: %+v", a)
		}
		for _, b := range ls {
			if Better(a, b) && Better(b, a) {
				t.Fatalf("asymmetry: %+v %+v", a, b)
			}
			for _, c := range ls {
				if Better(a, b) && Better(b, c) && !Better(a, c) {
					t.Fatalf("transitivity: %+v %+v %+v", a, b, c)
				}
				if equiv(a, b) && equiv(b, c) && !equiv(a, c) {
					t.Fatalf("transitivity of incomparability: %+v %+v %+v", a, b, c)
				}
			}
		}
	}
}

func TestMergeRules(t *testing.T) {
	var s Signpost
	s.legacyAttempts = 5
	s.AddGroup("g1")
	s.AddLocation(testPeer(1), Location{WhenSeen: t0, Addrs: []string{"/ip4/127.0.0.1/tcp/1"}})
	o := Signpost{legacyAttempts: 99}
	o.AddGroup("g2")
	o.AddLocation(testPeer(1), Location{WhenSeen: t0.Add(time.Minute), IsServer: true})
	o.AddLocation(testPeer(2), Location{WhenSeen: t0.Add(2 * time.Minute)})
	o.AddLocation(testPeer(3), Location{WhenSeen: t0.Add(3 * time.Minute), IsProxy: true})
	o.AddLocation(testPeer(4), Location{WhenSeen: t0})
	o.AddLocation(testPeer(5), Location{WhenSeen: t0.Add(4 * time.Minute)})
	s.Merge(o)
	if s.legacyAttempts != 5 {
		t.Fatalf("legacy attempt count %d, merged from a peer", s.legacyAttempts)
	}
	if len(s.SgIDs) != 2 {
		t.Fatalf("groups = %v, want the union", s.Groups())
	}
	got := s.Ranked()
	want := []peer.ID{testPeer(1), testPeer(5), testPeer(2), testPeer(4)} // server, then holders newest first; the proxy is trimmed
	if len(got) != MaxLocations {
		t.Fatalf("%d locations, want %d", len(got), MaxLocations)
	}
	for i, l := range got {
		if l.Peer != want[i] {
			t.Fatalf("rank %d = %s, want %s", i, l.Peer, want[i])
		}
	}
	if !got[0].WhenSeen.Equal(t0.Add(time.Minute)) || !got[0].IsServer {
		t.Fatalf("peer 1 kept the older sighting: %+v", got[0])
	}
	// An older sighting never replaces a newer one.
	s.AddLocation(testPeer(1), Location{WhenSeen: t0})
	if l := s.Locations[testPeer(1)]; !l.WhenSeen.Equal(t0.Add(time.Minute)) {
		t.Fatalf("older sighting won: %+v", l)
	}
}

func randSignpost(rng *rand.Rand) Signpost {
	var s Signpost
	for range rng.IntN(4) {
		s.AddGroup(syncnode.GroupID(fmt.Sprint("g", rng.IntN(5))))
	}
	for range rng.IntN(6) {
		l := randLocated(rng)
		l.Peer = testPeer(rng.IntN(8))
		if rng.IntN(2) == 0 {
			l.Addrs = []string{fmt.Sprint("/ip4/127.0.0.1/tcp/", rng.IntN(3))}
		}
		s.AddLocation(l.Peer, l.Location)
	}
	return s
}

func clone(s Signpost) Signpost {
	var c Signpost
	c.Merge(s)
	c.legacyAttempts = s.legacyAttempts
	return c
}

func TestMergeIsCommutativeAndIdempotent(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for range 2000 {
		a, b := randSignpost(rng), randSignpost(rng)
		ab, ba := clone(a), clone(b)
		ab.Merge(b)
		ba.Merge(a)
		if !Equal(ab, ba) {
			t.Fatalf("merge not commutative:\n a=%+v\n b=%+v\n ab=%+v\n ba=%+v", a, b, ab, ba)
		}
		// Merging what is already known changes nothing. (Re-merging b
		// itself may: a newer non-server sighting of a peer can be trimmed,
		// and b's older server sighting of it then ranks in again.)
		again := clone(ab)
		again.Merge(ab)
		if !Equal(again, ab) {
			t.Fatalf("merge not idempotent: %+v vs %+v", again, ab)
		}
	}
}

type policy struct {
	visible map[syncnode.GroupID]bool
	members map[peer.ID]syncnode.GroupID
}

func (p policy) CanSee(_ peer.ID, g syncnode.GroupID) bool { return p.visible[g] }
func (p policy) IsMember(id peer.ID, g syncnode.GroupID) bool {
	m, ok := p.members[id]
	return ok && m == g
}

func TestFilter(t *testing.T) {
	var s Signpost
	s.legacyAttempts = 3
	s.AddGroup("public")
	s.AddGroup("secret")
	s.AddLocation(testPeer(1), Location{WhenSeen: t0, IsServer: true}) // server: always shown
	s.AddLocation(testPeer(2), Location{WhenSeen: t0})                 // member of public
	s.AddLocation(testPeer(3), Location{WhenSeen: t0})                 // member of secret only
	pol := policy{
		visible: map[syncnode.GroupID]bool{"public": true},
		members: map[peer.ID]syncnode.GroupID{testPeer(2): "public", testPeer(3): "secret"},
	}
	f := Filter(s, testPeer(9), pol)
	if len(f.SgIDs) != 1 || f.Groups()[0] != "public" {
		t.Fatalf("groups shown: %v", f.Groups())
	}
	if _, ok := f.Locations[testPeer(3)]; ok || len(f.Locations) != 2 {
		t.Fatalf("locations shown: %v", f.Ranked())
	}
	if f.legacyAttempts != 0 {
		t.Fatal("filter leaked the attempt count")
	}
}

func TestWireFormDropsTheAttemptCount(t *testing.T) {
	s := randSignpost(rand.New(rand.NewPCG(3, 3)))
	s.AddLocation(testPeer(1), Location{WhenSeen: t0, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}})
	s.legacyAttempts = 12
	b, err := s.MarshalWire()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalWire(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.legacyAttempts != 0 || !Equal(got, s) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
}

func TestUnmarshalWireRejects(t *testing.T) {
	good, _ := randSignpost(rand.New(rand.NewPCG(4, 4))).MarshalWire()
	tooMany := Wire{}
	for i := range MaxLocations + 1 {
		tooMany.Locs = append(tooMany.Locs, WireLoc{Peer: []byte(testPeer(i))})
	}
	badPeer := Wire{Locs: []WireLoc{{Peer: []byte{0xff, 0x01}}}}
	dup := Wire{Locs: []WireLoc{{Peer: []byte(testPeer(1))}, {Peer: []byte(testPeer(1))}}}
	emptyGroup := Wire{Groups: []string{""}}
	for name, w := range map[string]Wire{"tooMany": tooMany, "badPeer": badPeer, "dup": dup, "emptyGroup": emptyGroup} {
		b, _ := msgpackMarshal(w)
		if _, err := UnmarshalWire(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	for name, b := range map[string][]byte{"truncated": good[:len(good)/2], "garbage": {0xc1}, "empty": nil} {
		if _, err := UnmarshalWire(b); !errors.Is(err, syncnode.ErrCorruptRecord) {
			t.Errorf("%s: %v, want ErrCorruptRecord", name, err)
		}
	}
}

func FuzzUnmarshalWire(f *testing.F) {
	for i := range 4 {
		b, _ := randSignpost(rand.New(rand.NewPCG(uint64(i), 5))).MarshalWire()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := UnmarshalWire(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, syncnode.ErrCorruptRecord) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		b2, err := s.MarshalWire()
		if err != nil {
			t.Fatal(err)
		}
		s2, err := UnmarshalWire(b2)
		if err != nil || !Equal(s, s2) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func openDB(t testing.TB, dir string) *badger.DB {
	db, err := kv.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestStorePersistsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	st := NewStore(db)
	ref := syncnode.RefFromHash([32]byte{1})
	if _, err := st.Get(ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	sp := randSignpost(rand.New(rand.NewPCG(6, 6)))
	if _, err := st.Merge(ref, sp); err != nil {
		t.Fatal(err)
	}
	// An older version kept the fetch attempt count in the signpost.
	if err := kv.Update(db, func(txn *badger.Txn) error {
		return kv.Set(txn, key(ref), kv.KindSignpost, disk{Wire: sp.ToWire(), FetchAttempts: 7})
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = openDB(t, dir)
	defer db.Close()
	st = NewStore(db)
	got, err := st.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if !Equal(got, sp) {
		t.Fatalf("after reopen:\n got %+v\nwant %+v", got, sp)
	}
	if n, _ := st.LegacyAttempts(ref); n != 7 {
		t.Fatalf("legacy attempt count %d, want 7", n)
	}
	// Kept as it was through an update, until the journal takes it over.
	if _, err := st.Update(ref, func(sp *Signpost) { sp.AddGroup("later") }); err != nil {
		t.Fatal(err)
	}
	if n, _ := st.LegacyAttempts(ref); n != 7 {
		t.Fatalf("legacy attempt count %d after an update, want 7", n)
	}
	// A corrupt record is an error naming the blob, never a panic.
	bad := syncnode.RefFromHash([32]byte{2})
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(key(bad), []byte{0xa7, 's', 1, 0xc1}) }); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(bad); !errors.Is(err, syncnode.ErrCorruptRecord) {
		t.Fatalf("Get corrupt: %v", err)
	}
	if err := st.Scan(func(syncnode.BlobRef, Signpost) error { return nil }); !errors.Is(err, syncnode.ErrCorruptRecord) {
		t.Fatalf("Scan over corrupt: %v", err)
	}
}

// TestRelaysNeverPushOutTheWriter: a row reaches a member through its
// writer and then, relayed, through four more members, each recorded as a
// proxy and seen later than the writer. The signpost keeps four
// locations, and the writer, the one known holder, is among them: in a
// private group, where nothing is announced in the DHT, it is the only
// way to find the blob.
func TestRelaysNeverPushOutTheWriter(t *testing.T) {
	var s Signpost
	s.AddLocation(testPeer(0), Location{WhenSeen: t0})
	for i := 1; i <= 4; i++ {
		s.AddLocation(testPeer(i), Location{WhenSeen: t0.Add(time.Duration(i) * time.Second), IsProxy: true})
	}
	if len(s.Locations) != MaxLocations {
		t.Fatalf("%d locations, want %d", len(s.Locations), MaxLocations)
	}
	if l, ok := s.Locations[testPeer(0)]; !ok || l.IsProxy {
		t.Fatalf("the writer was pushed out by relays: %v", s.Ranked())
	}
	if got := s.Ranked()[0].Peer; got != testPeer(0) {
		t.Fatalf("ranked first: %s, want the writer", got)
	}
	// A server still ranks first.
	s.AddLocation(testPeer(9), Location{WhenSeen: t0, IsServer: true})
	if got := s.Ranked(); got[0].Peer != testPeer(9) || got[1].Peer != testPeer(0) {
		t.Fatalf("ranked %v, want the server, then the writer", got)
	}
}

// TestScanGroupsReadsWhatScanReads: the groups ScanGroups gives for a
// range are those of the signposts Scan gives there, and a record it
// cannot decode stops it with an error naming the blob.
func TestScanGroupsReadsWhatScanReads(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	st := NewStore(db)
	rng := rand.New(rand.NewPCG(9, 9))
	for i := range 64 {
		sp := randSignpost(rng)
		sp.AddGroup(syncnode.GroupID(fmt.Sprintf("g%d", i%5)))
		if _, err := st.Merge(syncnode.RefFromHash([32]byte{byte(i * 4), byte(i) + 1}), sp); err != nil {
			t.Fatal(err)
		}
	}
	want := map[syncnode.BlobRef][]syncnode.GroupID{}
	if err := st.Scan(func(ref syncnode.BlobRef, sp Signpost) error {
		if h := ref.Hash(); h[0] >= 40 && h[0] < 200 {
			want[ref] = sp.Groups()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got := map[syncnode.BlobRef][]syncnode.GroupID{}
	if err := st.ScanGroups(40, 200, func(ref syncnode.BlobRef, gs []syncnode.GroupID) error {
		got[ref] = gs
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(want) == 0 {
		t.Fatalf("ScanGroups gave %d signposts, Scan %d", len(got), len(want))
	}
	for ref, gs := range want {
		if fmt.Sprint(got[ref]) != fmt.Sprint(gs) {
			t.Errorf("%s: groups %v, want %v", ref, got[ref], gs)
		}
	}
	bad := syncnode.RefFromHash([32]byte{100, 1, 2})
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(key(bad), []byte{0xa7, 's', 1, 0xc1}) }); err != nil {
		t.Fatal(err)
	}
	err := st.ScanGroups(0, 256, func(syncnode.BlobRef, []syncnode.GroupID) error { return nil })
	if !errors.Is(err, syncnode.ErrCorruptRecord) {
		t.Fatalf("ScanGroups over a corrupt record: %v", err)
	}
	stop := errors.New("stop")
	if err := st.ScanGroups(0, 256, func(syncnode.BlobRef, []syncnode.GroupID) error { return stop }); err != stop {
		t.Fatalf("fn's error came back as %v", err)
	}
}
