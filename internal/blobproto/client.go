package blobproto

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/signpost"
)

// Errors of a fetch.
var (
	// ErrConfig reports a client or service config that cannot work.
	ErrConfig = errors.New("blobproto: invalid config")
	// ErrNoHolder reports a fetch that no holder could serve.
	ErrNoHolder = errors.New("blobproto: no holder could serve the blob")
	// ErrLiar reports a holder that sent bytes or a tree that do not match
	// the blob ref; it is dropped from the fetch.
	ErrLiar = errors.New("blobproto: holder sent data that does not match the blob ref")
	// ErrStalled reports a holder that sent less than MinProgress bytes
	// within an IOTimeout: a trickle (slow-loris) is dropped like silence.
	ErrStalled = errors.New("blobproto: holder stalled")
)

// ClientConfig configures blob fetches. Its zero value is the documented
// defaults: NewClient gives every zero field its default, and Validate
// rejects what cannot work.
type ClientConfig struct {
	// RangeSize is the bytes asked for in one GetBlob request when several
	// holders share a blob out (default 32 MiB): smaller ranges balance
	// better, larger ones spend less on stream setup and window growth.
	// With a single holder each missing span is one request.
	RangeSize int64
	// ReadSize is the bytes verified and written at a time (default 1 MiB).
	ReadSize int
	// IOTimeout bounds every read from a holder (default 20 s).
	IOTimeout time.Duration
	// MinProgress is the bytes a holder must deliver within each IOTimeout
	// while it sends a tree or a range (default 256 KiB); a slower one is
	// dropped with ErrStalled.
	MinProgress int64
	// Retries is how often a holder is asked again after a dropped stream
	// (default 3; -1: never), waiting RetryDelay, doubled each time
	// (default 250 ms).
	Retries    int
	RetryDelay time.Duration
	// BusyWait is how long a holder that answers "busy" (its upload queue
	// is full) is asked again, from RetryDelay doubling to 2 s with
	// jitter, before the request fails (default 60 s).
	BusyWait time.Duration
	// SyncEvery is how many bytes arrive between making progress durable
	// (default 64 MiB).
	SyncEvery int64
	// MaxBlobSize is the largest blob a holder may announce (default
	// 256 GiB, whose tree is 1 GiB); larger announcements are refused, and
	// a tree is held only as its bytes arrive.
	MaxBlobSize int64
	// Relayed is what a transfer from a holder reached only through a
	// circuit relay does (default RelayThrottle). Before it crosses a
	// relay it waits up to DirectWait (default 2 s) for hole punching to
	// open a direct connection.
	Relayed    p2p.RelayPolicy
	DirectWait time.Duration
	// Punch, if not nil, asks for a hole punch with a holder reached only
	// through relays, before the DirectWait for a direct connection: a
	// punch that failed when the devices met is tried again at once,
	// rather than when the pacing of renewed punches comes round. It may
	// close the relayed connections.
	Punch func(ctx context.Context, p peer.ID)
	// RelayRate is the bytes per second that all relayed transfers
	// together read under RelayThrottle (default 1 MiB/s).
	RelayRate int64
	// TreeMemory bounds the bytes of trees that transfers hold while
	// they arrive, together (default 64 MiB, the tree of a 16 GiB blob). A
	// larger tree waits until it can have all of it alone. Trees are
	// verified node by node as they arrive: a wrong one is dropped at its
	// first wrong node.
	TreeMemory int64
}

// clientDefaults are the defaults of a zero ClientConfig.
var clientDefaults = ClientConfig{RangeSize: 32 << 20, ReadSize: 1 << 20, IOTimeout: 20 * time.Second,
	MinProgress: 256 << 10, Retries: 3, RetryDelay: 250 * time.Millisecond, BusyWait: time.Minute, SyncEvery: 64 << 20,
	MaxBlobSize: 256 << 30, Relayed: p2p.RelayThrottle, DirectWait: 2 * time.Second, RelayRate: 1 << 20,
	TreeMemory: 64 << 20}

// withDefaults returns c with every zero field set to its default.
func (c ClientConfig) withDefaults() ClientConfig {
	d := clientDefaults
	setDefault(&c.RangeSize, d.RangeSize)
	setDefault(&c.ReadSize, d.ReadSize)
	setDefault(&c.IOTimeout, d.IOTimeout)
	setDefault(&c.MinProgress, d.MinProgress)
	setDefault(&c.Retries, d.Retries)
	if c.Retries < 0 {
		c.Retries = 0
	}
	setDefault(&c.RetryDelay, d.RetryDelay)
	setDefault(&c.BusyWait, d.BusyWait)
	setDefault(&c.SyncEvery, d.SyncEvery)
	setDefault(&c.MaxBlobSize, d.MaxBlobSize)
	setDefault(&c.Relayed, d.Relayed)
	setDefault(&c.DirectWait, d.DirectWait)
	setDefault(&c.RelayRate, d.RelayRate)
	setDefault(&c.TreeMemory, d.TreeMemory)
	return c
}

