package journal

import (
	"testing"

	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/kv/kvtest"
)

// FuzzJournalRecord feeds bytes to the fetch journal's decoder.
func FuzzJournalRecord(f *testing.F) {
	kvtest.FuzzRecord(f, kv.KindJournal, entry{LastAttempt: 1e18, LastErr: "no holder", Tried: []string{"12D3KooW"}, Holders: []string{"12D3KooW"}, Done: true, Count: 3})
}
