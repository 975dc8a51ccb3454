package custody

import (
	"testing"

	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/kv/kvtest"
)

func FuzzUserPinRecord(f *testing.F) {
	kvtest.FuzzRecord(f, kv.KindUserPin, userPinRecord{At: 1_800_000_000_000_000_000})
}
