package shares

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
)

// putNamed stores a small blob named by s on each of ds.
func putNamed(t *testing.T, s string, ds ...*dev) syncnode.BlobRef {
	var ref syncnode.BlobRef
	for _, d := range ds {
		info, err := d.blobs.Put(context.Background(), bytes.NewReader([]byte(s)), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		ref = info.Ref
	}
	return ref
}

// One TakeAll moves the shares of every blob the taker holds, answers
// each item on its own (a blob it lacks fails alone, a blob the holder
// has no shares of takes nothing), and conserves every total.
func TestTakeAllAnswersEachItem(t *testing.T) {
	devs, gid := world(t)
	server, holder := devs[1], devs[2]
	var items []Item
	for i := range 5 {
		ref := putNamed(t, fmt.Sprintf("photo %d", i), server, holder)
		holder.ledger.Grant(ref, gid, ownership.CreatorShares)
		items = append(items, Item{Ref: ref, Group: gid})
	}
	lacking := putNamed(t, "not on the server", holder)
	holder.ledger.Grant(lacking, gid, ownership.CreatorShares)
	none := putNamed(t, "no shares anywhere", server, holder)
	items = append(items, Item{Ref: lacking, Group: gid}, Item{Ref: none, Group: gid})

	res, errs := server.svc.TakeAll(t.Context(), holder.h.ID(), items)
	for i := range 5 {
		if errs[i] != nil || res[i].Taken != ownership.CreatorShares || res[i].HolderKeeps {
			t.Errorf("item %d: %+v, %v; want every share taken", i, res[i], errs[i])
		}
		if n := total(t, devs, items[i].Ref, gid); n != ownership.CreatorShares {
			t.Errorf("item %d: share total %d", i, n)
		}
	}
	if !errors.Is(errs[5], ownership.ErrUnverified) {
		t.Errorf("blob the taker lacks: %v, want ErrUnverified", errs[5])
	}
	if s, _ := holder.ledger.Shares(lacking); s[gid] != ownership.CreatorShares {
		t.Errorf("the holder's shares of the blob the taker lacks went to %d", s[gid])
	}
	if errs[6] != nil || res[6].Taken != 0 {
		t.Errorf("blob with no shares: %+v, %v", res[6], errs[6])
	}
	pending, err := holder.ledger.AllPending()
	if err != nil || len(pending) != 0 {
		t.Fatalf("escrow left at the holder: %v, %v", pending, err)
	}
}

// A member speaking the batch operations directly gets no more than the
// single ones give: an oversized batch is refused whole; in a batch, an
// item for a group it is not in, a wrong proof, or a settle of another
// member's escrow is refused alone, and no share moves or is lost.
func TestHostileBatches(t *testing.T) {
	devs, gid := world(t)
	holder, thief, other := devs[2], devs[3], devs[1]
	data := bytes.Repeat([]byte("the only copy of a photo "), 4000)
	info, err := holder.blobs.Put(context.Background(), bytes.NewReader(data), syncnode.BlobRef{})
	if err != nil {
		t.Fatal(err)
	}
	ref := info.Ref
	holder.ledger.Grant(ref, gid, ownership.CreatorShares)
	call := func(op string, items []request) (response, error) {
		return thief.svc.call(t.Context(), holder.h.ID(), request{Op: op, Items: items}, time.Second)
	}

	big := make([]request, MaxBatch+1)
	for i := range big {
		big[i] = request{ID: ownership.NewTransferID(), Ref: ref, Group: gid}
	}
	if _, err := call(opChallenges, big); !errors.Is(err, ErrRefused) {
		t.Fatalf("a batch of %d: %v, want refused", len(big), err)
	}
	if _, err := thief.svc.call(t.Context(), holder.h.ID(), request{Op: opOffer, Ref: ref, Group: gid, Items: big[:1]}, time.Second); !errors.Is(err, ErrRefused) {
		t.Fatalf("items on a single operation: %v, want refused", err)
	}

	id := ownership.NewTransferID()
	resp, err := call(opChallenges, []request{{ID: id, Ref: ref, Group: gid}, {ID: id, Ref: ref, Group: "not-a-group"}})
	if err != nil || len(resp.Items) != 2 {
		t.Fatalf("challenges: %+v, %v", resp, err)
	}
	if resp.Items[0].Err != "" || len(resp.Items[0].Nonce) != ProofSize || !strings.Contains(resp.Items[1].Err, "not a member") {
		t.Fatalf("challenges answered %+v", resp.Items)
	}
	wrong := bytes.Repeat([]byte{7}, ProofSize)
	resp, err = call(opOffers, []request{{ID: id, Ref: ref, Group: gid, Proof: wrong}})
	if err != nil || len(resp.Items) != 1 || resp.Items[0].Transfer != nil || resp.Items[0].Err == "" {
		t.Fatalf("offer with a wrong proof: %+v, %v", resp, err)
	}

	// The honest member's transfer waits in escrow; the thief cannot
	// settle it, in a batch or otherwise.
	if _, err := other.blobs.Put(context.Background(), bytes.NewReader(data), syncnode.BlobRef{}); err != nil {
		t.Fatal(err)
	}
	oid := ownership.NewTransferID()
	if _, err := provenOffer(t, other, holder, oid, ref, gid); err != nil {
		t.Fatal(err)
	}
	resp, err = call(opSettles, []request{{ID: oid, Ref: ref, Accepted: false}})
	if err != nil || len(resp.Items) != 1 || resp.Items[0].Err == "" {
		t.Fatalf("the thief's settle of another's escrow: %+v, %v", resp, err)
	}
	if pending, _ := holder.ledger.Pending(ref); len(pending) != 1 || pending[0].ID != oid {
		t.Fatalf("escrow after the thief's settle: %+v", pending)
	}
	sh, _ := holder.ledger.Shares(ref)
	var escrowed int
	if pending, _ := holder.ledger.Pending(ref); len(pending) == 1 {
		escrowed = pending[0].N
	}
	if sh[gid]+escrowed != ownership.CreatorShares {
		t.Fatalf("holder has %d shares and %d in escrow, want %d in all", sh[gid], escrowed, ownership.CreatorShares)
	}
}
