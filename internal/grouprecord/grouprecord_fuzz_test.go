package grouprecord

import (
	"log/slog"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode/p2p"
)

// A group record read back from the bucket is untrusted bytes: whatever
// they are, opening them returns an error or a record signed by this
// node, and never panics.
func FuzzOpenRecord(f *testing.F) {
	h, err := p2p.NewHost(p2p.HostConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { h.Close() })
	k := New(nil, h, nil, time.Second, nil, slog.New(slog.DiscardHandler))
	body, _ := msgpack.Marshal(record{Members: []Member{{Addrs: []string{"/ip4/1.2.3.4/tcp/1"}}}})
	sig, _ := h.Peerstore().PrivKey(h.ID()).Sign(body)
	good, _ := msgpack.Marshal(signed{Body: body, Sig: sig})
	f.Add(good)
	f.Add([]byte{0x82, 0xa1, 'b', 0xc4, 0x01, 0x00, 0xa1, 's', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := k.open(b)
		if err == nil && len(rec.Members) > maxRecordMembers {
			t.Fatalf("record with %d members opened", len(rec.Members))
		}
	})
}
