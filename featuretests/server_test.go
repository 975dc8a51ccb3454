package featuretests

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/node"
)

func TestServerFetchSurvivesRestart(t *testing.T) {
	t.Parallel()
	holderCfg, serverCfg := config(t, t.TempDir()), config(t, t.TempDir())
	holder, server := open(t, holderCfg), open(t, serverCfg)
	relay := start(t)
	g := createGroup(t, holder, "photos", syncnode.Normal)
	join(t, holder, relay, g, syncnode.Normal)
	join(t, holder, server, g, syncnode.Server)
	waitFor(t, 10*time.Second, "membership at the relay", func() bool { return len(relay.Members(g)) == 3 })

	// The server is away while the holder writes; then the holder goes
	// away and the server learns of the blob only through the relay.
	server.Close()
	data := randomBytes(512<<10, 7)
	ref := putBlobRow(t, holder, g, "photos/only-copy", data)
	waitFor(t, 10*time.Second, "the row at the relay", func() bool { _, ok, _ := relay.GetRow(g, "photos/only-copy"); return ok })
	holder.Close()
	server = open(t, serverCfg)
	waitFor(t, 20*time.Second, "3 failed attempts at the server", func() bool {
		w, err := server.Why(ref)
		return err == nil && w.Attempts >= 3
	})
	w, _ := server.Why(ref)
	if w.Held || w.LastErr == "" || len(w.Tried) == 0 {
		t.Fatalf("journal after failures: %+v", w)
	}
	server.Close()

	opened := time.Now()
	server = open(t, serverCfg)
	defer server.Close()
	w, err := server.Why(ref)
	if err != nil {
		t.Fatal(err)
	}
	persisted := w.Attempts
	if persisted < 3 {
		t.Fatalf("attempts after restart %d, want the persisted count ≥ 3", persisted)
	}
	// Queued from the start, with its persisted count.
	if !w.Queued && !w.Running && w.Attempts == persisted {
		t.Errorf("right after restart the blob is not queued: %+v", w)
	}
	// The scan re-queues it with the backoff of the persisted count.
	waitFor(t, 10*time.Second, "the blob queued again", func() bool {
		w, _ = server.Why(ref)
		return w.Queued || w.Running || w.Attempts > persisted
	})
	fc := serverCfg.Fetcher
	shift := min(persisted, fc.MaxShift)
	if w.Queued && w.Attempts == persisted {
		lo, hi := opened.Add(fc.BaseDelay<<shift), time.Now().Add((fc.BaseDelay+fc.Jitter)<<shift)
		if w.NextAttempt.Before(lo) || w.NextAttempt.After(hi) {
			t.Errorf("next attempt %v after restart, want within [%v, %v] (backoff of %d attempts)",
				w.NextAttempt.Sub(opened), lo.Sub(opened), hi.Sub(opened), persisted)
		}
	} else {
		t.Errorf("blob not waiting for its backoff after restart: %+v", w)
	}

	holder = open(t, holderCfg)
	defer holder.Close()
	waitFor(t, 30*time.Second, "the blob and its shares at the server", func() bool {
		return server.HasBlob(ref) && shares(t, server, ref, g) == 2
	})
	if !bytes.Equal(readAll(t, server, ref), data) {
		t.Fatal("server's copy differs")
	}
	if n := totalShares(t, []*node.Node{holder, relay, server}, ref, g); n != 2 {
		t.Fatalf("%d shares in all, want 2", n)
	}
}

func TestEvictionAfterServerCopy(t *testing.T) {
	t.Parallel()
	const budget = 1 << 20
	device := start(t, func(c *node.Config) { c.BlobBudget = budget })
	g := createGroup(t, device, "photos", syncnode.Normal)
	a := randomBytes(768<<10, 8)
	b := randomBytes(768<<10, 9)
	refA := putBlobRow(t, device, g, "photos/a", a)
	refB := putBlobRow(t, device, g, "photos/b", b)
	rep, err := device.Evict()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Evicted) != 0 || rep.PinnedOver != int64(len(a)+len(b))-budget {
		t.Fatalf("before any server copy: %+v, want nothing evicted and %d bytes over, pinned", rep, int64(len(a)+len(b))-budget)
	}
	server := start(t)
	join(t, device, server, g, syncnode.Server)
	waitFor(t, 15*time.Second, "the server's copies with their shares", func() bool {
		return server.HasBlob(refA) && server.HasBlob(refB) && shares(t, server, refA, g) == 2 && shares(t, server, refB, g) == 2
	})
	waitFor(t, 10*time.Second, "the device back within its budget", func() bool {
		return !device.HasBlob(refA) || !device.HasBlob(refB)
	})
	evicted, data := refA, a
	if device.HasBlob(refA) {
		evicted, data = refB, b
	}
	if _, err := device.FetchBlob(t.Context(), evicted, node.FetchOptions{}); err != nil {
		t.Fatalf("evicted blob not fetchable from the server: %v", err)
	}
	if !bytes.Equal(readAll(t, device, evicted), data) {
		t.Fatal("refetched blob differs")
	}
}

