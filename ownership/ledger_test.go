package ownership

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

func openDB(t *testing.T, dir string) *badger.DB {
	t.Helper()
	db, err := kv.Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func ref(i int) syncnode.BlobRef { return syncnode.RefFromHash([32]byte{byte(i + 1)}) }

// total sums the shares of ref in g over all ledgers, counting escrowed
// shares whose transfer the acceptor has not accepted.
func total(t *testing.T, ls []*Ledger, r syncnode.BlobRef, g syncnode.GroupID) int {
	t.Helper()
	n := 0
	for _, l := range ls {
		s, err := l.Shares(r)
		if err != nil {
			t.Fatal(err)
		}
		n += s[g]
	}
	return n
}

func TestLedgerTransferAndReopen(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := NewLedger(openDB(t, dirA)), NewLedger(openDB(t, dirB))
	r := ref(0)
	if err := a.Grant(r, "g", CreatorShares); err != nil {
		t.Fatal(err)
	}
	normal, srv := prio(syncnode.Normal, 1, t0), prio(syncnode.Server, 0, t0)
	id := NewTransferID()
	tr, err := a.Offer(id, r, "g", normal, srv, "")
	if err != nil || tr.N != 2 {
		t.Fatalf("Offer = %+v, %v", tr, err)
	}
	if ok, _ := a.MayEvict(r); ok {
		t.Fatal("may evict with shares in escrow")
	}
	if err := b.Accept(tr, false); !errors.Is(err, ErrUnverified) {
		t.Fatalf("Accept unverified: %v", err)
	}
	if err := b.Accept(tr, true); err != nil {
		t.Fatal(err)
	}
	if err := b.Accept(tr, true); err != nil { // a retry adds nothing
		t.Fatal(err)
	}
	keeps, err := a.Settle(r, id, true)
	if err != nil || keeps {
		t.Fatalf("Settle = %v, %v; want the holder to keep nothing", keeps, err)
	}
	a.db.Close()
	b.db.Close()
	a, b = NewLedger(openDB(t, dirA)), NewLedger(openDB(t, dirB))
	defer a.db.Close()
	defer b.db.Close()
	if ok, _ := a.MayEvict(r); !ok {
		t.Fatal("holder may not evict after giving all shares to a server")
	}
	if s, _ := b.Shares(r); s["g"] != 2 {
		t.Fatalf("server shares after reopen = %v", s)
	}
	// A refused transfer can never be accepted afterwards.
	id2 := NewTransferID()
	if acc, err := b.Resolve(id2); err != nil || acc {
		t.Fatalf("Resolve unknown = %v, %v", acc, err)
	}
	if err := b.Accept(Transfer{ID: id2, Ref: r, Group: "g", N: 1}, true); !errors.Is(err, ErrTransferClosed) {
		t.Fatalf("Accept after refusal: %v", err)
	}
}

// TestSharesConservedUnderConcurrentTransfers runs random transfers between
// four ledgers from many goroutines at once, with every interleaving of
// accept, duplicate accept, lost answers and refusal, and checks that the
// share total of every blob and group is what was granted.
func TestSharesConservedUnderConcurrentTransfers(t *testing.T) {
	const (
		devices = 4
		blobs   = 3
		workers = 8
		ops     = 150
	)
	groups := []syncnode.GroupID{"g1", "g2"}
	ls := make([]*Ledger, devices)
	for i := range ls {
		db := openDB(t, t.TempDir())
		defer db.Close()
		ls[i] = NewLedger(db)
	}
	// Device 0 created every blob: 2 shares per group.
	for b := range blobs {
		for _, g := range groups {
			if err := ls[0].Grant(ref(b), g, CreatorShares); err != nil {
				t.Fatal(err)
			}
		}
	}
	types := []syncnode.DevType{syncnode.Normal, syncnode.Server, syncnode.Normal, syncnode.Leaf}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for range ops {
				h, a := rng.IntN(devices), rng.IntN(devices)
				if h == a {
					continue
				}
				r, g := ref(rng.IntN(blobs)), groups[rng.IntN(len(groups))]
				// Random distances make normals outrank each other either way.
				hp := prio(types[h], rng.Float64()*3, t0)
				ap := prio(types[a], rng.Float64()*3, t0)
				id := NewTransferID()
				tr, err := ls[h].Offer(id, r, g, hp, ap, "")
				if errors.Is(err, ErrInEscrow) {
					continue // another transfer of these shares is unsettled
				}
				if err != nil {
					t.Error(err)
					return
				}
				if tr.N == 0 {
					continue
				}
				switch rng.IntN(4) {
				case 0: // the happy path
					if err := ls[a].Accept(tr, true); err != nil {
						t.Error(err)
					}
					ls[h].Settle(r, id, true)
				case 1: // accepted twice, and the holder's settle answer was lost: resolve
					ls[a].Accept(tr, true)
					ls[a].Accept(tr, true)
					acc, _ := ls[a].Resolve(id)
					ls[h].Settle(r, id, acc)
				case 2: // the acceptor never answered: refuse, then a late accept must fail
					acc, _ := ls[a].Resolve(id)
					ls[h].Settle(r, id, acc)
					if err := ls[a].Accept(tr, true); !errors.Is(err, ErrTransferClosed) {
						t.Errorf("late accept: %v", err)
					}
				case 3: // racing resolve and accept
					var acc bool
					var inner sync.WaitGroup
					inner.Add(2)
					go func() { defer inner.Done(); ls[a].Accept(tr, true) }()
					go func() { defer inner.Done(); acc, _ = ls[a].Resolve(id) }()
					inner.Wait()
					acc, _ = ls[a].Resolve(id) // the final word
					ls[h].Settle(r, id, acc)
				}
			}
		}()
	}
	wg.Wait()
	moved := 0
	for b := range blobs {
		for _, g := range groups {
			if n := total(t, ls, ref(b), g); n != CreatorShares {
				t.Errorf("blob %d group %s: %d shares in total, want %d", b, g, n, CreatorShares)
			}
			s, _ := ls[0].Shares(ref(b))
			moved += CreatorShares - s[g]
		}
		for i, l := range ls {
			if p, _ := l.Pending(ref(b)); len(p) != 0 {
				t.Errorf("device %d: %d transfers left in escrow", i, len(p))
			}
		}
	}
	if moved == 0 {
		t.Fatal("no share ever moved: the test exercised nothing")
	}
	t.Logf("shares moved away from the creator: %d", moved)
}

