package ownership

import (
	"errors"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// fuzzRecord feeds bytes to the decoder of one stored record kind: every
// input decodes or fails as a corrupt record; nothing panics.
func fuzzRecord[T any](f *testing.F, kind kv.Kind, seeds ...T) {
	for _, s := range seeds {
		b, err := kv.Encode(kind, s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v T
		if err := kv.Decode(kind, b, &v); err != nil && !errors.Is(err, syncnode.ErrCorruptRecord) {
			t.Fatalf("error %v does not wrap ErrCorruptRecord", err)
		}
	})
}

func FuzzSharesRecord(f *testing.F) {
	fuzzRecord(f, kv.KindShares, record{
		Shares:  map[syncnode.GroupID]int{"photos": 1},
		Escrow:  map[string]Transfer{"t1": {Group: "photos", N: 1}},
		Created: map[syncnode.GroupID]bool{"photos": true},
	})
}

func FuzzTransferRecord(f *testing.F) {
	fuzzRecord(f, kv.KindTransfer, received{Accepted: true, T: &Transfer{Group: "photos", N: 2}})
}