func TestFiveNodeMesh(t *testing.T) {
	t.Parallel()
	d1, d2, d3, s1, s2 := start(t), start(t), start(t), start(t), start(t)
	all := []*node.Node{d1, d2, d3, s1, s2}
	g1 := createGroup(t, d1, "g1", syncnode.Normal)
	join(t, d1, d2, g1, syncnode.Normal)
	join(t, d1, s1, g1, syncnode.Server)
	g2 := createGroup(t, d3, "g2", syncnode.Normal)
	join(t, d3, d2, g2, syncnode.Normal)
	join(t, d3, s2, g2, syncnode.Server)
	type blob struct {
		ref    syncnode.BlobRef
		g      syncnode.GroupID
		server *node.Node
		data   []byte
	}
	var blobs []blob
	r := rand.New(rand.NewPCG(10, 10))
	for i := range 50 {
		g, writers, server, prefix := g1, []*node.Node{d1, d2}, s1, "g1/"
		if i%2 == 1 {
			g, writers, server, prefix = g2, []*node.Node{d2, d3}, s2, "g2/"
		}
		data := randomBytes(32<<10+i, uint64(100+i))
		w := writers[r.IntN(len(writers))]
		ref := putBlobRow(t, w, g, fmt.Sprintf("%sblob-%02d", prefix, i), data)
		blobs = append(blobs, blob{ref, g, server, data})
	}
	waitFor(t, 60*time.Second, "every server holding every blob of its group with its shares", func() bool {
		for _, b := range blobs {
			if !b.server.HasBlob(b.ref) || shares(t, b.server, b.ref, b.g) != 2 {
				return false
			}
		}
		return true
	})
	for _, b := range blobs {
		got := readAll(t, b.server, b.ref)
		if !bytes.Equal(got, b.data) || blake3Ref(got) != b.ref {
			t.Errorf("%s: server copy does not verify", b.ref)
		}
		if n := totalShares(t, all, b.ref, b.g); n != 2 {
			t.Errorf("%s: %d shares in all, want 2", b.ref, n)
		}
		other := s2
		if b.server == s2 {
			other = s1
		}
		if other.HasBlob(b.ref) {
			t.Errorf("%s: the other group's server holds it", b.ref)
		}
	}
}

// TestServerFetchesWhenHolderReturns: the blob's creator is gone
// for good; the only other copy is on a laptop, a leaf, which holds no
// shares (a leaf is never offered any, so it hands nothing off) and goes
// away too. The server's attempts fail
// until its backoff is long (base delay 2 s). When the laptop comes back
// it connects and syncs, and the server fetches from it at once rather
// than waiting out the backoff.
func TestServerFetchesWhenHolderReturns(t *testing.T) {
	laptopCfg, serverCfg := config(t, t.TempDir()), config(t, t.TempDir())
	fc := *serverCfg.Fetcher
	fc.BaseDelay, fc.Jitter, fc.MaxShift = 2*time.Second, 10*time.Millisecond, 10
	serverCfg.Fetcher = &fc
	phone := start(t)
	laptop, server := open(t, laptopCfg), open(t, serverCfg)
	defer server.Close()
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, laptop, g, syncnode.Leaf)
	join(t, phone, server, g, syncnode.Server)
	waitFor(t, 10*time.Second, "membership", func() bool { return len(laptop.Members(g)) == 3 })
	server.Close()
	ref := putBlobRow(t, phone, g, "photos/away", randomBytes(128<<10, 8))
	waitFor(t, 10*time.Second, "the row at the laptop", func() bool { _, ok, _ := laptop.GetRow(g, "photos/away"); return ok })
	if _, err := laptop.FetchBlob(t.Context(), ref, node.FetchOptions{}); err != nil {
		t.Fatal(err)
	}
	if sh := shares(t, laptop, ref, g); sh != 0 {
		t.Fatalf("the laptop took %d shares", sh)
	}
	phone.Close()
	server = open(t, serverCfg)
	waitFor(t, 10*time.Second, "the row at the server", func() bool { _, ok, _ := server.GetRow(g, "photos/away"); return ok })
	laptop.Close()
	waitFor(t, 20*time.Second, "two failed attempts", func() bool {
		w, err := server.Why(ref)
		return err == nil && w.Attempts >= 2 && w.Queued
	})
	w, _ := server.Why(ref)
	if wait := time.Until(w.NextAttempt); wait < 3*time.Second {
		t.Fatalf("next attempt in %v: the backoff is too short to tell", wait)
	}
	back := time.Now()
	laptop = open(t, laptopCfg)
	defer laptop.Close()
	waitFor(t, 20*time.Second, "the server's copy", func() bool { return server.HasBlob(ref) })
	took := time.Since(back)
	t.Logf("server copy %v after the laptop returned (the backoff had %v left)", took.Round(time.Millisecond), (time.Until(w.NextAttempt) + took).Round(time.Millisecond))
	if took > time.Second || time.Now().After(w.NextAttempt) {
		t.Fatalf("the server waited out its backoff: copy %v after the laptop returned", took)
	}
}
