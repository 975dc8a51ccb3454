package node

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
)

// TestRemoveSaysWhatHoldsTheBlob: a refused removal names each hold and
// what would release it, and matches ErrPinned for shares and
// ErrUserPinned for the user's pin; Force removes a blob only the user's
// pin holds, never one that shares hold.
func TestRemoveSaysWhatHoldsTheBlob(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, true, syncnode.Normal)
	n := nodes[0]
	shared := putBlobRow(t, n, g, "photos/shared", 16<<10, 31)
	err := n.RemoveBlob(shared)
	var held *HeldError
	if !errors.Is(err, ErrPinned) || errors.Is(err, ErrUserPinned) || !errors.As(err, &held) {
		t.Fatalf("removal of a blob with shares: %v", err)
	}
	for _, want := range []string{"2 shares in group photos", "run a server, or leave the group"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	if len(held.Holds) != 1 || held.Holds[0].Kind != HoldShares || held.Holds[0].Group != g || held.Holds[0].Shares != 2 {
		t.Errorf("holds %+v", held.Holds)
	}

	own := putBlobOnly(t, n, 16<<10)
	if err := n.PinBlob(t.Context(), own); err != nil {
		t.Fatal(err)
	}
	err = n.RemoveBlob(own)
	if !errors.Is(err, ErrUserPinned) || errors.Is(err, ErrPinned) || !strings.Contains(err.Error(), "syncnode blob unpin "+own.String()) {
		t.Fatalf("removal of a pinned blob: %v", err)
	}
	if err := n.RemoveBlobWith(own, RemoveOptions{Force: true}); err != nil {
		t.Fatalf("forced removal of a pinned blob: %v", err)
	}
	if n.HasBlob(own) || n.Pinned(own) {
		t.Fatalf("after a forced removal: held %v, pinned %v", n.HasBlob(own), n.Pinned(own))
	}

	if err := n.PinBlob(t.Context(), shared); err != nil {
		t.Fatal(err)
	}
	err = n.RemoveBlobWith(shared, RemoveOptions{Force: true})
	if !errors.Is(err, ErrPinned) || !errors.Is(err, ErrUserPinned) {
		t.Fatalf("forced removal of a pinned blob with shares: %v", err)
	}
	if !n.HasBlob(shared) || !n.Pinned(shared) {
		t.Fatal("a refused forced removal dropped the copy or the pin")
	}
}

// TestUserPinOutlivesTheBudgetAndRestarts: a device with a one-byte
// budget pins a blob a member wrote and it does not hold. The pin fetches
// it, takes no shares, and keeps it through eviction passes and a
// restart, the budget exceeded and reported; unpinned, it is evicted as
// any copy.
func TestUserPinOutlivesTheBudgetAndRestarts(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, true, syncnode.Normal)
	writer := nodes[0]
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.BlobBudget = 1
	reader, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	open := reader
	t.Cleanup(func() { open.Close() })
	join(t, writer, reader, g, syncnode.Normal)
	const size = 64 << 10
	ref := putBlobRow(t, writer, g, "photos/keep", size, 51)
	testkit.WaitFor(t, 10*time.Second, "the row at the reader", func() bool {
		sp, err := reader.Signpost(ref)
		return err == nil && len(sp.Groups()) > 0
	})

	if err := reader.PinBlob(t.Context(), ref); err != nil {
		t.Fatalf("pin of a blob not held: %v", err)
	}
	if !reader.HasBlob(ref) || !reader.Pinned(ref) || sharesIn(t, reader, ref, g) != 0 || sharesIn(t, writer, ref, g) != 2 {
		t.Fatalf("after the pin: held %v, pinned %v, shares here %d, writer's %d",
			reader.HasBlob(ref), reader.Pinned(ref), sharesIn(t, reader, ref, g), sharesIn(t, writer, ref, g))
	}
	rep, err := reader.Evict()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Evicted) != 0 || rep.UserPinned != size || rep.PinnedOver != size-1 {
		t.Fatalf("eviction of a pinned blob: %+v", rep)
	}
	if w, err := reader.Why(ref); err != nil || !w.Pinned || w.PinnedAt.IsZero() {
		t.Fatalf("why: pinned %v at %v, %v", w.Pinned, w.PinnedAt, err)
	}

	if err := reader.Close(); err != nil {
		t.Fatal(err)
	}
	if reader, err = Open(cfg); err != nil {
		t.Fatal(err)
	}
	open = reader
	if !reader.Pinned(ref) || len(reader.ListPins()) != 1 {
		t.Fatalf("after a restart: pinned %v, pins %v", reader.Pinned(ref), reader.ListPins())
	}
	if rep, err := reader.Evict(); err != nil || len(rep.Evicted) != 0 || !reader.HasBlob(ref) {
		t.Fatalf("eviction after a restart: %+v %v", rep, err)
	}
	if err := reader.UnpinBlob(ref); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the unpinned copy evicted", func() bool { return !reader.HasBlob(ref) })
	if reader.Pinned(ref) {
		t.Fatal("still pinned after UnpinBlob")
	}

	// A blob no one holds: the pin fails at once and is not kept.
	missing := testkit.Ref([]byte("held by no one"))
	if err := reader.PinBlob(t.Context(), missing); err == nil || reader.Pinned(missing) {
		t.Fatalf("pin of a blob no one holds: %v, pinned %v", err, reader.Pinned(missing))
	}
}
