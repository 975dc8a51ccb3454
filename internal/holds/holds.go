// Package holds says what keeps a blob on a node and what would release
// it (ownership shares, shares in escrow, a reclaim, work in progress, a
// user's pin), and removes a copy that nothing holds.
package holds

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
)

var (
	// ErrPinned reports a blob kept by ownership shares (held or in
	// escrow), a reclaim or work in progress.
	ErrPinned = errors.New("node: blob is pinned by ownership shares")
	// ErrUserPinned reports a blob the user pinned here: unpin it first,
	// or remove it with force.
	ErrUserPinned = errors.New("node: blob is pinned here by the user")
)

// Kind names what keeps a blob here.
type Kind string

// What can keep a blob from being removed.
const (
	// Shares: this node holds ownership shares of it in a group.
	Shares Kind = "shares"
	// Escrow: shares offered to a member that has not settled the
	// transfer (it did not answer).
	Escrow Kind = "escrow"
	// Recovered: held when this node's database was lost; kept until the
	// group's members say who keeps its shares.
	Recovered Kind = "recovered"
	// Work: work in progress needs the copy (shares being taken or handed
	// off, a fetch for an ejection).
	Work Kind = "work"
	// User: the user pinned it here.
	User Kind = "user"
	// Copies: a group wants more verified server copies than the other
	// servers hold now; this copy may be one of the few.
	Copies Kind = "copies"
)

// Hold is one thing that keeps a blob here.
type Hold struct {
	Kind Kind
	// Group and Shares are the group and the share count, for shares held
	// or in escrow; Peer, for shares in escrow, the member they were
	// offered to.
	Group  syncnode.GroupID
	Shares int
	Peer   peer.ID
	// What says what holds the blob; Release what would release it.
	What, Release string
}

// Error is a removal's refusal: each hold that keeps the blob here and
// what would release it. errors.Is matches ErrPinned when shares (held or
// in escrow), a reclaim or work in progress hold it, and ErrUserPinned
// when the user pinned it.
type Error struct {
	Ref   syncnode.BlobRef
	Holds []Hold
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Holds))
	for i, h := range e.Holds {
		parts[i] = h.What + ": " + h.Release
	}
	return fmt.Sprintf("node: blob %s is held here: %s", e.Ref, strings.Join(parts, "; "))
}

// Is matches ErrPinned and ErrUserPinned by the holds.
func (e *Error) Is(target error) bool {
	for _, h := range e.Holds {
		switch {
		case target == ErrUserPinned && h.Kind == User:
			return true
		case target == ErrPinned && h.Kind != User:
			return true
		}
	}
	return false
}

// Only reports whether every hold is of kind k.
func (e *Error) Only(k Kind) bool {
	for _, h := range e.Holds {
		if h.Kind != k {
			return false
		}
	}
	return true
}

// Ledger is what the share ledger says of a blob.
type Ledger interface {
	Shares(ref syncnode.BlobRef) (map[syncnode.GroupID]int, error)
	Pending(ref syncnode.BlobRef) ([]ownership.Transfer, error)
	Recovered(ref syncnode.BlobRef) (bool, error)
	MayEvict(ref syncnode.BlobRef) (bool, error)
}

// Names are how the holds name groups and peers, and what they need to
// know of a group to say what releases its shares.
type Names interface {
	GroupName(g syncnode.GroupID) string
	PeerName(p peer.ID) string
	// Servers reports whether this node is a server of g, and how many
	// other servers g has.
	Servers(g syncnode.GroupID) (self bool, others int)
}

// Facts are what the node knows of a blob besides its ledger: work in
// progress pins it, the user pinned it, how long shares wait in escrow,
// and the groups short of the server copies they want without this one.
type Facts struct {
	Work, User bool
	EscrowWait time.Duration
	Short      []Shortfall
}

// Shortfall is a group in which fewer servers other than this node hold a
// blob verified (Have, those that said so when asked) than the group
// wants (Want, its Spec.Copies).
type Shortfall struct {
	Group      syncnode.GroupID
	Have, Want int
}