func TestGrantCreatorOnce(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := NewLedger(db)
	ref := ref(7)
	for i, want := range []bool{true, false} {
		got, err := l.GrantCreator(ref, "g", false)
		if err != nil || got != want {
			t.Fatalf("grant %d: %v, %v; want %v", i, got, err, want)
		}
	}
	if sh, _ := l.Shares(ref); sh["g"] != CreatorShares {
		t.Fatalf("shares %v", sh)
	}
	// The shares move away; writing the ref again creates none.
	if _, err := l.Offer(NewTransferID(), ref, "g", syncnode.Priority{}, syncnode.Priority{DevType: syncnode.Server}, ""); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.GrantCreator(ref, "g", false); got {
		t.Fatal("granted again after the shares moved")
	}
	if got, err := l.GrantCreator(ref, "h", false); !got {
		t.Fatal("no grant in a second group:", err)
	}
	// A fetched blob's holder is not its origin: granted only where it
	// introduced the ref itself.
	fetched := syncnode.RefFromHash([32]byte{0xfe})
	if err := l.MarkFetched(fetched); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.GrantCreator(fetched, "g", false); got {
		t.Fatal("a device that fetched the blob was granted creator shares for another's row")
	}
	if got, _ := l.GrantCreator(fetched, "g", true); !got {
		t.Fatal("a device that introduced a fetched ref into a group was not granted")
	}
	// The origin restoring its copy by a fetch stays the origin.
	if err := l.MarkFetched(ref); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.GrantCreator(ref, "k", false); !got {
		t.Fatal("the origin lost its standing by fetching its blob back")
	}
}

// The origin's creator grant waits for no sync of badger's logs (it is
// derived again at open whatever a power loss took); the first transfer
// of the shares syncs, the grant with it; a grant for a ref a fetched
// copy's row introduced is not derived again, and syncs.
func TestOriginGrantNeedsNoSyncOfItsOwn(t *testing.T) {
	db := openDB(t, t.TempDir())
	defer db.Close()
	l := NewLedger(db)
	origin := ref(9)
	before := l.durable.Syncs()
	if got, err := l.GrantCreator(origin, "g", false); !got || err != nil {
		t.Fatalf("origin grant: %v %v", got, err)
	}
	if n := l.durable.Syncs() - before; n != 0 {
		t.Fatalf("the origin's grant waited for %d syncs", n)
	}
	if _, err := l.Offer(NewTransferID(), origin, "g", syncnode.Priority{}, syncnode.Priority{DevType: syncnode.Server}, ""); err != nil {
		t.Fatal(err)
	}
	if l.durable.Syncs() == before {
		t.Fatal("an offer of the shares did not sync")
	}
	fetched := syncnode.RefFromHash([32]byte{0xfd})
	if err := l.MarkFetched(fetched); err != nil {
		t.Fatal(err)
	}
	before = l.durable.Syncs()
	if got, err := l.GrantCreator(fetched, "g", true); !got || err != nil {
		t.Fatalf("introduced grant: %v %v", got, err)
	}
	if l.durable.Syncs() == before {
		t.Fatal("a grant for a ref a fetched copy's row introduced did not sync")
	}
}

