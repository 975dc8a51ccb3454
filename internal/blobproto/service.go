package blobproto

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/signpost"
)

// ServiceConfig bounds the blob service. Its zero value is the documented
// defaults: NewService gives every zero field its default, and Validate
// rejects what cannot work.
type ServiceConfig struct {
	// MaxUploads is how many GetBlob streams send bytes at once (default 16).
	MaxUploads int
	// MaxQueued is how many more may wait for a slot (default 512; -1:
	// none waits); beyond that a request is answered "busy" at once.
	MaxQueued int
	// QueueWait is the longest a request waits for a slot (default 30 s).
	QueueWait time.Duration
	// IOTimeout bounds each read of a request and each write of a chunk
	// (default 20 s): a peer that stops reading loses its slot then.
	IOTimeout time.Duration
	// ChunkSize is the size of each write of blob bytes (default 1 MiB).
	ChunkSize int
	// MaxUploadsPerPeer is how many of the slots one peer may hold at once
	// (default MaxUploads/2), and MaxQueuedPerPeer how many of its requests
	// may wait (default MaxQueued/4): one member cannot take every slot
	// or queue place, and a freed slot goes to the waiting peer running
	// the fewest uploads.
	MaxUploadsPerPeer, MaxQueuedPerPeer int
	// Signposts, if not nil, tells a peer asking for a blob not held here
	// where it may be; nil tells nothing.
	Signposts SignpostFunc
	// Access, if not nil, says whether a peer may fetch a blob; nil
	// allows everyone.
	Access AccessFunc
}

// withDefaults returns c with every zero field set to its default.
func (c ServiceConfig) withDefaults() ServiceConfig {
	d := serviceDefaults
	setDefault(&c.MaxUploads, d.MaxUploads)
	setDefault(&c.MaxQueued, d.MaxQueued)
	setDefault(&c.QueueWait, d.QueueWait)
	setDefault(&c.IOTimeout, d.IOTimeout)
	setDefault(&c.ChunkSize, d.ChunkSize)
	if c.MaxQueued < 0 {
		c.MaxQueued = 0
	}
	setDefault(&c.MaxUploadsPerPeer, max(c.MaxUploads/2, 1))
	setDefault(&c.MaxQueuedPerPeer, max(c.MaxQueued/4, min(c.MaxQueued, 1)))
	return c
}

// Validate reports a field that cannot work: a negative size or duration,
// or MaxQueued below -1.
func (c ServiceConfig) Validate() error {
	switch {
	case c.MaxUploads < 0, c.ChunkSize < 0, c.MaxUploadsPerPeer < 0, c.MaxQueuedPerPeer < 0:
		return fmt.Errorf("%w: service sizes must not be negative: %d uploads (%d per peer), %d queued per peer, chunks of %d", ErrConfig, c.MaxUploads, c.MaxUploadsPerPeer, c.MaxQueuedPerPeer, c.ChunkSize)
	case c.MaxQueued < -1:
		return fmt.Errorf("%w: MaxQueued %d: -1 means none waits", ErrConfig, c.MaxQueued)
	case c.QueueWait < 0, c.IOTimeout < 0:
		return fmt.Errorf("%w: service durations must not be negative: QueueWait %v, IOTimeout %v", ErrConfig, c.QueueWait, c.IOTimeout)
	}
	return nil
}

// serviceDefaults are the defaults of a zero ServiceConfig; the per-peer
// bounds follow from MaxUploads and MaxQueued.
var serviceDefaults = ServiceConfig{MaxUploads: 16, MaxQueued: 512, QueueWait: 30 * time.Second, IOTimeout: 20 * time.Second, ChunkSize: 1 << 20}

// SignpostFunc returns what requester may learn of where ref is (already
// filtered for it), or false if nothing.
type SignpostFunc func(requester peer.ID, ref syncnode.BlobRef) (signpost.Signpost, bool)

// AccessFunc says whether requester may fetch ref.
type AccessFunc func(requester peer.ID, ref syncnode.BlobRef) error