// Of returns what keeps ref here, nil if nothing does.
func Of(ref syncnode.BlobRef, l Ledger, n Names, f Facts) (*Error, error) {
	e := &Error{Ref: ref}
	sh, err := l.Shares(ref)
	if err != nil {
		return nil, err
	}
	pending, err := l.Pending(ref)
	if err != nil {
		return nil, err
	}
	recovered, err := l.Recovered(ref)
	if err != nil {
		return nil, err
	}
	for _, g := range sortedGroups(sh) {
		if sh[g] > 0 {
			e.Holds = append(e.Holds, Hold{Kind: Shares, Group: g, Shares: sh[g],
				What: fmt.Sprintf("%s in group %s", sharesWord(sh[g]), n.GroupName(g)), Release: release(n, g)})
		}
	}
	for _, t := range pending {
		e.Holds = append(e.Holds, Hold{Kind: Escrow, Group: t.Group, Shares: t.N, Peer: t.To,
			What:    fmt.Sprintf("%s in group %s offered to %s, which has not settled the transfer", sharesWord(t.N), n.GroupName(t.Group), n.PeerName(t.To)),
			Release: fmt.Sprintf("it settles when that member answers again (after the escrow wait, %v, the shares come back here)", f.EscrowWait)})
	}
	if recovered {
		e.Holds = append(e.Holds, Hold{Kind: Recovered, What: "held when this node's database was lost, or named again after its collection",
			Release: "kept until the members of its groups say who keeps its shares (they are asked in the background)"})
	}
	if f.Work {
		e.Holds = append(e.Holds, Hold{Kind: Work, What: "a share transfer or an ejection in progress needs the copy",
			Release: "try again once that ends"})
	}
	for _, s := range f.Short {
		e.Holds = append(e.Holds, Hold{Kind: Copies, Group: s.Group,
			What:    fmt.Sprintf("group %s wants %d verified server copies, and %d other servers hold one now", n.GroupName(s.Group), s.Want, s.Have),
			Release: "another server of the group fetches it, or the group's copies are lowered (`syncnode sg copies`); `syncnode why` lists the copies known"})
	}
	if f.User {
		e.Holds = append(e.Holds, Hold{Kind: User, What: "pinned here",
			Release: fmt.Sprintf("`syncnode blob unpin %s` (or `syncnode blob rm -force %s`, which unpins and removes)", ref, ref)})
	}
	// Shares of a group no longer counted (the ledger's own rule decides)
	// hold nothing; what MayEvict refuses is named above.
	if ok, err := l.MayEvict(ref); err != nil {
		return nil, err
	} else if !ok && len(e.Holds) == 0 {
		e.Holds = append(e.Holds, Hold{Kind: Shares, What: "ownership shares", Release: "see `syncnode why " + ref.String() + "`"})
	}
	if len(e.Holds) == 0 {
		return nil, nil
	}
	return e, nil
}

// release says what moves this node's shares in group g elsewhere, or
// dissolves them.
func release(n Names, g syncnode.GroupID) string {
	self, servers := n.Servers(g)
	var moves string
	switch {
	case self:
		moves = "this node is a server of the group, which keeps them: leave the group to hand them to another member"
	case servers == 0:
		moves = "they move to a server of the group when one takes them, and the group has none (run a server, or leave the group)"
	default:
		moves = fmt.Sprintf("they move to a server of the group when one takes them, after it fetched the blob (the group has %d; `syncnode why` shows the last hand-off)", servers)
	}
	return moves + "; or delete every row of the group that names it: the shares dissolve once none has for the grace (`syncnode why` says when)"
}

func sharesWord(k int) string {
	if k == 1 {
		return "1 share"
	}
	return fmt.Sprintf("%d shares", k)
}

func sortedGroups(m map[syncnode.GroupID]int) []syncnode.GroupID {
	out := make([]syncnode.GroupID, 0, len(m))
	for g := range m {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}
