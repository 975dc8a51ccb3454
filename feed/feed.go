// Package feed is a node's change feed: a persistent log of what changed
// in its groups and blobs, read back in commit order from resume markers.
//
// Rows enter the log in the transaction that stores them (see
// syncgroup.Journal), and watchers read rows only once on stable storage,
// so a reader never misses a row the store holds nor sees one a power cut
// took back. Blob and share events are appended when the node acts and
// reach watchers with the store's next sync, without one of their own: a
// power cut may take such an event back, never the state it reported. A
// watch reads the log from the database in short snapshots, not from a
// buffer: a slow watcher holds no memory and slows no writer, and only a
// watcher that falls behind the log's retention loses its place
// (ErrExpired).
package feed

import (
	"errors"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/syncgroup"
)

// Kind says what an event reports.
type Kind string

// The kinds of events.
const (
	// RowPut: a row was written (here or by a member, see Local and Peer).
	RowPut Kind = "row.put"
	// RowDeleted: a row was deleted.
	RowDeleted Kind = "row.deleted"
	// MemberJoined: a member joined, or changed its name or addresses.
	MemberJoined Kind = "member.joined"
	// MemberLeft: a member left the group.
	MemberLeft Kind = "member.left"
	// MemberEjected: an admin ejected a member.
	MemberEjected Kind = "member.ejected"
	// BlobHeld: a blob was put on this node. A group's watch has it only
	// if a row of the group named the blob already (else the row that
	// names it comes after); a watch of every group always has it.
	BlobHeld Kind = "blob.held"
	// BlobFetched: a blob's copy arrived here from a peer, verified.
	BlobFetched Kind = "blob.fetched"
	// BlobDropped: the copy here was evicted or removed.
	BlobDropped Kind = "blob.dropped"
	// BlobCollected: no live row of the group references the blob any
	// more, and the grace has run out: the group's shares of it here
	// dissolved (the copy, if nothing else keeps it, is dropped too).
	BlobCollected Kind = "blob.collected"
	// ServerCopy: a server of the group (Peer) holds a verified copy and
	// took its shares from this node.
	ServerCopy Kind = "blob.server"
	// SharesIn: this node took Shares shares of Ref in Group (from Peer,
	// if another member gave them).
	SharesIn Kind = "shares.in"
	// SharesOut: this node gave Shares shares of Ref in Group to Peer.
	SharesOut Kind = "shares.out"
	// CaughtUp: the replay of the group's current state has ended; what
	// follows are changes.
	CaughtUp Kind = "caught-up"
	// Progress carries only a marker: the watcher passed over other
	// groups' events up to it, and keeps its place by it.
	Progress Kind = "progress"
	// GroupChanged: an admin changed the group's spec (its admins,
	// prefixes or server copies); Peer is the admin. Read the spec again.
	GroupChanged Kind = "group.changed"
	// GroupRemoved: this node left the group or was made to join it
	// again, and dropped its rows; those it receives again come as puts.
	GroupRemoved Kind = "group.removed"
	// Damaged: an event of the log could not be read (a flipped bit on
	// disk); what it said is lost, nothing else is.
	Damaged Kind = "damaged"
)

// Event is one change.
type Event struct {
	// Marker resumes a watch just after this event.
	Marker Marker
	Kind   Kind
	Group  syncnode.GroupID
	// Row is the row of a row or member event.
	Row syncgroup.Row
	// Key is the row's key.
	Key string
	// Peer is the row's writer, the member concerned, or the other side
	// of a hand-off.
	Peer peer.ID
	// Local reports a row written, or a blob put, by this node.
	Local bool
	// Ref and Size name the blob of a blob or share event.
	Ref  syncnode.BlobRef
	Size int64
	// Shares is how many shares moved.
	Shares int
	// Initial marks an event of the replay of the current state.
	Initial bool
	// Time is when the event was recorded here (the row's timestamp for
	// the replay).
	Time time.Time
}

// IsRow reports whether e is a row event.
func (e Event) IsRow() bool { return e.Kind == RowPut || e.Kind == RowDeleted }

// Options shape a watch.
type Options struct {
	// From resumes after the event that carried this marker. The zero
	// marker replays the group's current state first (rows and members,
	// ending with a CaughtUp event), then follows changes.
	From Marker
	// Now skips the replay and the past: only changes made after Watch
	// was called. From, when set, wins.
	Now bool
	// Prefix limits row events to keys under it; member, blob and share
	// events are delivered whatever it is.
	Prefix string
}

// Errors of a watch.
var (
	// ErrExpired reports a marker older than what the log keeps: the
	// watcher fell too far behind, and must watch again from the zero
	// marker (the current state is replayed).
	ErrExpired = errors.New("feed: marker older than the log keeps; watch again from the beginning (zero marker)")
	// ErrBadMarker reports a marker that is malformed or from another
	// node's log.
	ErrBadMarker = errors.New("feed: bad marker")
)
