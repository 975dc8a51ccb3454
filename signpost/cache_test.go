package signpost

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// TestCacheAgreesWithTheDatabase: concurrent updates of a few signposts
// and reads between them, with a cache far smaller than the refs so that
// entries come and go; afterwards every signpost read through the cache
// equals the one a fresh store reads from the database, and each update
// added what it said.
func TestCacheAgreesWithTheDatabase(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	st := NewStore(db)
	st.cache.size = 3
	refs := make([]syncnode.BlobRef, 8)
	for i := range refs {
		refs[i] = syncnode.RefFromHash([32]byte{byte(i), 9})
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 200 {
				ref := refs[rng.IntN(len(refs))]
				if rng.IntN(3) == 0 {
					st.Get(ref)
					continue
				}
				g := syncnode.GroupID(fmt.Sprintf("g/%d-%d", w, i))
				if _, err := st.Update(ref, func(sp *Signpost) { sp.AddGroup(g) }); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	fresh := NewStore(db)
	groups := 0
	for _, ref := range refs {
		got, err1 := st.Get(ref)
		want, err2 := fresh.Get(ref)
		if (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(got.Groups(), want.Groups()) {
			t.Fatalf("%s: cached %v (%v), in the database %v (%v)", ref, got.Groups(), err1, want.Groups(), err2)
		}
		groups += len(want.Groups())
	}
	if groups != 4*200-countReads(4, 200) {
		t.Fatalf("%d groups recorded, want one per update", groups)
	}
	if len(st.cache.entries) > 3 || st.cache.order.Len() > 3 {
		t.Fatalf("cache holds %d entries, bound 3", len(st.cache.entries))
	}
}

// countReads replays the workers' choices: how many of their steps read.
func countReads(workers, steps int) int {
	n := 0
	for w := range workers {
		rng := rand.New(rand.NewPCG(uint64(w), 1))
		for range steps {
			rng.IntN(8)
			if rng.IntN(3) == 0 {
				n++
			}
		}
	}
	return n
}

// TestCachedSignpostsAreCopies: changing a signpost a read or an update
// returned changes nothing stored or cached.
func TestCachedSignpostsAreCopies(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	st := NewStore(db)
	ref := syncnode.RefFromHash([32]byte{4})
	sp := randSignpost(rand.New(rand.NewPCG(3, 3)))
	sp.AddGroup("g/a")
	got, err := st.Merge(ref, sp)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := st.Get(ref)
	want := before.clone()
	for _, s := range []Signpost{got, before} {
		s.AddGroup("g/mutated")
		for p, l := range s.Locations {
			if len(l.Addrs) > 0 {
				l.Addrs[0] = "/ip4/6.6.6.6/tcp/1"
			}
			l.IsServer = !l.IsServer
			s.Locations[p] = l
		}
	}
	after, _ := st.Get(ref)
	if !reflect.DeepEqual(after, want) {
		t.Fatalf("a returned signpost's change reached the cache:\n%+v\nwant\n%+v", after, want)
	}
}

// TestUpdateAllIsUpdateInOrder: changing many signposts at once, some
// refs twice and more than one transaction's worth, leaves what the same
// changes made one by one leave, and returns each change's result.
func TestUpdateAllIsUpdateInOrder(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	batched, single := NewStore(db), NewStore(openDB(t, t.TempDir()))
	defer single.db.Close()
	rng := rand.New(rand.NewPCG(8, 8))
	refs := make([]syncnode.BlobRef, 2*updateChunk+30)
	for i := range refs {
		refs[i] = syncnode.RefFromHash([32]byte{byte(rng.IntN(40)), 1})
	}
	change := func(i int, sp *Signpost) {
		sp.AddGroup(syncnode.GroupID(fmt.Sprintf("g/%d", i)))
		sp.AddLocation(testPeer(i%5), Location{WhenSeen: t0})
	}
	got, err := batched.UpdateAll(refs, change)
	if err != nil {
		t.Fatal(err)
	}
	for i, ref := range refs {
		want, err := single.Update(ref, func(sp *Signpost) { change(i, sp) })
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got[i].Groups(), want.Groups()) {
			t.Fatalf("change %d of %s returned %v, one by one %v", i, ref, got[i].Groups(), want.Groups())
		}
	}
	for _, st := range []*Store{batched, NewStore(db)} {
		for _, ref := range refs {
			a, _ := st.Get(ref)
			b, _ := single.Get(ref)
			if !reflect.DeepEqual(a.Groups(), b.Groups()) || len(a.Locations) != len(b.Locations) {
				t.Fatalf("%s: %v, one by one %v", ref, a.Groups(), b.Groups())
			}
		}
	}
}

// TestGetAllIsGet: reading many signposts at once, some cached, some not,
// some missing and one named twice, gives what reading each gives.
func TestGetAllIsGet(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	st := NewStore(db)
	st.cache.size = 4
	var refs []syncnode.BlobRef
	for i := range 12 {
		ref := syncnode.RefFromHash([32]byte{byte(i), 3})
		refs = append(refs, ref)
		if i%3 == 2 {
			continue // never stored
		}
		if _, err := st.Update(ref, func(sp *Signpost) { sp.AddGroup(syncnode.GroupID(fmt.Sprint("g/", i))) }); err != nil {
			t.Fatal(err)
		}
	}
	refs = append(refs, refs[0])
	sps, ok, err := st.GetAll(refs)
	if err != nil {
		t.Fatal(err)
	}
	for i, ref := range refs {
		want, err := NewStore(db).Get(ref)
		if ok[i] != (err == nil) || !reflect.DeepEqual(sps[i].Groups(), want.Groups()) {
			t.Fatalf("%d: GetAll %v %v; Get %v %v", i, sps[i].Groups(), ok[i], want.Groups(), err)
		}
	}
}

// TestACorruptRecordCostsItsRefAlone: one stored signpost that no longer
// decodes fails neither a batch read nor a batch update of the others;
// the update writes it anew.
func TestACorruptRecordCostsItsRefAlone(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	st := NewStore(db)
	good, bad := syncnode.RefFromHash([32]byte{1, 5}), syncnode.RefFromHash([32]byte{2, 5})
	if _, err := st.Update(good, func(sp *Signpost) { sp.AddGroup("g/a") }); err != nil {
		t.Fatal(err)
	}
	if err := kv.Update(db, func(txn *badger.Txn) error { return txn.Set(key(bad), []byte{0xff, 0x01}) }); err != nil {
		t.Fatal(err)
	}
	sps, ok, err := st.GetAll([]syncnode.BlobRef{bad, good})
	if err != nil || ok[0] || !ok[1] || len(sps[1].Groups()) != 1 {
		t.Fatalf("batch read past a corrupt record: %v %v %v", sps, ok, err)
	}
	got, err := st.UpdateAll([]syncnode.BlobRef{bad, good}, func(_ int, sp *Signpost) { sp.AddGroup("g/b") })
	if err != nil || len(got[0].Groups()) != 1 || len(got[1].Groups()) != 2 {
		t.Fatalf("batch update past a corrupt record: %v %v", got, err)
	}
	if sp, err := NewStore(db).Get(bad); err != nil || len(sp.Groups()) != 1 {
		t.Fatalf("the corrupt record was not written anew: %v %v", sp, err)
	}
}
