package featuretests

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/node"
)

// TestRefusedRowWritesNothing: a row put refused for an unknown group, a
// key outside the group's prefixes or an oversized value leaves no share,
// no signpost and no row behind, and the blob can still be removed.
func TestRefusedRowWritesNothing(t *testing.T) {
	n := start(t, func(c *node.Config) { c.BlobBudget = 1 << 30 })
	g := createGroup(t, n, "photos", syncnode.Normal)
	info, err := n.PutBlob(t.Context(), bytes.NewReader(randomBytes(64<<10, 1)))
	if err != nil {
		t.Fatal(err)
	}
	value := func(pad int) []byte {
		v, err := msgpack.Marshal(map[string]any{"img": info.Ref, "pad": strings.Repeat("x", pad)})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range []struct {
		name  string
		group syncnode.GroupID
		key   string
		value []byte
	}{
		{"unknown group", "no-such-group", "photos/a", value(0)},
		{"key outside the prefixes", g, "videos/a", value(0)},
		{"oversized value", g, "photos/a", value(4 << 20)},
	} {
		if _, err := n.PutRow(c.group, c.key, c.value); err == nil {
			t.Fatalf("%s: the write was accepted", c.name)
		}
		if sh, err := n.BlobShares(info.Ref); err != nil || len(sh) != 0 {
			t.Fatalf("%s: refused write left shares %v (%v)", c.name, sh, err)
		}
		if sp, err := n.Signpost(info.Ref); !errors.Is(err, syncnode.ErrNotFound) {
			t.Fatalf("%s: refused write left a signpost %+v (%v)", c.name, sp, err)
		}
		if rows, _ := n.ListRows(g, ""); len(rows) != 0 {
			t.Fatalf("%s: refused write left rows %v", c.name, rows)
		}
	}
	if err := n.RemoveBlob(info.Ref); err != nil {
		t.Fatalf("the blob is pinned by refused writes: %v", err)
	}
}
