package faults

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/p2p"
)

// TestOneMemberCannotHogUploads: a member opens 40 upload requests for a
// holder's 8 MiB blob at once and reads none of the bytes, holding every
// slot it is given. Another member's fetch of the same blob still starts
// at once and completes, well before the hog's stalled uploads time out.
func TestOneMemberCannotHogUploads(t *testing.T) {
	holder := nodetest.Start(t)
	hog := nodetest.Start(t)
	honest := nodetest.Start(t)
	g := nodetest.CreateGroup(t, holder, "photos", syncnode.Normal)
	nodetest.Join(t, holder, hog, g, syncnode.Normal)
	nodetest.Join(t, holder, honest, g, syncnode.Normal)
	testkit.WaitFor(t, 10*time.Second, "membership", func() bool {
		return len(holder.Members(g)) == 3 && len(honest.Members(g)) == 3
	})
	data := testkit.RandomBytes(48<<20, 31)
	ref := nodetest.PutBlobRow(t, holder, g, "photos/popular", data)
	testkit.WaitFor(t, 10*time.Second, "the row at the honest member", func() bool {
		_, ok, _ := honest.GetRow(g, "photos/popular")
		return ok
	})

	var held []network.Stream
	defer func() {
		for _, st := range held {
			st.Reset()
		}
	}()
	for range 40 {
		st, err := nodetest.Host(hog).NewStream(t.Context(), holder.ID(), p2p.ProtoGetBlob)
		if err != nil {
			t.Fatal(err)
		}
		if err := p2p.WriteMsg(st, getRequest{Ref: ref.Bytes(), Len: int64(len(data)), Tree: true}, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		held = append(held, st)
	}
	testkit.WaitFor(t, 10*time.Second, "all the hog's requests running or queued", func() bool {
		st := holder.UploadStats()
		return st.Uploads+st.Queued == 40
	})
	t.Logf("holder uploads with the hog: %+v", holder.UploadStats())
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second) // the holder's stalled writes time out after 5 s
	defer cancel()
	if _, err := honest.FetchBlob(ctx, ref, node.FetchOptions{}); err != nil {
		t.Fatalf("the honest member's fetch beside the hog: %v (after %s; uploads %+v)", err, time.Since(start), holder.UploadStats())
	}
	t.Logf("honest fetch of 48 MiB beside 40 hogged requests: %s", time.Since(start).Round(time.Millisecond))
	if got := nodetest.ReadAll(t, honest, ref); string(got) != string(data) {
		t.Fatal("the honest member got other bytes")
	}
}
