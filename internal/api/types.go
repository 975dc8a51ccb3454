// Package api is the contract of the daemon's local control API: JSON
// over HTTP on a loopback address, every request carrying the token kept
// in the data directory. It holds every request and answer type, every
// route, and a typed Client that the CLI, the tests and the status page
// use; the daemon (internal/control) serves it.
package api

import (
	"encoding/json"
	"time"

	"github.com/syncnode/syncnode"
)

// HeaderBlobLength carries the length of a blob read; TrailerError, a
// trailer, the error that stopped a blob read after its answer began.
const (
	HeaderBlobLength = "Syncnode-Blob-Length"
	TrailerError     = "Syncnode-Error"
)

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
}

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Ref    string                   `json:"ref"`
	Hex    string                   `json:"hex"`
	Size   int64                    `json:"size"`
	Shares map[syncnode.GroupID]int `json:"shares,omitempty"`
	// Pinned reports that the user pinned the blob here (blob pin): it
	// is kept whatever the budget.
	Pinned bool `json:"pinned"`
}

// RemoveOptions modify a blob removal.
type RemoveOptions struct {
	// Force removes a blob the user pinned here, dropping the pin; it
	// never overrides shares or work in progress.
	Force bool
}

// Pin answers a pin or an unpin: whether the blob is pinned here now,
// and, for an unpin, whether it was.
type Pin struct {
	Ref       string `json:"ref"`
	Pinned    bool   `json:"pinned"`
	WasPinned bool   `json:"was_pinned"`
}

// FetchOptions tune a fetch the user asked for.
type FetchOptions struct {
	// Urgency orders fetches that wait for a slot: higher first
	// (node.UrgencyNormal when zero).
	Urgency int
	// Wait is how long a fetch whose holders cannot be reached waits for
	// one to come back (zero: it fails at once).
	Wait time.Duration
}

// FetchEvent is one line of a fetch's NDJSON status stream.
type FetchEvent struct {
	State    string `json:"state"`
	Received int64  `json:"received"`
	Total    int64  `json:"total"`
	Holders  int    `json:"holders,omitempty"`
	// Error is why the fetch failed, or, while "waiting", why its last
	// try did.
	Error string `json:"error,omitempty"`
	// Until is when a "waiting" fetch gives up.
	Until *time.Time `json:"until,omitempty"`
}

// Removed answers a blob removal.
type Removed struct {
	Removed string `json:"removed"`
}

