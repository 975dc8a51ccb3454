// Package syncer syncs syncgroups between devices over libp2p: the join
// handshake; new rows pushed to a few members and relayed once by each
// member they reach (push.go gives the rule and its cost); and rounds of
// anti-entropy, one exchange of version vectors and missing rows in both
// directions, with a few random members per interval as the safety net.
package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/workgroup"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// Errors of the syncer.
var (
	ErrUnknownGroup = errors.New("syncer: unknown syncgroup")
	ErrRefused      = errors.New("syncer: refused by peer")
	ErrTooLarge     = errors.New("syncer: row value too large")
	// ErrNoMemberReached reports a leave refused because no other member
	// could be reached: rows written here might exist nowhere else.
	ErrNoMemberReached = errors.New("syncer: no member reached")
)

// Hooks are the node's part in sync. Methods are called from several
// goroutines at once, never with a group locked.
type Hooks interface {
	// Applied is told of the rows a peer sent that won their keys here.
	Applied(g syncnode.GroupID, rows []syncgroup.Row, from peer.ID)
	// Signposts returns what peer to may learn of the signposts of refs,
	// which the rows about to be sent to it in group g reference.
	Signposts(to peer.ID, g syncnode.GroupID, refs []syncnode.BlobRef) []SignpostEntry
	// Learn is given the signposts member from sent with rows of group g,
	// before those rows are applied: a reader that sees a row can find
	// its blob.
	Learn(from peer.ID, g syncnode.GroupID, sps []SignpostEntry)
	// Synced is told of every round that completed with member p.
	Synced(g syncnode.GroupID, p peer.ID)
	// Pushed is told of every push of rows of g that member p took.
	Pushed(g syncnode.GroupID, p peer.ID)
	// Left is told that this node left group g: its replica is gone.
	Left(g syncnode.GroupID)
}

// Store persists replicas; *syncgroup.Store implements it.
type Store interface {
	// Save writes rows of g that now win their keys, g's version vector
	// and this node's priority in g.
	Save(g *syncgroup.Group, rows []syncgroup.Row, prio syncnode.Priority) error
	// SaveAll writes all of g.
	SaveAll(g *syncgroup.Group, prio syncnode.Priority) error
	// Sync returns once every save before it is on stable storage. Rows
	// are synced before they are acknowledged or leave the node.
	Sync() error
	// Remove deletes g, keeping where this node's writes in it stood; it
	// is called with g locked.
	Remove(g *syncgroup.Group) error
	// Resumed returns where this node's writes in group id stood when a
	// replica of it was last removed.
	Resumed(id syncnode.GroupID) (syncgroup.Resume, error)
}

// Refused returns, per writer, how many of its rows this node refused
// for being over the writer's budget.
func (s *Syncer) Refused() map[peer.ID]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.refused)
}

// refuse counts rows of writer refused over budget.
func (s *Syncer) refuse(writer peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused == nil {
		s.refused = map[peer.ID]int64{}
	}
	if s.refused[writer] == 0 {
		s.log.Warn("a member's rows are over the group's budget; refused", "writer", writer)
	}
	s.refused[writer]++
}

// InitialDistance is a non-server's distance from a server before it has
// synced with anyone.
const InitialDistance = 10

// replica is one group with its lock, this node's priority in it and the
// priorities its members last reported.
type replica struct {
	// applying serializes the changes of rows (a batch's signposts, read
	// for the rows that would win, then the batch applied; a local
	// write), so that no change between the two makes a row whose
	// signpost was read lose: see winners. It is taken before mu.
	applying sync.Mutex
	mu       sync.Mutex
	g        *syncgroup.Group
	prio     syncnode.Priority
	peers    map[peer.ID]syncnode.Priority
	// rounds counts the rounds running with each peer, begun by either
	// side, under mu.
	rounds map[peer.ID]int
}

// roundBegins notes a round with p, begun by either side; the function
// it returns notes its end.
func (r *replica) roundBegins(p peer.ID) (ends func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rounds == nil {
		r.rounds = map[peer.ID]int{}
	}
	r.rounds[p]++
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.rounds[p]--; r.rounds[p] <= 0 {
			delete(r.rounds, p)
		}
	}
}

// inRound reports whether a round with p is running.
func (r *replica) inRound(p peer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rounds[p] > 0
}

