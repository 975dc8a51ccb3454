// Package shares moves ownership shares between devices over libp2p: a
// device that holds a blob verified asks a holder for its shares; the
// holder decides by the priorities the syncgroup knows (never by what the
// asker claims), escrows, and settles once the asker has accepted. The
// three steps (challenge, offer, settle) go for up to MaxBatch blobs from
// one holder in one request each, every item checked as a single request.
package shares

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"lukechampine.com/blake3"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
)

// Errors of share transfers.
var (
	// ErrRefused reports a holder that refused to offer shares.
	ErrRefused = errors.New("shares: refused")
)

// Priorities answers who a peer is in a syncgroup. The syncer implements it.
type Priorities interface {
	// Priority returns this node's priority in group g.
	Priority(g syncnode.GroupID) (syncnode.Priority, error)
	// PeerPriority returns member p's priority in g, its device type taken
	// from the membership; false if p is not a member.
	PeerPriority(g syncnode.GroupID, p peer.ID) (syncnode.Priority, bool)
	// IsAdmin reports whether p is an admin of g.
	IsAdmin(g syncnode.GroupID, p peer.ID) bool
}

// Copies guards this node's copies of blobs. The node implements it.
type Copies interface {
	// Holds reports whether this node holds ref, whole and verified.
	Holds(ref syncnode.BlobRef) bool
	// WithCopy runs fn while no deletion of ref's copy can run, with held
	// saying whether this node holds it verified, and returns fn's error.
	// Accepting shares happens inside it, so shares are never accepted
	// for a copy that is being deleted (I3).
	WithCopy(ref syncnode.BlobRef, fn func(held bool) error) error
	// Open opens a held blob for reading, every byte verified: possession
	// is proved with a keyed hash of all of it.
	Open(ref syncnode.BlobRef) (Blob, error)
}

// Blob is an open copy of a blob.
type Blob interface {
	io.ReaderAt
	io.Closer
	// Size returns the blob's length in bytes.
	Size() int64
}

// SettledFunc is told of every transfer this node settled as the holder:
// accepted, its shares are now t.To's.
type SettledFunc func(t ownership.Transfer, accepted bool)

// AskedFunc is told that member from, handing off a blob (a leaf to a
// non-leaf, a device to a server), asks this node to take its shares of
// ref in group g, fetching the blob from it first if needed. It returns
// when the shares have moved or cannot; ctx ends after AskWait.
//
// leaving tells that from is leaving g and hands off everything it holds
// there, to any member, whatever the two device types.
type AskedFunc func(ctx context.Context, from peer.ID, ref syncnode.BlobRef, g syncnode.GroupID, leaving bool) (Result, error)

// Service answers share requests and makes them.
type Service struct {
	h          host.Host
	ledger     *ownership.Ledger
	prio       Priorities
	copies     Copies
	asked      AskedFunc
	settled    SettledFunc
	challenged func(from peer.ID, ref syncnode.BlobRef, g syncnode.GroupID)
	log        *slog.Logger
	// cfg has its defaults set.
	cfg Config

	ctx    context.Context
	cancel context.CancelFunc
	// escrowed is signalled when an offer puts shares in escrow.
	escrowed chan struct{}
	// secret keys the possession challenges this node sets.
	secret [32]byte

	// proving runs possession checks one at a time per member.
	proving peerLocks
	// proofBufs are the buffers proofs read copies through.
	proofBufs sync.Pool
	// handlers are the requests being answered; Close waits for them.
	handlers sync.WaitGroup

	// accepting is held (read) by every acceptance while it checks that
	// its group is not being left and records the shares; Leaving takes
	// it to wait for those under way.
	accepting sync.RWMutex

	mu sync.Mutex
	// frozen are the groups where an admin about to eject this node asked
	// what it keeps, until when this node accepts no shares there.
	frozen map[syncnode.GroupID]time.Time
	// leaving are the groups this node is leaving (see Leaving).
	leaving map[syncnode.GroupID]bool
	// settleSig is closed, and replaced, whenever a transfer this node
	// offered is settled here (see SettleEscrow).
	settleSig chan struct{}
	// closed: Close has run; no request is answered any more.
	closed bool
}

