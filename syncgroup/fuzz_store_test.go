package syncgroup

import (
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/kv/kvtest"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

func FuzzGroupRecord(f *testing.F) {
	kvtest.FuzzRecord(f, kv.KindGroup, groupRecord{
		Spec: Spec{ID: "g1", Name: "photos", Prefixes: []string{"photos/"}},
		VV:   VersionVector{"dev": 7},
		Prio: syncnode.Priority{DevType: syncnode.Server, Distance: 1},
	})
}

func FuzzRowRecord(f *testing.F) {
	kvtest.FuzzRecord(f, kv.KindRow, Row{Key: "photos/a", Value: []byte{0x81, 0xa1, 0x61, 0x01}, Writer: "dev", Seq: 3})
}

// FuzzFindRefs walks arbitrary row values for blob refs: it never panics,
// and every ref it returns came from a well-formed ref extension.
func FuzzFindRefs(f *testing.F) {
	r := syncnode.RefFromHash([32]byte{1})
	v, err := msgpack.Marshal(map[string]any{"album": []any{photo{Title: "a", Full: r, Thumb: []syncnode.BlobRef{r}}}, "n": 3})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(v)
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		refs, err := FindRefs(b)
		if err != nil {
			return
		}
		for _, ref := range refs {
			if _, err := syncnode.ParseBlobRef(ref.String()); err != nil {
				t.Fatalf("FindRefs returned %v, which does not parse back: %v", ref, err)
			}
		}
	})
}

// FuzzMemberValue decodes arbitrary membership rows (as a peer may write
// them): the decoder never panics, and what it accepts encodes again.
func FuzzMemberValue(f *testing.F) {
	good, err := msgpack.Marshal(Member{DevType: syncnode.Server, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{0x83, 0xa1, 0x74, 0x01, 0xa1, 0x69, 0xc0, 0xa1, 0x61, 0x90})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Member
		if msgpackx.Unmarshal(b, &m) != nil {
			return
		}
		if _, err := msgpack.Marshal(m); err != nil {
			t.Fatalf("accepted membership does not encode: %v", err)
		}
	})
}
