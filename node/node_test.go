package node

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/retrieval"
)

func TestPutReopenGetRemove(t *testing.T) {
	dir := t.TempDir()
	n, err := Open(Config{DataDir: dir, NoLAN: true})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("syncnode "), 100000)
	info, err := n.PutBlob(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ledger.Grant(info.Ref, "g", 2); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n, err = Open(Config{DataDir: dir, NoLAN: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	r, err := n.OpenBlob(info.Ref)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	r.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("blob differs after reopen")
	}
	if err := n.RemoveBlob(info.Ref); !errors.Is(err, ErrPinned) {
		t.Fatalf("RemoveBlob with shares: %v, want ErrPinned", err)
	}
	if _, err := n.StatBlob(info.Ref); err != nil {
		t.Fatalf("pinned blob gone: %v", err)
	}
	other, _ := n.PutBlob(context.Background(), bytes.NewReader([]byte("unpinned")))
	if err := n.RemoveBlob(other.Ref); err != nil {
		t.Fatal(err)
	}
	if _, err := n.StatBlob(other.Ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("removed blob still there: %v", err)
	}
}

// fetchFrom fetches ref at n as a user's fetch would, asking hints first,
// and takes no shares.
func fetchFrom(ctx context.Context, n *Node, ref syncnode.BlobRef, hints ...peer.ID) (blobstore.Info, error) {
	res, err := n.retr.Fetch(ctx, ref, retrieval.Request{Urgency: UrgencyNormal, Hints: hints})
	return res.Info, err
}

// TestNoHolderNamesTheLikelyHolder: a fetch that first asks the peer it
// takes for a holder, which fails, and then finds no one else says why
// that peer did not serve: the user's error names every peer asked.
func TestNoHolderNamesTheLikelyHolder(t *testing.T) {
	t.Parallel()
	a := openNode(t, t.TempDir())
	defer a.Close()
	b := openNode(t, t.TempDir())
	defer b.Close()
	if err := b.Connect(t.Context(), a.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	var h [syncnode.HashSize]byte
	h[0] = 7
	ref := syncnode.RefFromHash(h)
	_, err := fetchFrom(t.Context(), b, ref, a.ID())
	if !errors.Is(err, ErrNoHolder) || !strings.Contains(err.Error(), a.ID().String()) {
		t.Fatalf("fetch with no holder: %v, want ErrNoHolder naming %s", err, a.ID())
	}
}