// Validate reports a field that cannot work: a negative size or
// duration, or Retries below -1.
func (c ClientConfig) Validate() error {
	switch {
	case c.RangeSize < 0, c.ReadSize < 0, c.MinProgress < 0, c.SyncEvery < 0, c.MaxBlobSize < 0, c.RelayRate < 0, c.TreeMemory < 0:
		return fmt.Errorf("%w: client sizes must not be negative: %+v", ErrConfig, c)
	case c.IOTimeout < 0, c.RetryDelay < 0, c.BusyWait < 0, c.DirectWait < 0:
		return fmt.Errorf("%w: client durations must not be negative: %+v", ErrConfig, c)
	case c.Relayed != "" && !validPolicy(c.Relayed):
		return fmt.Errorf("%w: relay policy %q: want throttle, allow or refuse", ErrConfig, c.Relayed)
	case c.Retries < -1:
		return fmt.Errorf("%w: Retries %d: -1 means never", ErrConfig, c.Retries)
	}
	return nil
}

// setDefault sets *v to def if it is zero.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Client fetches blobs from peers into a store, verifying every byte.
type Client struct {
	h     host.Host
	store blobstore.Store
	cfg   ClientConfig
	log   *slog.Logger
	// relayed paces every transfer that crosses a relay, together.
	relayed *rate.Limiter
	// trees bounds the tree bytes held by transfers under way.
	trees *semaphore.Weighted
}

// NewClient returns a client that fetches into store; zero fields of cfg
// take their defaults, and a cfg that Validate refuses is an error.
func NewClient(h host.Host, store blobstore.Store, cfg ClientConfig, log *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	// The burst is one read's worth: a throttled read waits for its bytes.
	lim := rate.NewLimiter(rate.Limit(cfg.RelayRate), int(min(cfg.RelayRate, 256<<10)))
	return &Client{h: h, store: store, cfg: cfg, log: log, relayed: lim, trees: semaphore.NewWeighted(cfg.TreeMemory)}, nil
}

// HaveResult is a peer's answer to HaveBlob.
type HaveResult struct {
	// Have is true if the peer holds the blob, final and whole.
	Have bool
	// Size is the blob's size when Have.
	Size int64
	// Signpost is what the peer knows of where the blob is, when not Have.
	Signpost signpost.Signpost
}

// Have asks p whether it holds ref.
func (c *Client) Have(ctx context.Context, p peer.ID, ref syncnode.BlobRef) (HaveResult, error) {
	var resp haveResponse
	err := p2p.Exchange(ctx, c.h, p, p2p.ProtoHaveBlob, func(st network.Stream) error {
		defer st.Close()
		defer ctxStream(ctx, st)()
		if err := p2p.WriteMsg(st, haveRequest{Ref: ref.Bytes()}, c.cfg.IOTimeout); err != nil {
			st.Reset()
			return err
		}
		if err := p2p.ReadMsg(bufio.NewReader(st), st, &resp, p2p.MaxFrame, c.cfg.IOTimeout); err != nil {
			st.Reset()
			return err
		}
		return nil
	})
	if err != nil {
		return HaveResult{}, fmt.Errorf("blobproto: have %s from %s: %w", ref, p, err)
	}
	switch resp.Code {
	case codeOK:
		return HaveResult{Have: resp.Have, Size: resp.Size}, nil
	case codeNotFound:
		var out HaveResult
		if resp.Signpost != nil {
			sp, err := resp.Signpost.Signpost()
			if err != nil {
				return HaveResult{}, fmt.Errorf("%w: signpost from %s: %v", p2p.ErrBadMessage, p, err)
			}
			out.Signpost = sp
		}
		return out, nil
	}
	return HaveResult{}, &RemoteError{Peer: p.String(), Code: resp.Code, Msg: resp.Msg}
}

// deadlineReader holds a holder to a minimum pace: each window of timeout
// must bring at least need bytes (or the rest of the answer), else the read
// fails with ErrStalled. A window starts when the previous one has brought
// its bytes, so the deadline moves once per need bytes, not on every read.
type deadlineReader struct {
	r       io.Reader
	st      network.Stream
	timeout time.Duration
	need    int64
	got     int64
	started bool
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if !d.started || d.got >= d.need {
		d.st.SetReadDeadline(time.Now().Add(d.timeout))
		d.started, d.got = true, 0
	}
	n, err := d.r.Read(p)
	d.got += int64(n)
	if isTimeout(err) {
		err = fmt.Errorf("%w: fewer than %d bytes in %v", ErrStalled, d.need, d.timeout)
	}
	return n, err
}

