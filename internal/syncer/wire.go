package syncer

import (
	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// The messages of the sync, push and join protocols, and their bounds.

// Limits of the sync exchange.
const (
	// MaxValue is the largest row value accepted; large data belongs in blobs.
	MaxValue = 256 << 10
	// batchBytes bounds the rows sent in one frame.
	batchBytes = 512 << 10
)

// SignpostEntry is the signpost of one blob ref, sent along with the rows
// that reference it.
type SignpostEntry struct {
	Ref      syncnode.BlobRef `msgpack:"r"`
	Signpost signpost.Wire    `msgpack:"s"`
}

// A round, on one stream:
//
//	initiator → responder  hello{group, vv, own membership row}
//	responder → initiator  batch{vv, rows the initiator lacks}… (last has Done)
//	initiator → responder  batch{vv, rows the responder lacks}… (last has Done)
//
// Each side raises its version vector to the other's only after applying
// every row of the other's batches without error. The responder refuses a
// peer that is not a member after its membership row (if any) is applied.

// hello opens a round.
type hello struct {
	Group syncnode.GroupID        `msgpack:"g"`
	VV    syncgroup.VersionVector `msgpack:"v"`
	Self  *syncgroup.Row          `msgpack:"s,omitempty"`
	Prio  syncnode.Priority       `msgpack:"p"`
	// Admission is the admin's row admitting the sender, so that a member
	// that has not heard of it yet learns it with the membership.
	Admission *syncgroup.Row `msgpack:"a,omitempty"`
	// Chain is the end of the sender's chain of changes (at most
	// chainTail of them), oldest first, so that a member that has not
	// heard of the change admitting the sender learns it with the
	// membership. Each is checked as any row is.
	Chain []syncgroup.Row `msgpack:"c,omitempty"`
}

// chainTail bounds the changes a hello carries.
const chainTail = 16

// batch carries a version vector and rows; the last of a side has Done.
type batch struct {
	Err  string                  `msgpack:"e,omitempty"`
	Prio *syncnode.Priority      `msgpack:"p,omitempty"` // first batch only
	VV   syncgroup.VersionVector `msgpack:"v,omitempty"`
	Rows []syncgroup.Row         `msgpack:"r,omitempty"`
	// Signposts of the blob refs in Rows, filtered for the receiver.
	Signposts []SignpostEntry `msgpack:"sp,omitempty"`
	Done      bool            `msgpack:"d,omitempty"`
}

// maxHello bounds a hello: a version vector (about 45 bytes a writer) and
// the sender's membership row.
const maxHello = 256 << 10

// refusal is the one answer to a peer that may not sync or join a group:
// the group is unknown here, the peer is not a member, or its invitation
// does not hold.
const refusal = "refused: no such syncgroup here, or not a member of it, or an invitation that is not valid for this peer (expired, or signed by no admin)"

// pushMsg carries new rows of one group, with the sender's signposts of the
// blobs they reference.
type pushMsg struct {
	Group     syncnode.GroupID `msgpack:"g"`
	Rows      []syncgroup.Row  `msgpack:"r"`
	Signposts []SignpostEntry  `msgpack:"sp,omitempty"`
	// Prio is the sender's priority in the group, observed as in a round.
	Prio *syncnode.Priority `msgpack:"p,omitempty"`
}

// pushAck ends a push: the receiver took every frame, and tells its
// priority in each group pushed, so both sides observe each other's as
// after a round.
type pushAck struct {
	Prios map[syncnode.GroupID]syncnode.Priority `msgpack:"p"`
}

// maxPushAck bounds a push's answer: a priority per group.
const maxPushAck = 64 << 10

// joinRequest asks an admin to admit the sender into a group.
type joinRequest struct {
	Invitation syncgroup.Invitation `msgpack:"i"`
	// TS is the joiner's last timestamp in the group, from an earlier
	// membership (zero if none): the admission is written after it.
	TS syncgroup.Timestamp `msgpack:"t,omitempty"`
}

// joinResponse answers a joinRequest: the group's spec, or why not.
type joinResponse struct {
	Err  string         `msgpack:"e,omitempty"`
	Spec syncgroup.Spec `msgpack:"s"`
	// Admins, with a refusal from a member that is no admin, are where
	// the group's admins can be reached (multiaddrs ending in /p2p/ID),
	// for a joiner whose invitation that member found good: a hint, at
	// most maxRedirects of at most syncgroup.MaxInvitationAddrLen bytes.
	Admins []string `msgpack:"ad,omitempty"`
}

// maxRedirects bounds the admin addresses a refusal carries, and the
// peers a join asks beyond the ones it started with.
const maxRedirects = 16

// maxJoinRequest bounds a join request: an invitation, a membership row
// and a few addresses.
const maxJoinRequest = 16 << 10