// Why explains a blob's state on the node: held or not, who has it, what
// the server fetcher has tried and when it tries next.
type Why struct {
	Ref  string `json:"ref"`
	Held bool   `json:"held"`
	Size int64  `json:"size"`
	// Shares are the node's ownership shares by group.
	Shares map[syncnode.GroupID]int `json:"shares,omitempty"`
	// Pinned reports that the user pinned the blob here, at PinnedAt.
	Pinned   bool      `json:"pinned"`
	PinnedAt time.Time `json:"pinned_at,omitzero"`
	// Groups are the syncgroups the blob was learned through; ServerIn
	// reports whether the node is a server in one of them.
	Groups   []string `json:"groups,omitempty"`
	ServerIn bool     `json:"server_in"`
	// Locations are where the blob probably is, best first.
	Locations []WhyLocation `json:"locations,omitempty"`
	// Copies are, per group, the verified server copies known and wanted.
	Copies []WhyCopies `json:"copies,omitempty"`
	// Unreferenced are the groups whose rows no longer reference it.
	Unreferenced []WhyUnreferenced `json:"unreferenced,omitempty"`
	// Queued and Running describe the server fetcher; Attempts is the
	// persisted count of failed attempts; NextAttempt when the next is due.
	Queued      bool      `json:"queued"`
	Running     bool      `json:"running"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// LastAttempt, LastErr, Tried and Holders come from the fetch journal.
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastErr     string    `json:"last_err,omitempty"`
	Tried       []string  `json:"tried,omitempty"`
	Holders     []string  `json:"holders,omitempty"`
	// Restoring reports a lost or damaged copy being fetched again.
	Restoring bool `json:"restoring"`
	// Handoff is the outcome of the last share hand-off, at HandoffAt.
	Handoff   string    `json:"handoff,omitempty"`
	HandoffAt time.Time `json:"handoff_at,omitzero"`
	// Route is how the last fetch that met a relay went (through which
	// relay, throttled, or refused by setting), at RouteAt.
	Route   string    `json:"route,omitempty"`
	RouteAt time.Time `json:"route_at,omitzero"`
	// Store names the node's blob store and StoreErr its last failure:
	// a fetch that failed may have failed there.
	Store    string `json:"store,omitempty"`
	StoreErr string `json:"store_err,omitempty"`
}

// WhyLocation is one place the blob probably is.
type WhyLocation struct {
	Peer     string    `json:"peer"`
	Name     string    `json:"name,omitempty"`
	WhenSeen time.Time `json:"when_seen"`
	Server   bool      `json:"server"`
	Proxy    bool      `json:"proxy"`
	Addrs    []string  `json:"addrs,omitempty"`
}

// CreateRequest creates a syncgroup.
type CreateRequest struct {
	Name     string   `json:"name"`
	Prefixes []string `json:"prefixes"`
	Private  bool     `json:"private"`
	DevType  string   `json:"devtype"`
	// Copies is how many verified server copies the group wants (0: 1).
	Copies int `json:"copies,omitempty"`
	// Budget bounds each writer's rows on every member (nil, or a zero
	// field: the default).
	Budget *Budget `json:"budget,omitempty"`
}

// Budget bounds what one writer's rows may cost each member of a group:
// rows, bytes and blob references (a zero field: each member's own
// default).
type Budget struct {
	Rows  int   `json:"rows,omitempty"`
	Bytes int64 `json:"bytes,omitempty"`
	Refs  int   `json:"refs,omitempty"`
}

// Group describes a syncgroup.
type Group struct {
	ID       string   `json:"id"`
	Name     string   `json:"name"`
	Prefixes []string `json:"prefixes"`
	Private  bool     `json:"private"`
	Admins   []string `json:"admins"`
	// Copies is how many verified server copies the group wants.
	Copies int `json:"copies"`
	// Budget is the group's bound on each writer's rows (nil, or a zero
	// field: the default).
	Budget *Budget `json:"budget,omitempty"`
}

// InviteRequest asks for an invitation.
type InviteRequest struct {
	Group   string `json:"group"`
	Peer    string `json:"peer"`
	DevType string `json:"devtype"`
	TTL     string `json:"ttl"`
}

// Invitation is an invitation ready to hand to the joiner: the signed
// invitation (syncgroup.Invitation.Marshal), which carries the addresses
// of the admin and of the group's servers. AdminAddrs, in a join, are
// extra addresses: the admin's, or another peer's if they end in its
// /p2p/ ID. An invitation printed by an older node carries none and came
// with them here.
type Invitation struct {
	Invitation []byte   `json:"invitation"`
	AdminAddrs []string `json:"admin_addrs,omitempty"`
}

// GroupRequest names a group.
type GroupRequest struct {
	Group string `json:"group"`
	// Force, for a leave, leaves even with blobs whose shares could be
	// handed to no member.
	Force bool `json:"force,omitempty"`
}

// SpecChange changes a group's spec; the node must be an admin allowed to
// make the change.
type SpecChange struct {
	Group string `json:"group"`
	// Op is admin-add, admin-remove (Peer), prefix-add, prefix-remove
	// (Prefix), copies (Copies) or budget (Budget).
	Op     string  `json:"op"`
	Peer   string  `json:"peer,omitempty"`
	Prefix string  `json:"prefix,omitempty"`
	Copies int     `json:"copies,omitempty"`
	Budget *Budget `json:"budget,omitempty"`
}

// EjectRequest ejects a member from a group; the node must be an admin.
type EjectRequest struct {
	Group string `json:"group"`
	// Peer is the member's peer ID, or its name when exactly one member
	// of the group has that name.
	Peer string `json:"peer"`
	// Force ejects even when blobs only the member is known to hold
	// cannot be fetched first (they are then at risk), or it does not
	// answer.
	Force bool `json:"force,omitempty"`
	// DryRun only says what the ejection would do.
	DryRun bool `json:"dry_run,omitempty"`
}

// Ejection answers an ejection or its dry run: what it did, or would do,
// about the blobs of the group that the member keeps shares of.
type Ejection struct {
	Group  string `json:"group"`
	Peer   string `json:"peer"`
	Name   string `json:"name,omitempty"`
	DryRun bool   `json:"dry_run"`
	// Ejected reports that the member is out.
	Ejected bool `json:"ejected"`
	// Member is false for a peer invited that never joined: it keeps
	// nothing.
	Member bool `json:"member"`
	// Unanswered, in a dry run, is why the member did not answer: the
	// ejection is then refused unless forced.
	Unanswered string `json:"unanswered,omitempty"`
	// Held are the blobs the member keeps shares of (by its word; if it
	// does not answer, those only it is known to hold).
	Held []string `json:"held,omitempty"`
	// Fetch, in a dry run, are those of Held the node lacks and would
	// fetch first; Kept, after the ejection, those it fetched and keeps
	// with the group's shares.
	Fetch []string `json:"fetch,omitempty"`
	Kept  []string `json:"kept,omitempty"`
	// AtRisk are those no peer could give: a dry run's that no peer asked
	// holds, a forced ejection's that could not be fetched.
	AtRisk []string `json:"at_risk,omitempty"`
}

// Left answers a group leave.
type Left struct {
	Left string `json:"left"`
	// AtRisk are the blobs whose shares could be handed to no member,
	// left at risk by a forced leave.
	AtRisk []string `json:"at_risk,omitempty"`
}

// Member is one member of a group.
type Member struct {
	Peer    string   `json:"peer"`
	Name    string   `json:"name,omitempty"`
	DevType string   `json:"devtype"`
	Addrs   []string `json:"addrs,omitempty"`
	// Online reports a connection to the member now; LastSeen is when the
	// last one ended, if the node saw one.
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// HeaderPath names, in each part of a PutBlobs body, the file's path
// (slash-separated, relative): the row key under the prefix.
const HeaderPath = "Syncnode-Path"

// HeaderMtime carries, in each part of a PutBlobs body, the file's
// modification time (RFC 3339).
const HeaderMtime = "Syncnode-Mtime"

// HeaderAbort, in the last part of a PutBlobs body, ends it short: the
// file it names (HeaderPath) could not be read. The daemon stores no
// more and writes no row.
const HeaderAbort = "Syncnode-Abort"

// PutBlobsOptions make PutBlobs also write one row per file in Group,
// at Prefix + the file's path, as one batch once every blob is stored.
type PutBlobsOptions struct {
	Group  string
	Prefix string
}

// StoredFile is one file PutBlobs stored.
type StoredFile struct {
	Path string `json:"path"`
	Ref  string `json:"ref"`
	Size int64  `json:"size"`
}

// StoredFiles is PutBlobs' answer: the files stored, in order, and the
// rows written. On a failure, Error says what failed and Failed names
// the file (if it was one file's fault); the files before it are stored,
// and no row is written.
type StoredFiles struct {
	Files  []StoredFile `json:"files"`
	Rows   int          `json:"rows"`
	Failed string       `json:"failed,omitempty"`
	Error  string       `json:"error,omitempty"`
}

// RowsPage is a page of a group's rows, and the start of the next page
// ("" after the last).
type RowsPage struct {
	Rows []Row  `json:"rows"`
	Next string `json:"next,omitempty"`
}

// RowsRequest writes Rows in Group as one batch: all or none.
type RowsRequest struct {
	Group string       `json:"group"`
	Rows  []RowRequest `json:"rows"`
}

// RowRequest writes a row: Value is JSON, in which {"$blob": "<ref>"}
// stands for a blob ref.
type RowRequest struct {
	Group string          `json:"group"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// Row is a row as the API shows it, its value converted to JSON.
type Row struct {
	Key    string          `json:"key"`
	Value  json.RawMessage `json:"value"`
	Writer string          `json:"writer"`
	Time   time.Time       `json:"time"`
	// Seq is the version's place in its writer's writes: of two versions
	// of a key by one writer, the higher wins. (Time alone may not tell:
	// two writes can share it.)
	Seq uint64 `json:"seq"`
}

// Deleted answers a row deletion: the key, and the tombstone's time and
// sequence number (as in Row).
type Deleted struct {
	Deleted string    `json:"deleted"`
	Time    time.Time `json:"time"`
	Seq     uint64    `json:"seq"`
}

// Peer is a connected peer.
type Peer struct {
	ID    string   `json:"id"`
	Name  string   `json:"name,omitempty"`
	Addrs []string `json:"addrs"`
	// Direct reports a direct connection; Relays name the relays of the
	// relayed ones.
	Direct bool     `json:"direct"`
	Relays []string `json:"relays,omitempty"`
}

// Status summarises the node.
type Status struct {
	ID     string   `json:"id"`
	Addrs  []string `json:"addrs"`
	Groups int      `json:"groups"`
	Peers  int      `json:"peers"`
	// Reachability is what AutoNAT found: "public", "private" (behind a
	// NAT) or "unknown"; Relays are the relays the node holds
	// reservations with.
	Reachability string   `json:"reachability"`
	Relays       []string `json:"relays,omitempty"`
	// Store names the blob store (a disk directory, or s3://bucket/prefix
	// and its endpoint); StoreErr is its last failure, empty once a
	// request succeeds again.
	Store    string `json:"store"`
	StoreErr string `json:"store_err,omitempty"`
	// Blobs and BlobBytes count what the node holds; while TakingUp (the
	// walk of the store after the node opened runs), only the blobs the
	// walk has reached.
	Blobs     int   `json:"blobs"`
	BlobBytes int64 `json:"blob_bytes"`
	TakingUp  bool  `json:"taking_up,omitempty"`
	// Pinned counts the blobs the user pinned here.
	Pinned     int   `json:"pinned"`
	FetchQueue int   `json:"fetch_queue"`
	Uploads    int64 `json:"uploads"`
	BytesOut   int64 `json:"bytes_out"`
	BytesIn    int64 `json:"bytes_in"`
	// Unreferenced counts the blobs (per group) that no live row names
	// any more and that are collected here when their grace ends;
	// Collected those collected since the node started.
	Unreferenced int64 `json:"unreferenced"`
	Collected    int64 `json:"collected"`
	// Durability is, per group, the referenced blobs and those at risk:
	// fewer verified server copies known than the group wants.
	Durability []Durability `json:"durability"`
	// Refused names the members whose claims this node refused for being
	// over their budget, and how many.
	Refused []Refusal `json:"refused,omitempty"`
}

// Refusal is one member's count of refusals over its budget.
type Refusal struct {
	Peer string `json:"peer"`
	// What was refused: "rows".
	What  string `json:"what"`
	Count int64  `json:"count"`
}

// WhyUnreferenced says that no live row of a group references the blob
// any more: since when, and when it is collected here (due), or when it
// was (collected).
type WhyUnreferenced struct {
	Group     string    `json:"group"`
	Since     time.Time `json:"since,omitzero"`
	Due       time.Time `json:"due,omitzero"`
	Collected time.Time `json:"collected,omitzero"`
}

// WhyCopies are a group's verified server copies of a blob: known, and
// wanted before devices let theirs go.
type WhyCopies struct {
	Group string `json:"group"`
	Known int    `json:"known"`
	Want  int    `json:"want"`
}

// Durability is one group's line of the durability summary.
type Durability struct {
	Group string `json:"group"`
	// Admins are the group's admins, most senior first.
	Admins     []string `json:"admins"`
	Copies     int      `json:"copies"`
	Referenced int      `json:"referenced"`
	AtRisk     int      `json:"at_risk"`
	AtRiskRefs []string `json:"at_risk_refs,omitempty"`
}

// WatchOptions shape a watch (see node.WatchOptions).
type WatchOptions struct {
	// From resumes after the event that carried this marker; empty
	// replays the group's current state first.
	From string
	// Prefix limits row events to keys under it.
	Prefix string
	// Now skips the replay and the past.
	Now bool
}

// Event is one line of a watch's NDJSON stream: a change in a group (see
// package feed for the kinds), or, last, the error that ended the watch.
type Event struct {
	// Marker resumes the watch just after this event.
	Marker  string          `json:"marker,omitempty"`
	Kind    string          `json:"kind,omitempty"`
	Group   string          `json:"group,omitempty"`
	Key     string          `json:"key,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Peer    string          `json:"peer,omitempty"`
	Name    string          `json:"name,omitempty"`
	Local   bool            `json:"local,omitempty"`
	Ref     string          `json:"ref,omitempty"`
	Size    int64           `json:"size,omitempty"`
	Shares  int             `json:"shares,omitempty"`
	Initial bool            `json:"initial,omitempty"`
	Time    time.Time       `json:"time,omitzero"`
	// Error ends the stream; Expired reports that the watcher fell
	// behind what the node keeps and must watch again without a marker.
	Error     string `json:"error,omitempty"`
	Expired   bool   `json:"expired,omitempty"`
	BadMarker bool   `json:"bad_marker,omitempty"`
}
