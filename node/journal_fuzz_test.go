package node

import (
	"errors"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// FuzzJournalRecord feeds bytes to the fetch journal's decoder: every input
// decodes or fails as a corrupt record; nothing panics.
func FuzzJournalRecord(f *testing.F) {
	good, err := kv.Encode(kv.KindJournal, journalEntry{LastAttempt: 1e18, LastErr: "no holder", Tried: []string{"12D3KooW"}, Holders: []string{"12D3KooW"}, Done: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		var e journalEntry
		if err := kv.Decode(kv.KindJournal, b, &e); err != nil && !errors.Is(err, syncnode.ErrCorruptRecord) {
			t.Fatalf("error %v does not wrap ErrCorruptRecord", err)
		}
	})
}