// Syncer syncs this node's syncgroups with their members.
type Syncer struct {
	h     host.Host
	cfg   Config
	log   *slog.Logger
	hooks Hooks

	mu     sync.Mutex
	groups map[syncnode.GroupID]*replica
	// memberIPs are the IP addresses each member's membership named when
	// last read.
	memberIPs map[peer.ID]map[string]bool
	pushing   map[pushKey]bool // a round with that peer is running; true: run again after
	// outboxes holds the rows waiting to be pushed to each peer; a peer
	// has an entry while its sender runs.
	outboxes map[peer.ID][]pushItem
	// refused counts, per writer, rows refused over its budget.
	refused map[peer.ID]int64
	// work holds the pushes, rounds and calls that Close stops and
	// waits for; ctx is its context.
	work *workgroup.Group
	ctx  context.Context

	rowsSent, bytesSent, messages atomic.Int64
}

type pushKey struct {
	g syncnode.GroupID
	p peer.ID
}

// New returns a syncer on h and registers its protocol handlers. hooks may
// be nil. Zero fields of cfg take their defaults, and a cfg that Validate
// refuses is an error.
func New(h host.Host, cfg Config, log *slog.Logger, hooks Hooks) (*Syncer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	work := workgroup.New()
	if hooks == nil {
		hooks = noHooks{}
	}
	s := &Syncer{h: h, cfg: cfg, log: log, hooks: hooks,
		groups: map[syncnode.GroupID]*replica{}, pushing: map[pushKey]bool{}, memberIPs: map[peer.ID]map[string]bool{},
		outboxes: map[peer.ID][]pushItem{}, work: work, ctx: work.Context()}
	h.SetStreamHandler(p2p.ProtoSync, s.handleSync)
	h.SetStreamHandler(p2p.ProtoPush, s.handlePush)
	h.SetStreamHandler(p2p.ProtoJoin, s.handleJoin)
	return s, nil
}

// Close stops pushes and periodic rounds and waits for them.
func (s *Syncer) Close() {
	s.h.RemoveStreamHandler(p2p.ProtoSync)
	s.h.RemoveStreamHandler(p2p.ProtoPush)
	s.h.RemoveStreamHandler(p2p.ProtoJoin)
	s.work.Close()
}

// ErrClosed reports a call made once the syncer was closing.
var ErrClosed = errors.New("syncer: closed")

// enter starts a call that uses the store or the network, which Close
// then waits for; it fails once Close has begun. The context returned
// ends with ctx or when Close begins; call done when the call ends.
func (s *Syncer) enter(ctx context.Context) (context.Context, func(), error) {
	ctx, done, err := s.work.Enter(ctx)
	if err != nil {
		return ctx, nil, ErrClosed
	}
	return ctx, done, nil
}

// handling enters the work of a stream handler, which reads and writes
// the store: Close waits for it, and resets st when it begins, so that a
// peer slow to send holds no close up. Once Close has begun it resets st
// and reports false.
func (s *Syncer) handling(st network.Stream) (done func(), ok bool) {
	ctx, leave, err := s.enter(context.Background())
	if err != nil {
		st.Reset()
		return nil, false
	}
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	return func() { stop(); leave() }, true
}

// Stats are a syncer's counters.
type Stats struct {
	// RowsSent counts rows sent in rounds; BytesSent and Messages count
	// the encoded bytes and the frames sent in rounds and pushes.
	RowsSent, BytesSent, Messages int64
}

// Stats returns the counters.
func (s *Syncer) Stats() Stats {
	return Stats{RowsSent: s.rowsSent.Load(), BytesSent: s.bytesSent.Load(), Messages: s.messages.Load()}
}

type noHooks struct{}

func (noHooks) Applied(syncnode.GroupID, []syncgroup.Row, peer.ID) {}

func (noHooks) Signposts(peer.ID, syncnode.GroupID, []syncnode.BlobRef) []SignpostEntry {
	return nil
}

func (noHooks) Learn(peer.ID, syncnode.GroupID, []SignpostEntry) {}

func (noHooks) Synced(syncnode.GroupID, peer.ID) {}

func (noHooks) Pushed(syncnode.GroupID, peer.ID) {}

func (noHooks) Left(syncnode.GroupID) {}

// Add starts syncing a group this node created or joined, and stores it.
func (s *Syncer) Add(g *syncgroup.Group) error {
	_, done, err := s.enter(context.Background())
	if err != nil {
		return err
	}
	defer done()
	prio := syncnode.Priority{Distance: InitialDistance}
	if s.cfg.Store != nil {
		if err := s.cfg.Store.SaveAll(g, prio); err != nil {
			return err
		}
		if err := s.cfg.Store.Sync(); err != nil {
			return err
		}
	}
	s.Restore(g, prio)
	return nil
}