// Service answers HaveBlob and GetBlob for the blobs in a store. Uploads
// are bounded: at most MaxUploads send at once, each from a pooled buffer,
// the rest wait in a bounded queue; every read and write has a deadline, so
// a stalled peer costs one slot for at most IOTimeout and blocks no one else.
type Service struct {
	h         host.Host
	store     blobstore.Store
	cfg       ServiceConfig
	log       *slog.Logger
	signposts SignpostFunc
	access    AccessFunc

	slots    *fairSlots
	bytesOut atomic.Int64
	uploads  atomic.Int64
	haves    atomic.Int64
	bufs     sync.Pool
}

// NewService registers the have and get handlers on h, serving the blobs
// in store; zero fields of cfg take their defaults, and a cfg that
// Validate refuses is an error.
func NewService(h host.Host, store blobstore.Store, cfg ServiceConfig, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Service{h: h, store: store, cfg: cfg, log: log, signposts: cfg.Signposts, access: cfg.Access,
		slots: newFairSlots(cfg.MaxUploads, cfg.MaxUploadsPerPeer, cfg.MaxQueued, cfg.MaxQueuedPerPeer)}
	s.bufs.New = func() any { b := make([]byte, cfg.ChunkSize); return &b }
	h.SetStreamHandler(p2p.ProtoHaveBlob, s.handleHave)
	h.SetStreamHandler(p2p.ProtoGetBlob, s.handleGet)
	return s, nil
}

// Close unregisters the handlers.
func (s *Service) Close() {
	s.h.RemoveStreamHandler(p2p.ProtoHaveBlob)
	s.h.RemoveStreamHandler(p2p.ProtoGetBlob)
}

// ServiceStats are the service's counters.
type ServiceStats struct {
	Uploads, Queued, BytesOut int64
	// Haves counts the HaveBlob questions answered.
	Haves int64
}

// Stats returns the current counters.
func (s *Service) Stats() ServiceStats {
	_, queued := s.slots.counts()
	return ServiceStats{Uploads: s.uploads.Load(), Queued: int64(queued), BytesOut: s.bytesOut.Load(), Haves: s.haves.Load()}
}

func (s *Service) handleHave(st network.Stream) {
	defer st.Close()
	var req haveRequest
	if err := p2p.ReadMsg(bufio.NewReader(st), st, &req, maxRequest, s.cfg.IOTimeout); err != nil {
		s.log.Debug("have: bad request", "peer", st.Conn().RemotePeer(), "err", err)
		st.Reset()
		return
	}
	s.haves.Add(1)
	resp := s.have(st.Conn().RemotePeer(), req)
	if err := p2p.WriteMsg(st, resp, s.cfg.IOTimeout); err != nil {
		st.Reset()
	}
}

// msgNotHeld is the one refusal for a blob this node does not hold, does
// not know, or may not serve to the asker: they are indistinguishable.
const msgNotHeld = "blob not held"

func (s *Service) have(from peer.ID, req haveRequest) haveResponse {
	ref, err := syncnode.RefFromBytes(req.Ref)
	if err != nil {
		return haveResponse{Code: codeBadRequest, Msg: err.Error()}
	}
	if s.access != nil {
		if err := s.access(from, ref); err != nil {
			// The same answer as for a blob this node never heard of: a
			// refusal must not tell a peer that the ref exists here.
			s.log.Info("have: refused", "peer", from, "blob", ref, "err", err)
			return haveResponse{Code: codeNotFound, Msg: msgNotHeld}
		}
	}
	if info, err := s.store.Stat(ref); err == nil {
		return haveResponse{Have: true, Size: info.Size}
	}
	resp := haveResponse{Code: codeNotFound, Msg: msgNotHeld}
	if s.signposts != nil {
		if sp, ok := s.signposts(from, ref); ok {
			w := sp.ToWire()
			resp.Signpost = &w
		}
	}
	return resp
}

func (s *Service) handleGet(st network.Stream) {
	from := st.Conn().RemotePeer()
	var req getRequest
	if err := p2p.ReadMsg(bufio.NewReader(st), st, &req, maxRequest, s.cfg.IOTimeout); err != nil {
		s.log.Debug("get: bad request", "peer", from, "err", err)
		st.Reset()
		return
	}
	n, err := s.serve(st, from, req)
	if err != nil {
		s.log.Debug("get: upload ended early", "peer", from, "sent", n, "err", err)
		st.Reset()
		return
	}
	st.Close()
}

