// Package kvtest fuzzes the decoders of stored records.
package kvtest

import (
	"errors"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// FuzzRecord feeds bytes to the decoder of one record kind, seeded with the
// encodings of seeds: every input must decode or fail as a corrupt record;
// nothing may panic. Each input is tried as it is (mostly failing the
// checksum) and with its payload framed anew with a valid checksum, so the
// msgpack decoder behind the checksum is fuzzed too.
func FuzzRecord[T any](f *testing.F, kind kv.Kind, seeds ...T) {
	for _, s := range seeds {
		b, err := kv.Encode(kind, s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, kv.Frame(kind, kv.Payload(b))} {
			var v T
			if err := kv.Decode(kind, in, &v); err != nil && !errors.Is(err, syncnode.ErrCorruptRecord) {
				t.Fatalf("error %v does not wrap ErrCorruptRecord", err)
			}
		}
	})
}