// Restore starts syncing a group read back from the store, with this
// node's last priority in it. The replica signs its writes with the host's
// key.
func (s *Syncer) Restore(g *syncgroup.Group, prio syncnode.Priority) {
	if key := s.h.Peerstore().PrivKey(s.h.ID()); key != nil {
		if err := g.SetKey(key); err != nil {
			s.log.Error("group replica without a signing key", "group", g.ID(), "err", err)
		}
	}
	s.learnAddrs(g) // before others can reach g, whose reads are not safe alone
	s.mu.Lock()
	s.groups[g.ID()] = &replica{g: g, prio: prio, peers: map[peer.ID]syncnode.Priority{}}
	s.mu.Unlock()
	if !g.LeftHere() { // a leave cut short is finished by Run
		s.catchUp(g.ID())
	}
}

// save persists rows of r's group. r.mu is held.
func (s *Syncer) save(r *replica, rows []syncgroup.Row) error {
	if s.cfg.Store == nil {
		return nil
	}
	return s.cfg.Store.Save(r.g, rows, s.priorityLocked(r))
}

// flush returns once every row saved so far is on stable storage: called
// without a group's lock held, before rows are acknowledged or sent, so
// that concurrent writers share one sync and no peer ever holds a row this
// node could lose in a power cut.
func (s *Syncer) flush() error {
	if s.cfg.Store == nil {
		return nil
	}
	return s.cfg.Store.Sync()
}

// Eject removes member p from group id (this node must be an admin) and
// pushes the change.
func (s *Syncer) Eject(id syncnode.GroupID, p peer.ID) error {
	row, err := s.write(id, func(g *syncgroup.Group) (syncgroup.Row, error) { return g.Eject(p, time.Now()) })
	if err != nil {
		return err
	}
	// The rows spread no further to p, but this one does: p learns that
	// it is out, and stops pinning blobs for the group.
	s.enqueuePush(p, pushItem{g: id, rows: []syncgroup.Row{row}, toEjected: true})
	return nil
}

// Readmit lets p, banned from group id by an ejection, join again with
// the invitation whose nonce is given (this node is an admin); nothing
// happens if p is not banned.
func (s *Syncer) Readmit(id syncnode.GroupID, p peer.ID, nonce []byte) error {
	var banned bool
	err := s.With(id, func(g *syncgroup.Group) error {
		banned = g.Banned(p)
		return nil
	})
	if err != nil || !banned {
		return err
	}
	_, err = s.write(id, func(g *syncgroup.Group) (syncgroup.Row, error) {
		row, _, err := g.Readmit(p, nonce, time.Now())
		return row, err
	})
	return err
}

func (s *Syncer) replica(id syncnode.GroupID) (*replica, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.groups[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownGroup, id)
	}
	return r, nil
}

// With runs fn with the group locked.
func (s *Syncer) With(id syncnode.GroupID, fn func(*syncgroup.Group) error) error {
	r, err := s.replica(id)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return fn(r.g)
}

// Priority returns this node's priority in group id.
func (s *Syncer) Priority(id syncnode.GroupID) (syncnode.Priority, error) {
	r, err := s.replica(id)
	if err != nil {
		return syncnode.Priority{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return s.priorityLocked(r), nil
}

// PeerPriority returns the priority member p last reported in group id,
// with its device type from the current membership; false if p is not a
// member.
func (s *Syncer) PeerPriority(id syncnode.GroupID, p peer.ID) (syncnode.Priority, bool) {
	r, err := s.replica(id)
	if err != nil {
		return syncnode.Priority{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.g.Member(p)
	if !ok {
		return syncnode.Priority{}, false
	}
	pr, ok := r.peers[p]
	if !ok {
		// A member not synced with yet: its device type, no distance known.
		pr = syncnode.Priority{Distance: InitialDistance}
	}
	pr.DevType = m.DevType
	return pr, true
}

// Groups returns the IDs of the groups being synced.
func (s *Syncer) Groups() []syncnode.GroupID {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]syncnode.GroupID, 0, len(s.groups))
	for id := range s.groups {
		out = append(out, id)
	}
	return out
}

// members returns the group's members other than this node.
func (s *Syncer) members(id syncnode.GroupID) []peer.ID {
	var out []peer.ID
	s.With(id, func(g *syncgroup.Group) error {
		for _, m := range g.Members() {
			if m.Peer != s.h.ID() {
				out = append(out, m.Peer)
			}
		}
		return nil
	})
	return out
}