// A holder's offer is its own word: an acceptor never takes more than the
// CreatorShares a group has of a blob, whether one offer claims more or
// offers add up to more.
func TestAcceptNeverHoldsMoreThanTheGroupHas(t *testing.T) {
	t.Parallel()
	l := NewLedger(openDB(t, t.TempDir()))
	r := ref(3)
	big := Transfer{ID: NewTransferID(), Ref: r, Group: "g", N: 1000}
	if err := l.Accept(big, true); !errors.Is(err, ErrBadTransfer) {
		t.Fatalf("an offer of 1000 shares: %v", err)
	}
	two := Transfer{ID: NewTransferID(), Ref: r, Group: "g", N: CreatorShares}
	if err := l.Accept(two, true); err != nil {
		t.Fatal(err)
	}
	more := Transfer{ID: NewTransferID(), Ref: r, Group: "g", N: 1}
	if err := l.Accept(more, true); !errors.Is(err, ErrBadTransfer) {
		t.Fatalf("a share on top of the group's two: %v", err)
	}
	if s, _ := l.Shares(r); s["g"] != CreatorShares {
		t.Fatalf("%d shares held, want %d", s["g"], CreatorShares)
	}
	other := Transfer{ID: NewTransferID(), Ref: r, Group: "h", N: 1}
	if err := l.Accept(other, true); err != nil {
		t.Fatalf("a share of another group: %v", err)
	}
}

// A holder that ends a transfer without its acceptor (Abandon) gets its
// shares back and keeps the transfer to void; the acceptor, told by that
// holder and no one else, drops what it accepted, and a transfer voided
// before it was accepted can no longer be.
func TestAbandonAndVoid(t *testing.T) {
	t.Parallel()
	id := func(name string) peer.ID {
		m, err := mh.Sum([]byte(name), mh.IDENTITY, -1)
		if err != nil {
			t.Fatal(err)
		}
		return peer.ID(m)
	}
	holderID, acceptorID, otherID := id("holder"), id("acceptor"), id("someone else")
	holder, acceptor := NewLedger(openDB(t, t.TempDir())), NewLedger(openDB(t, t.TempDir()))
	r := ref(4)
	if err := holder.Grant(r, "g", CreatorShares); err != nil {
		t.Fatal(err)
	}
	normal, srv := prio(syncnode.Normal, 1, t0), prio(syncnode.Server, 0, t0)
	tr, err := holder.Offer(NewTransferID(), r, "g", normal, srv, acceptorID)
	if err != nil || tr.N != CreatorShares || tr.At == 0 {
		t.Fatalf("offer: %+v %v", tr, err)
	}
	tr.From = holderID
	if err := acceptor.Accept(tr, true); err != nil {
		t.Fatal(err)
	}
	if ok, err := holder.Abandon(r, tr.ID); !ok || err != nil {
		t.Fatalf("abandon: %v %v", ok, err)
	}
	if s, _ := holder.Shares(r); s["g"] != CreatorShares {
		t.Fatalf("holder after abandoning: %v", s)
	}
	if v, _ := holder.AllVoided(); len(v) != 1 || v[0].ID != tr.ID {
		t.Fatalf("voided: %+v", v)
	}
	if _, err := acceptor.Void(tr.ID, otherID); !errors.Is(err, ErrBadTransfer) {
		t.Fatalf("a void from another peer: %v", err)
	}
	if n, err := acceptor.Void(tr.ID, holderID); n != CreatorShares || err != nil {
		t.Fatalf("void: dropped %d, %v", n, err)
	}
	if s, _ := acceptor.Shares(r); s["g"] != 0 {
		t.Fatalf("acceptor after the void: %v", s)
	}
	if err := holder.Told(r, tr.ID); err != nil {
		t.Fatal(err)
	}
	if v, _ := holder.AllVoided(); len(v) != 0 {
		t.Fatalf("voided after telling: %+v", v)
	}
	// Voided before it was accepted: never accepted later.
	late := Transfer{ID: NewTransferID(), Ref: r, Group: "g", N: 1, From: holderID}
	if _, err := acceptor.Void(late.ID, holderID); err != nil {
		t.Fatal(err)
	}
	if err := acceptor.Accept(late, true); !errors.Is(err, ErrTransferClosed) {
		t.Fatalf("accepting a voided transfer: %v", err)
	}
}