func (s *Service) refuse(st network.Stream, code uint8, msg string) error {
	return p2p.WriteMsg(st, getResponse{Code: code, Msg: msg}, s.cfg.IOTimeout)
}

// serve answers one GetBlob request, returning the blob bytes sent.
func (s *Service) serve(st network.Stream, from peer.ID, req getRequest) (int64, error) {
	ref, err := syncnode.RefFromBytes(req.Ref)
	if err != nil {
		return 0, s.refuse(st, codeBadRequest, err.Error())
	}
	if s.access != nil {
		if err := s.access(from, ref); err != nil {
			s.log.Info("get: refused", "peer", from, "blob", ref, "err", err)
			return 0, s.refuse(st, codeNotFound, msgNotHeld)
		}
	}
	r, err := s.store.Open(ref)
	if errors.Is(err, syncnode.ErrNotFound) || errors.Is(err, blobstore.ErrDamaged) {
		// A damaged copy is not held: its bytes are never served.
		return 0, s.refuse(st, codeNotFound, msgNotHeld)
	}
	if err != nil {
		s.log.Error("get: blob unreadable", "blob", ref, "err", err)
		return 0, s.refuse(st, codeNotFound, msgNotHeld)
	}
	defer r.Close()
	size := r.Size()
	if req.Off < 0 || req.Len < 0 || req.Off > size || req.Len > size-req.Off {
		return 0, s.refuse(st, codeBadRequest, "range outside the blob")
	}
	var tree []byte
	if req.Tree {
		if tree, err = s.store.Outboard(ref); err != nil {
			return 0, s.refuse(st, codeNotFound, msgNotHeld)
		}
	}

	// Take a free upload slot, else wait for one in a bounded queue; both
	// are shared fairly among peers. A small blob asked for whole comes
	// whole only if a slot is free at once: otherwise the tree alone
	// answers, soon, and the bytes follow in a range request.
	if req.Tree && req.Whole > 0 && size <= req.Whole && s.slots.tryAcquire(from) {
		req.Off, req.Len = 0, size
	} else if err := s.slots.acquire(from, s.cfg.QueueWait); err != nil {
		return 0, s.refuse(st, codeBusy, "no upload slot free for this peer")
	}
	defer s.slots.release(from)
	s.uploads.Add(1)
	defer s.uploads.Add(-1)

	if err := p2p.WriteMsg(st, getResponse{Size: size, TreeLen: int64(len(tree)), Len: req.Len}, s.cfg.IOTimeout); err != nil {
		return 0, err
	}
	if len(tree) > 0 {
		if err := s.write(st, tree); err != nil {
			return 0, err
		}
	}
	return s.send(st, r, req.Off, req.Len)
}

// send writes n bytes of r from off to st. Reading (which verifies every
// byte against the tree) runs one chunk ahead of the network writes, so
// verification overlaps sending.
func (s *Service) send(st network.Stream, r io.ReaderAt, off, n int64) (int64, error) {
	type chunk struct {
		b   *[]byte
		n   int
		err error
	}
	ahead := make(chan chunk, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		defer close(ahead)
		for at := off; at < off+n; {
			bp := s.bufs.Get().(*[]byte)
			k := int(min(int64(len(*bp)), off+n-at))
			_, err := r.ReadAt((*bp)[:k], at)
			if err == io.EOF {
				err = nil
			}
			select {
			case ahead <- chunk{bp, k, err}:
			case <-stop:
				s.bufs.Put(bp)
				return
			}
			if err != nil {
				return
			}
			at += int64(k)
		}
	}()
	var sent int64
	for c := range ahead {
		if c.err != nil {
			s.bufs.Put(c.b)
			return sent, c.err
		}
		err := s.write(st, (*c.b)[:c.n])
		s.bufs.Put(c.b)
		if err != nil {
			return sent, err
		}
		sent += int64(c.n)
		s.bytesOut.Add(int64(c.n))
	}
	return sent, nil
}

func (s *Service) write(st network.Stream, b []byte) error {
	st.SetWriteDeadline(time.Now().Add(s.cfg.IOTimeout))
	_, err := st.Write(b)
	return err
}

// ctxStream resets st when ctx ends, so a blocked read or write returns.
func ctxStream(ctx context.Context, st network.Stream) (stop func() bool) {
	return context.AfterFunc(ctx, func() { st.Reset() })
}