// isTimeout reports a passed deadline (os.ErrDeadlineExceeded and the
// stream muxers' own timeout errors all say Timeout).
func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// get sends one GetBlob request to p and hands the tree and a reader of the
// range's bytes to body. While p answers "busy" it is asked again, for up
// to BusyWait.
func (c *Client) get(ctx context.Context, p peer.ID, req getRequest, body func(tree []byte, data io.Reader, n int64) error) (getResponse, error) {
	deadline := time.Now().Add(c.cfg.BusyWait)
	delay := max(c.cfg.RetryDelay, 10*time.Millisecond)
	for {
		resp, err := c.getOnce(ctx, p, req, body)
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != codeBusy || time.Now().Add(delay).After(deadline) {
			return resp, err
		}
		wait := delay/2 + rand.N(delay/2+1)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return resp, err
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// getOnce sends one GetBlob request (through Exchange: a connection that
// turns out dead before the answer starts is replaced once).
func (c *Client) getOnce(ctx context.Context, p peer.ID, req getRequest, body func(tree []byte, data io.Reader, n int64) error) (resp getResponse, err error) {
	err = p2p.Exchange(ctx, c.h, p, p2p.ProtoGetBlob, func(st network.Stream) error {
		resp, err = c.getOn(ctx, st, p, req, body)
		return err
	})
	return resp, err
}

// getOn sends req on st, which it closes or resets.
func (c *Client) getOn(ctx context.Context, st network.Stream, p peer.ID, req getRequest, body func(tree []byte, data io.Reader, n int64) error) (getResponse, error) {
	var via peer.ID
	if relay, relayed := p2p.RelayOf(st.Conn()); relayed && c.cfg.Relayed != p2p.RelayAllow {
		first := st
		var err error
		if st, err = c.directStream(ctx, p, st, c.cfg.DirectWait); err != nil {
			return getResponse{}, fmt.Errorf("blobproto: open stream: %w", err)
		}
		if st != first {
			// The request goes on a direct stream: the relayed one is
			// no longer the one whose connection decides a retry.
			p2p.MarkAnswered(first)
		}
		if _, relayed = p2p.RelayOf(st.Conn()); relayed && c.cfg.Relayed == p2p.RelayRefuse {
			st.Reset()
			return getResponse{via: relay}, fmt.Errorf("%w (%s through %s)", ErrRelayRefused, p, relay)
		}
	}
	if relay, relayed := p2p.RelayOf(st.Conn()); relayed {
		via = relay
	}
	defer ctxStream(ctx, st)()
	if err := p2p.WriteMsg(st, req, c.cfg.IOTimeout); err != nil {
		st.Reset()
		return getResponse{}, err
	}
	st.CloseWrite()
	br := bufio.NewReaderSize(st, 64<<10)
	var resp getResponse
	err := p2p.ReadMsg(br, st, &resp, maxRequest, c.cfg.IOTimeout)
	resp.via = via
	if err != nil {
		st.Reset()
		return resp, err
	}
	if resp.Code != codeOK {
		st.Close()
		return resp, &RemoteError{Peer: p.String(), Code: resp.Code, Msg: resp.Msg}
	}
	maxSize := c.cfg.MaxBlobSize
	if resp.TreeLen < 0 || resp.TreeLen > baotree.OutboardSize(resp.Size) || resp.Size < 0 || resp.Size > maxSize {
		st.Reset()
		return resp, fmt.Errorf("%w: tree of %d bytes for a blob of %d (at most %d)", p2p.ErrBadMessage, resp.TreeLen, resp.Size, maxSize)
	}
	var src io.Reader = br
	if via != "" && c.cfg.Relayed == p2p.RelayThrottle {
		src = &throttled{ctx: ctx, r: br, lim: c.relayed}
	}
	dr := &deadlineReader{r: src, st: st, timeout: c.cfg.IOTimeout, need: max(c.cfg.MinProgress, 1)}
	tree, err := c.readTree(ctx, dr, req.Ref, resp.TreeLen)
	if err != nil {
		st.Reset()
		return resp, err
	}
	defer c.trees.Release(min(resp.TreeLen, c.cfg.TreeMemory))
	if err := body(tree, dr, resp.Len); err != nil {
		st.Reset()
		return resp, err
	}
	st.Close()
	return resp, nil
}

// readTree reads a tree of n bytes for the blob whose ref is refBytes,
// holding its share of TreeMemory, which the caller releases (min(n,
// TreeMemory)) once done with the tree unless readTree fails. The tree is
// held as it arrives, not allocated at its announced size, and verified
// node by node: a holder that sends a wrong tree is found out at its first
// wrong node (ErrLiar).
func (c *Client) readTree(ctx context.Context, r io.Reader, refBytes []byte, n int64) ([]byte, error) {
	ref, err := syncnode.RefFromBytes(refBytes)
	if err != nil {
		return nil, err
	}
	hold := min(n, c.cfg.TreeMemory)
	if err := c.trees.Acquire(ctx, hold); err != nil {
		return nil, fmt.Errorf("blobproto: wait for tree memory: %w", err)
	}
	var tb bytes.Buffer
	tb.Grow(int(min(n, 64<<10)))
	v := baotree.NewOutboardVerifier(ref.Hash())
	k, err := io.Copy(io.MultiWriter(v, &tb), io.LimitReader(r, n))
	if err == nil && k != n {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && n > 0 {
		err = v.Close()
	}
	if err != nil {
		c.trees.Release(hold)
		if errors.Is(err, baotree.ErrVerify) {
			return nil, fmt.Errorf("%w: %v", ErrLiar, err)
		}
		return nil, fmt.Errorf("blobproto: read tree: %w", err)
	}
	return tb.Bytes(), nil
}
