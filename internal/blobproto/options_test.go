package blobproto

import (
	"bytes"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/testkit"
)

// A whole-blob fetch takes a small blob from one holder and stops at the
// tree of a larger one: ErrNotWhole, no blob bytes moved, the tree kept,
// and a fetch from several holders then takes over without a byte twice.
func TestWholeOnly(t *testing.T) {
	ah, bh := newHost(t, ""), newHost(t, "")
	link(bh, ah)
	src := diskStore(t, t.TempDir())
	small := testkit.RandomBytes(WholeSize, 1)
	large := testkit.RandomBytes(WholeSize+1, 2)
	smallRef, largeRef := put(t, src, small), put(t, src, large)
	mustService(t, ah, src, ServiceConfig{})
	dst := diskStore(t, t.TempDir())
	c := mustClient(t, bh, dst, ClientConfig{})

	res, err := c.FetchWith(t.Context(), smallRef, []peer.ID{ah.ID()}, FetchOptions{WholeOnly: true})
	if err != nil || res.Size != WholeSize || res.FromNetwork != WholeSize {
		t.Fatalf("small blob whole: %+v, %v", res, err)
	}

	res, err = c.FetchWith(t.Context(), largeRef, []peer.ID{ah.ID()}, FetchOptions{WholeOnly: true})
	if !errors.Is(err, ErrNotWhole) {
		t.Fatalf("large blob whole: %v, want ErrNotWhole", err)
	}
	if res.FromNetwork != 0 || len(res.Faulty)+len(res.Rejected) > 0 {
		t.Fatalf("large blob whole: %+v, want no bytes and no holder blamed", res)
	}
	if _, err := dst.Stat(largeRef); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("large blob visible after a whole-only ask: %v", err)
	}
	res, err = c.Fetch(t.Context(), largeRef, []peer.ID{ah.ID()}, nil)
	if err != nil || res.FromNetwork != int64(len(large)) {
		t.Fatalf("large blob in ranges: %+v, %v (want %d bytes from the network)", res, err, len(large))
	}
	if !bytes.Equal(content(t, dst, largeRef), large) {
		t.Fatal("held bytes differ")
	}
}

// Commit wraps the commit of a whole, verified blob: the blob is not
// visible before the wrapper calls commit, and a wrapper that returns
// without calling it leaves the blob partial and resumable, so the next
// fetch of a blob too large to come whole moves no byte again.
func TestCommitWrapper(t *testing.T) {
	ah, bh := newHost(t, ""), newHost(t, "")
	link(bh, ah)
	src := diskStore(t, t.TempDir())
	data := testkit.RandomBytes(WholeSize+3<<20+5, 3)
	ref := put(t, src, data)
	mustService(t, ah, src, ServiceConfig{})
	dst := diskStore(t, t.TempDir())
	c := mustClient(t, bh, dst, ClientConfig{})

	refused := errors.New("not yet")
	calls := 0
	_, err := c.FetchWith(t.Context(), ref, []peer.ID{ah.ID()}, FetchOptions{Commit: func(func() (blobstore.Info, error)) (blobstore.Info, error) {
		calls++
		return blobstore.Info{}, refused
	}})
	if !errors.Is(err, refused) || calls != 1 {
		t.Fatalf("fetch with a refusing commit: %v after %d calls", err, calls)
	}
	if _, err := dst.Stat(ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("blob visible after the commit was refused: %v", err)
	}
	res, err := c.FetchWith(t.Context(), ref, []peer.ID{ah.ID()}, FetchOptions{Commit: func(commit func() (blobstore.Info, error)) (blobstore.Info, error) {
		calls++
		if _, err := dst.Stat(ref); !errors.Is(err, syncnode.ErrNotFound) {
			t.Errorf("blob visible before commit was called: %v", err)
		}
		info, err := commit()
		if _, serr := dst.Stat(ref); err == nil && serr != nil {
			t.Errorf("blob not visible once commit returned: %v", serr)
		}
		return info, err
	}})
	if err != nil || calls != 2 || res.Size != int64(len(data)) {
		t.Fatalf("second fetch: %+v, %v after %d calls", res, err, calls)
	}
	if res.FromNetwork != 0 {
		t.Fatalf("second fetch moved %d bytes again, want 0", res.FromNetwork)
	}
	if !bytes.Equal(content(t, dst, ref), data) {
		t.Fatal("held bytes differ")
	}
}
