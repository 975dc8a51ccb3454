package node

import (
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// A group record read back from the bucket is untrusted bytes: whatever
// they are, opening them returns an error or a record signed by this
// node, and never panics.
func FuzzOpenRecord(f *testing.F) {
	n := openNode(f, f.TempDir())
	f.Cleanup(func() { n.Close() })
	body, _ := msgpack.Marshal(groupRecord{Members: []memberAddrs{{Addrs: []string{"/ip4/1.2.3.4/tcp/1"}}}})
	sig, _ := n.h.Peerstore().PrivKey(n.h.ID()).Sign(body)
	good, _ := msgpack.Marshal(signedRecord{Body: body, Sig: sig})
	f.Add(good)
	f.Add([]byte{0x82, 0xa1, 'b', 0xc4, 0x01, 0x00, 0xa1, 's', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := n.openRecord(b)
		if err == nil && len(rec.Members) > maxRecordMembers {
			t.Fatalf("record with %d members opened", len(rec.Members))
		}
	})
}
