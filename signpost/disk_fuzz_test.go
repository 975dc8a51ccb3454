package signpost

import (
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// FuzzDiskRecord feeds bytes to the stored signpost's decoder: every input
// decodes to a signpost or fails as a corrupt record; nothing panics.
func FuzzDiskRecord(f *testing.F) {
	var sp Signpost
	sp.AddGroup("photos")
	sp.AddLocation(peer.ID("\x00\x24device"), Location{Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}, IsServer: true})
	good, err := kv.Encode(kv.KindSignpost, disk{Wire: sp.ToWire(), FetchAttempts: 3})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		var d disk
		err := kv.Decode(kv.KindSignpost, b, &d)
		if err == nil {
			_, err = d.signpost()
		}
		if err != nil && !errors.Is(err, syncnode.ErrCorruptRecord) {
			t.Fatalf("error %v does not wrap ErrCorruptRecord", err)
		}
	})
}
