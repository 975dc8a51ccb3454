package syncgroup

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/zeebo/blake3"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

// chainPrefix keys the group's chain of changes: every change to its
// spec (admins, prefixes, server copies) and every admission, ejection
// and readmission an admin makes after the group was created. Each
// change names the one it follows, so the changes form a tree from the
// spec the group was created with, and every replica picks the same path
// through it (see walk): membership and the spec are what that path says,
// whatever order its changes arrived in. The key sorts before every
// membership row (no peer ID's bytes begin with two NULs) and the depth in
// it after them, so Missing sends a change's parent before it, and the
// change that makes a peer an admin before that admin's own rows.
const chainPrefix = memberPrefix + "\x00\x00c/"

// Op is what a change does.
type Op string

// The changes an admin can make.
const (
	// AddAdmin makes Peer an admin, junior to every admin before it.
	AddAdmin Op = "admin+"
	// RemoveAdmin makes Peer an ordinary member again. Only Peer itself
	// or an admin senior to it may, and never the last admin.
	RemoveAdmin Op = "admin-"
	// AddPrefix makes the group sync the keys under Prefix too.
	AddPrefix Op = "prefix+"
	// RemovePrefix stops the group syncing the keys under Prefix: its
	// rows leave the group (kept in the replica, listed and synced no
	// more, their blobs collected as if deleted); never the last prefix.
	RemovePrefix Op = "prefix-"
	// SetCopies sets the verified server copies the group wants (N).
	SetCopies Op = "copies"
	// SetBudget sets what each writer's rows may cost every member
	// (Budget; a zero field: DefaultBudget's). Rows refused under the old
	// budget stay refused: a raise lets writers write more.
	SetBudget Op = "budget"
	// opAdmit admits Peer with the invitation whose Nonce and DevType
	// it carries.
	opAdmit Op = "admit"
	// opEject ejects Peer: rows it wrote up to UpTo stay valid.
	opEject Op = "eject"
	// opReadmit lets Peer, ejected, join again with the invitation Nonce.
	opReadmit Op = "readmit"
	// opRevoke revokes Peer's admission: it left, and its invitation may
	// not bring it back.
	opRevoke Op = "revoke"
)

// Change is one link of the chain: an op and the change it follows.
type Change struct {
	// Parent is the key of the change this one follows; empty for the
	// first change after the group's creation.
	Parent string  `msgpack:"p,omitempty"`
	Op     Op      `msgpack:"o"`
	Peer   peer.ID `msgpack:"e,omitempty"`
	Prefix string  `msgpack:"x,omitempty"`
	N      int     `msgpack:"n,omitempty"`
	Nonce  []byte  `msgpack:"c,omitempty"`
	// DevType is the device type an admission admits Peer as.
	DevType syncnode.DevType `msgpack:"t,omitempty"`
	UpTo    uint64           `msgpack:"u,omitempty"`
	// Budget is what SetBudget sets.
	Budget *Budget `msgpack:"b,omitempty"`
	// Redo is the key of a change of the same writer's that lost to a
	// concurrent branch and that this one makes again (see Rebase).
	Redo string `msgpack:"rd,omitempty"`
}

// Bounds of a change and of the spec it leads to.
const (
	// MaxChange bounds a change's encoded bytes.
	MaxChange = 2 << 10
	// MaxPrefixes bounds a group's prefixes.
	MaxPrefixes = 64
	// MaxAdmins bounds a group's admins.
	MaxAdmins = 64
)

// ErrLastAdmin reports a change that would leave a group with no admin.
var ErrLastAdmin = errors.New("syncgroup: a group keeps at least one admin")

// chainKey returns the key of value written by w at depth: the depth,
// then a hash of the writer and the change, which no other change
// shares.
func chainKey(depth uint64, w peer.ID, value []byte) string {
	h := blake3.New()
	h.Write([]byte(w))
	h.Write([]byte{0})
	h.Write(value)
	return fmt.Sprintf("%s%016x/%s", chainPrefix, depth, hex.EncodeToString(h.Sum(nil)[:16]))
}

// chainDepth returns the depth a chain key names.
func chainDepth(key string) (uint64, bool) {
	rest, ok := strings.CutPrefix(key, chainPrefix)
	if !ok || len(rest) != 16+1+32 || rest[16] != '/' {
		return 0, false
	}
	d, err := strconv.ParseUint(rest[:16], 16, 64)
	return d, err == nil && d > 0
}

// IsChainKey reports whether key is a change of the group's chain.
func IsChainKey(key string) bool { return strings.HasPrefix(key, chainPrefix) }

// link is one change as a replica holds it.
type link struct {
	key    string
	writer peer.ID
	seq    uint64    // the row's: the order its writer made its changes in
	ts     Timestamp // the row's
	c      Change
}

// decodeLink checks a chain row's form: its key is the hash of its writer
// and value at one more than its parent's depth, and its value a change.
func decodeLink(row Row) (link, error) {
	depth, ok := chainDepth(row.Key)
	switch {
	case !ok:
		return link{}, fmt.Errorf("syncgroup: malformed change key %q", row.Key)
	case row.Deleted:
		return link{}, fmt.Errorf("%w: a change is never deleted", ErrNotAllowed)
	case len(row.Value) > MaxChange:
		return link{}, fmt.Errorf("syncgroup: change of %d bytes, at most %d", len(row.Value), MaxChange)
	case chainKey(depth, row.Writer, row.Value) != row.Key:
		return link{}, fmt.Errorf("syncgroup: change %q does not hash to its key", row.Key)
	}
	var c Change
	if err := msgpackx.Unmarshal(row.Value, &c); err != nil {
		return link{}, fmt.Errorf("syncgroup: change: %w", err)
	}
	pd := uint64(0)
	if c.Parent != "" {
		if pd, ok = chainDepth(c.Parent); !ok {
			return link{}, fmt.Errorf("syncgroup: change follows malformed key %q", c.Parent)
		}
	}
	if pd+1 != depth {
		return link{}, fmt.Errorf("syncgroup: change at depth %d follows one at depth %d", depth, pd)
	}
	return link{key: row.Key, writer: row.Writer, seq: row.Seq, ts: row.TS, c: c}, nil
}

// ChangeKey returns the key of a change with value, written by w after
// the change at parent ("" for the first): what a change's row is keyed
// by, and nothing else is.
func ChangeKey(parent string, w peer.ID, value []byte) (string, error) {
	depth := uint64(0)
	if parent != "" {
		d, ok := chainDepth(parent)
		if !ok {
			return "", fmt.Errorf("syncgroup: malformed change key %q", parent)
		}
		depth = d
	}
	return chainKey(depth+1, w, value), nil
}
