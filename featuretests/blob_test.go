package featuretests

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/node"
)

func TestBlobWholeTransfer(t *testing.T) {
	t.Parallel()
	a, b := start(t), start(t)
	g := createGroup(t, a, "photos", syncnode.Normal)
	join(t, a, b, g, syncnode.Normal)
	data := randomBytes(1<<20, 1)
	ref := putBlobRow(t, a, g, "photos/one", data)
	waitFor(t, 10*time.Second, "the signpost at b", func() bool { _, err := b.Signpost(ref); return err == nil })

	var mu sync.Mutex
	var states []node.State
	var last node.Status
	info, err := b.FetchBlob(t.Context(), ref, node.FetchOptions{Urgency: node.UrgencyHigh, Status: func(s node.Status) {
		mu.Lock()
		defer mu.Unlock()
		if len(states) == 0 || states[len(states)-1] != s.State {
			states = append(states, s.State)
		}
		if s.Received < last.Received {
			t.Errorf("progress went back: %d after %d", s.Received, last.Received)
		}
		last = s
	}})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	want := []node.State{node.Pending, node.Locating, node.Fetching, node.Done}
	if !equalStates(states, want) {
		t.Errorf("status sequence %v, want %v", states, want)
	}
	if last.Received != 1<<20 || last.Total != 1<<20 {
		t.Errorf("final status %+v", last)
	}
	mu.Unlock()
	if info.Size != int64(len(data)) || info.Ref != ref {
		t.Fatalf("fetched %+v", info)
	}
	got := readAll(t, b, ref)
	if !bytes.Equal(got, data) || blake3Ref(got) != ref {
		t.Fatal("fetched bytes differ or do not hash to the ref")
	}
	r, err := b.OpenBlob(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	part := make([]byte, 4096)
	if _, err := r.ReadAt(part, 777_777); err != nil || !bytes.Equal(part, data[777_777:777_777+4096]) {
		t.Fatalf("ranged read: %v", err)
	}
	// A second request for a held blob is done at once.
	var second []node.State
	if _, err := b.FetchBlob(t.Context(), ref, node.FetchOptions{Status: func(s node.Status) { second = append(second, s.State) }}); err != nil || !equalStates(second, []node.State{node.Done}) {
		t.Fatalf("fetch of a held blob: %v %v", second, err)
	}
}

func equalStates(a, b []node.State) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestConcurrentFetchesShareOneTransfer(t *testing.T) {
	t.Parallel()
	a, b := start(t), start(t)
	g := createGroup(t, a, "photos", syncnode.Normal)
	join(t, a, b, g, syncnode.Normal)
	ref := putBlobRow(t, a, g, "photos/big", randomBytes(8<<20, 2))
	waitFor(t, 10*time.Second, "the signpost at b", func() bool { _, err := b.Signpost(ref); return err == nil })
	before := a.UploadStats().BytesOut
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := b.FetchBlob(t.Context(), ref, node.FetchOptions{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if sent := a.UploadStats().BytesOut - before; sent > 9<<20 {
		t.Fatalf("8 concurrent fetches moved %d bytes; one transfer is %d", sent, 8<<20)
	}
}

func TestServerBlobFetch(t *testing.T) {
	t.Parallel()
	device, server := start(t), start(t)
	g := createGroup(t, device, "photos", syncnode.Normal)
	join(t, device, server, g, syncnode.Server)
	devRef := putBlobRow(t, device, g, "photos/device", randomBytes(512<<10, 3))
	srvRef := putBlobRow(t, server, g, "photos/server", randomBytes(512<<10, 4))
	waitFor(t, 10*time.Second, "the server holding the device's blob with all its shares", func() bool {
		return server.HasBlob(devRef) && shares(t, server, devRef, g) == 2
	})
	if n := shares(t, device, devRef, g); n != 0 {
		t.Errorf("device kept %d shares", n)
	}
	// The device learns its blob is safe: no blob of the group at risk.
	waitFor(t, 10*time.Second, "no blob at risk on the device", func() bool {
		d, err := device.Durability()
		return err == nil && len(d) == 1 && d[0].Referenced == 2 && d[0].AtRisk == 0
	})
	// The server's own blob stays with it: a normal device does not pull it.
	waitFor(t, 10*time.Second, "the server's row at the device", func() bool { _, ok, _ := device.GetRow(g, "photos/server"); return ok })
	if device.HasBlob(srvRef) || shares(t, server, srvRef, g) != 2 || shares(t, device, srvRef, g) != 0 {
		t.Errorf("server's blob moved: device holds %v, shares server %d device %d",
			device.HasBlob(srvRef), shares(t, server, srvRef, g), shares(t, device, srvRef, g))
	}
	for _, ref := range []syncnode.BlobRef{devRef, srvRef} {
		if n := totalShares(t, []*node.Node{device, server}, ref, g); n != 2 {
			t.Errorf("%s: %d shares in all, want 2", ref, n)
		}
	}
}

func TestLeafBlobFetch(t *testing.T) {
	t.Parallel()
	normal, leaf := start(t), start(t)
	g := createGroup(t, normal, "photos", syncnode.Normal)
	join(t, normal, leaf, g, syncnode.Leaf)
	data := randomBytes(256<<10, 5)
	ref := putBlobRow(t, leaf, g, "photos/from-leaf", data)
	waitFor(t, 10*time.Second, "the normal member holding the leaf's blob with a share", func() bool {
		return normal.HasBlob(ref) && shares(t, normal, ref, g) >= 1
	})
	if !bytes.Equal(readAll(t, normal, ref), data) {
		t.Fatal("handed-off blob differs")
	}
	if n := totalShares(t, []*node.Node{normal, leaf}, ref, g); n != 2 {
		t.Fatalf("%d shares in all, want 2", n)
	}
}

func TestNonMemberGetsNothing(t *testing.T) {
	t.Parallel()
	admin, member, stranger := start(t), start(t), start(t)
	g := createGroup(t, admin, "photos", syncnode.Normal)
	join(t, admin, member, g, syncnode.Normal)
	ref := putBlobRow(t, admin, g, "photos/secret", randomBytes(64<<10, 6))
	waitFor(t, 10*time.Second, "the member's copy of the row", func() bool { _, ok, _ := member.GetRow(g, "photos/secret"); return ok })

	// An invitation the stranger forges for itself is refused.
	forged, err := stranger.Invite(g, stranger.ID(), syncnode.Server, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.JoinGroup(t.Context(), forged); err == nil {
		t.Fatal("a forged invitation was accepted")
	}
	// An invitation for someone else is refused too.
	inv, err := admin.Invite(g, member.ID(), syncnode.Normal, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.JoinGroup(t.Context(), inv); err == nil {
		t.Fatal("another peer's invitation was accepted")
	}
	if len(stranger.Groups()) != 0 {
		t.Fatalf("stranger syncs %d groups", len(stranger.Groups()))
	}
	// Nor can it fetch the blob, even knowing the ref and where it is.
	for _, holder := range []*node.Node{admin, member} {
		if err := stranger.Connect(t.Context(), holder.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	_, err = stranger.FetchBlob(t.Context(), ref, node.FetchOptions{})
	if !errors.Is(err, node.ErrNoHolder) {
		t.Fatalf("stranger's fetch: %v", err)
	}
	if stranger.HasBlob(ref) {
		t.Fatal("stranger holds the blob")
	}
	if _, err := stranger.Signpost(ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("stranger learned a signpost: %v", err)
	}
	if _, ok, err := stranger.GetRow(g, "photos/secret"); ok || err == nil || !strings.Contains(err.Error(), "unknown syncgroup") {
		t.Fatalf("stranger's row read: %v %v", ok, err)
	}
}