// New registers the shares protocol on h, keeping the shares this node
// holds in ledger; prio and copies answer for the syncgroups and the
// blobs. Zero fields of cfg take their defaults, and a cfg that Validate
// refuses is an error.
func New(h host.Host, ledger *ownership.Ledger, prio Priorities, copies Copies, cfg Config, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	settled := cfg.Settled
	if settled == nil {
		settled = func(ownership.Transfer, bool) {}
	}
	s := &Service{h: h, ledger: ledger, prio: prio, copies: copies, asked: cfg.Asked, settled: settled, challenged: cfg.Challenged, log: log,
		cfg: cfg, escrowed: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	rand.Read(s.secret[:])
	h.SetStreamHandler(p2p.ProtoShares, s.handle)
	return s, nil
}

// AskWait returns how long a hand-off may take, at both ends.
func (s *Service) AskWait() time.Duration { return s.cfg.AskWait }

// Escrowed is signalled (without blocking, so signals merge) whenever an
// offer puts shares in escrow here: if the acceptor's settle never comes,
// Recover must run.
func (s *Service) Escrowed() <-chan struct{} { return s.escrowed }

// Close unregisters the protocol, ends the hand-offs it is serving and
// waits for the requests being answered.
func (s *Service) Close() {
	s.h.RemoveStreamHandler(p2p.ProtoShares)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	// The ledger outlives the service only until its owner closes it:
	// no request may still be writing to it then.
	s.handlers.Wait()
}

// Leaving marks this node as leaving group g (or no longer): while it
// is, every share it holds in g is offered whole to any member that
// proves it holds the blob, whatever the priorities, and it accepts none
// there. Marking waits for the acceptances under way to end.
func (s *Service) Leaving(g syncnode.GroupID, on bool) {
	s.mu.Lock()
	if s.leaving == nil {
		s.leaving = map[syncnode.GroupID]bool{}
	}
	if on {
		s.leaving[g] = true
	} else {
		delete(s.leaving, g)
	}
	s.mu.Unlock()
	if on {
		// A take under way when the leave began must not land its shares
		// after the leave counted what it holds: wait for the acceptances
		// under way, which see the mark from now on.
		s.accepting.Lock()
		s.accepting.Unlock()
	}
}

// EjectFreeze is how long a node asked what it keeps by an admin about to
// eject it accepts no shares in that group: longer than an ejection's
// fetches and hand-offs take, short enough that a refused ejection does
// not stop it for long.
const EjectFreeze = 2 * time.Minute

// freeze stops acceptances in g for EjectFreeze, once those under way
// have landed.
func (s *Service) freeze(g syncnode.GroupID) {
	s.mu.Lock()
	if s.frozen == nil {
		s.frozen = map[syncnode.GroupID]time.Time{}
	}
	s.frozen[g] = time.Now().Add(EjectFreeze)
	s.mu.Unlock()
	s.accepting.Lock()
	s.accepting.Unlock()
}

func (s *Service) isFrozen(g syncnode.GroupID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.frozen[g]
	if ok && time.Now().After(until) {
		delete(s.frozen, g)
		return false
	}
	return ok
}

func (s *Service) isLeaving(g syncnode.GroupID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leaving[g]
}

// Recover settles every transfer left in escrow here (by a crash or a lost
// answer): it asks each acceptor whether it accepted, which also closes the
// transfer there for good, and settles accordingly. A transfer whose
// acceptor cannot be reached stays in escrow until it is EscrowWait old,
// then is abandoned: the shares return here, and the acceptor, once it
// answers again, is told to drop whatever it accepted. It returns how
// many transfers it ended.
func (s *Service) Recover(ctx context.Context) (int, error) {
	pending, err := s.ledger.AllPending()
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, t := range pending {
		resp, err := s.call(ctx, t.To, request{Op: opResolve, ID: t.ID, Ref: t.Ref}, s.cfg.IOTimeout)
		if err != nil {
			if s.outgrown(t) {
				if ok, aerr := s.ledger.Abandon(t.Ref, t.ID); aerr != nil {
					errs = append(errs, aerr)
				} else if ok {
					s.log.Warn("share transfer abandoned: its acceptor has not answered", "blob", t.Ref, "group", t.Group,
						"acceptor", t.To, "escrowed", time.Unix(0, t.At), "member", s.isMember(t.Group, t.To), "err", err)
					s.settled(t, false)
					n++
					continue
				}
			}
			errs = append(errs, err)
			continue
		}
		if _, err := s.ledger.Settle(t.Ref, t.ID, resp.Accepted); err != nil {
			errs = append(errs, err)
			continue
		}
		s.signalSettled()
		s.settled(t, resp.Accepted)
		n++
	}
	if err := s.tellVoided(ctx); err != nil {
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

// outgrown reports whether transfer t, whose acceptor did not answer, has
// waited long enough in escrow: EscrowWait, or no time at all once the
// acceptor is no longer a member of the group (it left or was ejected;
// shares it holds count for nothing) while this node still is. A node
// that is out itself cannot tell, and waits.
func (s *Service) outgrown(t ownership.Transfer) bool {
	if t.At > 0 && time.Since(time.Unix(0, t.At)) > s.cfg.EscrowWait {
		return true
	}
	return s.isMember(t.Group, s.h.ID()) && !s.isMember(t.Group, t.To)
}

func (s *Service) isMember(g syncnode.GroupID, p peer.ID) bool {
	_, ok := s.prio.PeerPriority(g, p)
	return ok
}

// tellVoided tells the acceptor of every transfer abandoned here to drop
// what it accepted of it.
func (s *Service) tellVoided(ctx context.Context) error {
	voided, err := s.ledger.AllVoided()
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range voided {
		if _, err := s.call(ctx, t.To, request{Op: opVoid, ID: t.ID, Ref: t.Ref}, s.cfg.IOTimeout); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.ledger.Told(t.Ref, t.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Unfinished reports how many transfers wait here for their acceptor: in
// escrow, or abandoned and not yet voided there.
func (s *Service) Unfinished() (int, error) { return s.ledger.Unfinished() }

// call sends req to p and waits up to wait for the answer.
func (s *Service) call(ctx context.Context, p peer.ID, req request, wait time.Duration) (response, error) {
	var resp response
	err := p2p.Exchange(ctx, s.h, p, p2p.ProtoShares, func(st network.Stream) error {
		defer st.Close()
		stop := context.AfterFunc(ctx, func() { st.Reset() })
		defer stop()
		if err := p2p.WriteMsg(st, req, s.cfg.IOTimeout); err != nil {
			st.Reset()
			return err
		}
		if err := p2p.ReadMsg(bufio.NewReader(st), st, &resp, p2p.MaxFrame, wait); err != nil {
			st.Reset()
			return err
		}
		return nil
	})
	if err != nil {
		return response{}, fmt.Errorf("shares: %s: %w", p, err)
	}
	if resp.Err != "" {
		return resp, fmt.Errorf("%w by %s: %s", ErrRefused, p, resp.Err)
	}
	return resp, nil
}

// ErrNoProof reports a share request whose proof of possession failed.
var ErrNoProof = errors.New("shares: possession of the blob not proved")

// ProofSize is the length of a possession challenge's nonce and of the
// proof that answers it.
const ProofSize = 32

// challenge returns the nonce that keys the proof of possession of ref for
// transfer id: a keyed hash only this node can compute, so no requester
// can prepare for it. The proof is a hash of every byte of the blob under
// that key. No part of it can be fetched or relayed: a member proves it
// holds the whole blob by reading the whole blob, and no other member
// computes a proof under this node's nonce.
func (s *Service) challenge(id ownership.TransferID, ref syncnode.BlobRef) ([]byte, error) {
	if !s.copies.Holds(ref) {
		return nil, fmt.Errorf("shares: cannot check possession of %s here: %w", ref, syncnode.ErrNotFound)
	}
	m := hmac.New(sha256.New, s.secret[:])
	m.Write(id[:])
	h := ref.Hash()
	m.Write(h[:])
	return m.Sum(nil)[:ProofSize], nil
}

// proofBuf is how much of a copy a proof reads at once: enough that each
// read verifies many groups of the copy's tree together.
const proofBuf = 256 << 10

// prove returns the keyed hash of every byte of this node's copy of ref.
func (s *Service) prove(ref syncnode.BlobRef, nonce []byte) ([]byte, error) {
	if len(nonce) != ProofSize {
		return nil, fmt.Errorf("shares: a challenge nonce of %d bytes, want %d", len(nonce), ProofSize)
	}
	b, err := s.copies.Open(ref)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	h := blake3.New(ProofSize, nonce)
	buf, _ := s.proofBufs.Get().(*[]byte)
	if buf == nil {
		buf = new(make([]byte, proofBuf))
	}
	defer s.proofBufs.Put(buf)
	if _, err := io.CopyBuffer(h, io.NewSectionReader(b, 0, b.Size()), *buf); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// checkProof verifies proof, the requester's keyed hash of ref for
// transfer id, against this node's own copy. Checks run one at a time per
// member: a member that sends offers on many streams at once waits for
// its own, never for another's.
func (s *Service) checkProof(from peer.ID, id ownership.TransferID, ref syncnode.BlobRef, proof []byte) error {
	nonce, err := s.challenge(id, ref)
	if err != nil {
		return err
	}
	if len(proof) != ProofSize {
		return fmt.Errorf("%w: %s", ErrNoProof, ref)
	}
	unlock := s.proving.lock(from)
	defer unlock()
	want, err := s.prove(ref, nonce)
	if err != nil {
		return fmt.Errorf("shares: cannot check possession of %s here: %w", ref, err)
	}
	if !hmac.Equal(want, proof) {
		return fmt.Errorf("%w: %s", ErrNoProof, ref)
	}
	return nil
}

// holding returns how many shares of ref this node keeps in g, those in
// escrow included (at most the group's two), and whether it keeps none
// at all, held or in escrow: a challenge for them would cost both sides
// a proof for nothing. A ledger that cannot be read counts as keeping
// some.
func (s *Service) holding(ref syncnode.BlobRef, g syncnode.GroupID) (held int, none bool) {
	sh, err := s.ledger.Shares(ref)
	if err != nil {
		return 0, false
	}
	pending, err := s.ledger.Pending(ref)
	if err != nil {
		return 0, false
	}
	n, escrowed := sh[g], false
	for _, t := range pending {
		if t.Group == g {
			n, escrowed = n+t.N, true
		}
	}
	return min(max(n, 0), ownership.CreatorShares), sh[g] <= 0 && !escrowed
}
