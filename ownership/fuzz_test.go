package ownership

import (
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/kv/kvtest"
)

func FuzzSharesRecord(f *testing.F) {
	kvtest.FuzzRecord(f, kv.KindShares, record{
		Shares:  map[syncnode.GroupID]int{"photos": 1},
		Escrow:  map[string]Transfer{"t1": {Group: "photos", N: 1}},
		Created: map[syncnode.GroupID]bool{"photos": true},
	})
}

func FuzzTransferRecord(f *testing.F) {
	kvtest.FuzzRecord(f, kv.KindTransfer, received{Accepted: true, T: &Transfer{Group: "photos", N: 2}})
}
