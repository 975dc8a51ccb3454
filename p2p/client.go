package p2p

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/baotree"
	"github.com/syncnode/syncnode/signpost"
)

// Errors of a fetch.
var (
	// ErrConfig reports a client or service config that cannot work.
	ErrConfig = errors.New("p2p: invalid config")
	// ErrNoHolder reports a fetch that no holder could serve.
	ErrNoHolder = errors.New("p2p: no holder could serve the blob")
	// ErrLiar reports a holder that sent bytes or a tree that do not match
	// the blob ref; it is dropped from the fetch.
	ErrLiar = errors.New("p2p: holder sent data that does not match the blob ref")
	// ErrStalled reports a holder that sent less than MinProgress bytes
	// within an IOTimeout: a trickle (slow-loris) is dropped like silence.
	ErrStalled = errors.New("p2p: holder stalled")
)

// ClientConfig configures blob fetches. A zero field takes its default
// (DefaultClientConfig lists them); Validate rejects the rest of what
// cannot work.
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
}

// DefaultClientConfig returns the defaults.
func DefaultClientConfig() ClientConfig {
	return ClientConfig{RangeSize: 32 << 20, ReadSize: 1 << 20, IOTimeout: 20 * time.Second,
		MinProgress: 256 << 10, Retries: 3, RetryDelay: 250 * time.Millisecond, BusyWait: time.Minute, SyncEvery: 64 << 20,
		MaxBlobSize: 256 << 30}
}

// withDefaults returns c with every zero field set to its default.
func (c ClientConfig) withDefaults() ClientConfig {
	d := DefaultClientConfig()
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
	return c
}

// Validate reports a field that cannot work: a negative size or
// duration, or Retries below -1.
func (c ClientConfig) Validate() error {
	switch {
	case c.RangeSize < 0, c.ReadSize < 0, c.MinProgress < 0, c.SyncEvery < 0, c.MaxBlobSize < 0:
		return fmt.Errorf("%w: client sizes must not be negative: %+v", ErrConfig, c)
	case c.IOTimeout < 0, c.RetryDelay < 0, c.BusyWait < 0:
		return fmt.Errorf("%w: client durations must not be negative: %+v", ErrConfig, c)
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
}

// NewClient returns a client that fetches into store; zero fields of cfg
// take their defaults.
func NewClient(h host.Host, store blobstore.Store, cfg ClientConfig, log *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Client{h: h, store: store, cfg: cfg.withDefaults(), log: log}, nil
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
	st, err := c.h.NewStream(ctx, p, ProtoHaveBlob)
	if err != nil {
		return HaveResult{}, fmt.Errorf("p2p: have %s from %s: %w", ref, p, err)
	}
	defer st.Close()
	defer ctxStream(ctx, st)()
	if err := WriteMsg(st, haveRequest{Ref: ref.Bytes()}, c.cfg.IOTimeout); err != nil {
		st.Reset()
		return HaveResult{}, err
	}
	var resp haveResponse
	if err := ReadMsg(bufio.NewReader(st), st, &resp, MaxFrame, c.cfg.IOTimeout); err != nil {
		st.Reset()
		return HaveResult{}, err
	}
	switch resp.Code {
	case codeOK:
		return HaveResult{Have: resp.Have, Size: resp.Size}, nil
	case codeNotFound:
		var out HaveResult
		if resp.Signpost != nil {
			sp, err := resp.Signpost.Signpost()
			if err != nil {
				return HaveResult{}, fmt.Errorf("%w: signpost from %s: %v", ErrBadMessage, p, err)
			}
			out.Signpost = sp
		}
		return out, nil
	}
	return HaveResult{}, &RemoteError{Peer: p.String(), Code: resp.Code, Msg: resp.Msg}
}

// Progress is a fetch's state: bytes held verified, of the total.
type Progress struct {
	Received, Total int64
}

// FetchResult describes a finished fetch.
type FetchResult struct {
	blobstore.Info
	// FromNetwork is the bytes received in this fetch (less than Size
	// when it resumed earlier progress).
	FromNetwork int64
	// BytesBy is the bytes each holder contributed.
	BytesBy map[peer.ID]int64
	// Rejected are holders dropped for sending data that did not verify.
	Rejected []peer.ID
	// Faulty are holders whose transfers failed otherwise: they stalled,
	// truncated, reset or sent malformed answers.
	Faulty []peer.ID
}

// Fetch fetches ref from holders, splitting it into ranges that the holders
// take in turn (a faster holder takes more), verifying every range against
// the blob's tree before it is written, and resuming whatever a previous
// fetch left. A holder that sends a byte that does not verify is dropped and
// reported; a holder whose stream drops is retried. progress, if not nil,
// is called (from one goroutine at a time) as bytes arrive.
func (c *Client) Fetch(ctx context.Context, ref syncnode.BlobRef, holders []peer.ID, progress func(Progress)) (FetchResult, error) {
	if info, err := c.store.Stat(ref); err == nil {
		return FetchResult{Info: info}, nil
	}
	f := &fetch{c: c, ref: ref, bytesBy: map[peer.ID]int64{}, progress: progress}
	holders, err := f.tree(ctx, holders)
	if err != nil { // no partial was opened
		return FetchResult{Rejected: f.rejected, Faulty: f.faulty}, err
	}
	part := f.part
	f.received = f.total
	step := c.cfg.RangeSize
	if len(holders) == 1 {
		step = f.total + 1
	}
	for _, m := range part.Missing() {
		f.received -= m.Len
		for off := m.Off; off < m.Off+m.Len; off += step {
			f.todo = append(f.todo, blobstore.Range{Off: off, Len: min(step, m.Off+m.Len-off)})
		}
	}
	f.cond = sync.NewCond(&f.mu)
	if f.total == 0 { // the empty blob: nothing to ask for, only the root to check
		if err := part.WriteAt(nil, 0); err != nil {
			return FetchResult{}, err
		}
	}
	f.report()
	f.syncReq = make(chan struct{}, 1)
	synced := make(chan struct{})
	go f.syncer(synced)
	var wg sync.WaitGroup
	for _, h := range holders {
		wg.Add(1)
		go func() { defer wg.Done(); f.work(ctx, h) }()
	}
	wg.Wait()
	close(f.syncReq)
	<-synced
	res := FetchResult{FromNetwork: f.fromNet, BytesBy: f.bytesBy, Rejected: f.rejected, Faulty: f.faulty}
	if len(part.Missing()) > 0 {
		serr := part.Sync()
		part.Close()
		err := fmt.Errorf("%w: %s: %d of %d bytes held (%v)", ErrNoHolder, ref, f.received, f.total, errors.Join(f.errs...))
		if serr != nil {
			err = errors.Join(err, serr)
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return res, err
	}
	info, err := part.Commit()
	res.Info = info
	return res, err
}

// fetch is the shared state of one Fetch.
type fetch struct {
	c        *Client
	ref      syncnode.BlobRef
	part     blobstore.Partial
	progress func(Progress)

	mu       sync.Mutex
	cond     *sync.Cond
	todo     []blobstore.Range
	inflight int
	total    int64
	received int64
	fromNet  int64
	unsynced int64
	syncReq  chan struct{}
	bytesBy  map[peer.ID]int64
	rejected []peer.ID
	faulty   []peer.ID
	errs     []error
}

func (f *fetch) fail(p peer.ID, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Errorf("%s: %w", p, err))
	var re *RemoteError
	switch {
	case errors.Is(err, ErrLiar):
		f.rejected = append(f.rejected, p)
		f.c.log.Warn("holder sent data that does not verify; dropped", "peer", p, "blob", f.ref, "err", err)
	case errors.As(err, &re) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// A refusal, or this side giving up: not the holder's fault.
	case !slices.Contains(f.faulty, p):
		f.faulty = append(f.faulty, p)
	}
}

// wholeSize is the largest blob asked for whole, tree and bytes on one
// stream, from the first holder: one request instead of two.
const wholeSize = 4 << 20

// tree gets the blob's outboard tree from the first holder whose tree
// verifies, opens the partial blob with it (f.part, f.total), and returns
// the holders still worth asking. A small blob comes whole with its tree
// and is written as it arrives; what did not arrive is left to the ranges.
func (f *fetch) tree(ctx context.Context, holders []peer.ID) ([]peer.ID, error) {
	for i, p := range holders {
		if f.part != nil {
			// A holder failed mid-blob after its tree verified: the rest
			// comes in ranges from the holders left.
			return slices.Clone(holders[i:]), nil
		}
		req := getRequest{Ref: f.ref.Bytes(), Tree: true, Whole: wholeSize}
		_, err := f.c.get(ctx, p, req, func(tree []byte, data io.Reader, n int64) error {
			if err := baotree.VerifyOutboard(f.ref.Hash(), tree); err != nil {
				return fmt.Errorf("%w: %v", ErrLiar, err)
			}
			if f.part == nil {
				part, err := f.c.store.OpenPartial(f.ref, tree)
				if err != nil {
					return err
				}
				f.part, f.total = part, part.Size()
			}
			if n == 0 {
				return nil
			}
			if n != f.total {
				return fmt.Errorf("%w: asked for the whole blob, offered %d of %d bytes", ErrBadMessage, n, f.total)
			}
			_, err := f.consume(p, data, 0, n)
			return err
		})
		if err == nil {
			return slices.Clone(holders[i:]), nil
		}
		f.fail(p, err)
		if f.part != nil && !errors.Is(err, ErrLiar) && !errors.Is(err, ErrStalled) {
			// Dropped mid-blob: p may still serve the rest in ranges.
			return slices.Clone(holders[i:]), nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	if f.part != nil {
		return nil, nil // every holder lied or stalled: the ranges fail with their errors
	}
	return nil, fmt.Errorf("%w: %s: no verified tree (%v)", ErrNoHolder, f.ref, errors.Join(f.errs...))
}

// next takes a range to fetch, waiting while other holders' ranges are in
// flight (they may come back); false when nothing is left.
func (f *fetch) next() (blobstore.Range, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.todo) == 0 && f.inflight > 0 {
		f.cond.Wait()
	}
	if len(f.todo) == 0 {
		return blobstore.Range{}, false
	}
	r := f.todo[0]
	f.todo = f.todo[1:]
	f.inflight++
	return r, true
}

// done returns what is left of a range (if anything) to the queue.
func (f *fetch) done(left blobstore.Range) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inflight--
	if left.Len > 0 {
		f.todo = append(f.todo, left)
	}
	f.cond.Broadcast()
}

func (f *fetch) report() {
	if f.progress != nil {
		f.progress(Progress{Received: f.received, Total: f.total})
	}
}

// got records n verified bytes from p and, every SyncEvery bytes, asks the
// syncer to make progress durable (off the data path).
func (f *fetch) got(p peer.ID, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.received += n
	f.fromNet += n
	f.bytesBy[p] += n
	f.unsynced += n
	f.report()
	if f.unsynced >= f.c.cfg.SyncEvery {
		f.unsynced = 0
		select {
		case f.syncReq <- struct{}{}:
		default: // a sync is already pending; it will cover these bytes
		}
	}
}

// syncer makes progress durable whenever asked, until syncReq closes.
func (f *fetch) syncer(done chan<- struct{}) {
	defer close(done)
	for range f.syncReq {
		if err := f.part.Sync(); err != nil {
			f.c.log.Warn("partial sync failed", "blob", f.ref, "err", err)
		}
	}
}

// work fetches ranges from p until none are left or p fails for good.
func (f *fetch) work(ctx context.Context, p peer.ID) {
	retries, delay := f.c.cfg.Retries, f.c.cfg.RetryDelay
	for {
		r, ok := f.next()
		if !ok {
			return
		}
		n, err := f.rangeFrom(ctx, p, r)
		f.done(blobstore.Range{Off: r.Off + n, Len: r.Len - n})
		if err == nil {
			continue
		}
		f.fail(p, err)
		if errors.Is(err, ErrLiar) || errors.Is(err, ErrStalled) || ctx.Err() != nil || retries == 0 {
			f.wake()
			return
		}
		var re *RemoteError
		if errors.As(err, &re) && re.Code != codeBusy {
			f.wake()
			return
		}
		retries--
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		delay *= 2
	}
}

func (f *fetch) wake() {
	f.mu.Lock()
	f.cond.Broadcast()
	f.mu.Unlock()
}

// pipelineDepth is how many read buffers one range keeps in flight: the
// stream is read while earlier buffers are verified and written.
const pipelineDepth = 4

type chunk struct {
	b   []byte
	err error
}

// readAhead reads n bytes from data into buffers of size bytes on its own
// goroutine, handing them over on the returned channel; give each buffer
// back on free. Closing stop ends it early.
func readAhead(data io.Reader, n int64, size int, free chan []byte, stop chan struct{}) <-chan chunk {
	full := make(chan chunk, pipelineDepth)
	go func() {
		defer close(full)
		for off := int64(0); off < n; {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			k := int(min(int64(size), n-off))
			_, err := io.ReadFull(data, b[:k])
			select {
			case full <- chunk{b[:k], err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
			off += int64(k)
		}
	}()
	return full
}

// rangeFrom fetches r from p, verifying and writing as it reads. It returns
// how many bytes from r.Off were written.
func (f *fetch) rangeFrom(ctx context.Context, p peer.ID, r blobstore.Range) (int64, error) {
	var written int64
	_, err := f.c.get(ctx, p, getRequest{Ref: f.ref.Bytes(), Off: r.Off, Len: r.Len}, func(_ []byte, data io.Reader, n int64) error {
		if n != r.Len {
			return fmt.Errorf("%w: asked for %d bytes, offered %d", ErrBadMessage, r.Len, n)
		}
		var err error
		written, err = f.consume(p, data, r.Off, n)
		return err
	})
	return written, err
}

// consume reads the n bytes of the blob at off that p is sending,
// verifying and writing them as they arrive (reading runs ahead on its own
// goroutine), and returns how many it wrote.
func (f *fetch) consume(p peer.ID, data io.Reader, off, n int64) (int64, error) {
	// Buffers no larger, and no more, than the range needs: a small blob
	// costs a small allocation.
	size := int(min(int64(f.c.cfg.ReadSize), max(n, 1)))
	bufs := max(int(min(pipelineDepth, (n+int64(size)-1)/int64(size))), 1)
	free := make(chan []byte, bufs)
	for range bufs {
		free <- make([]byte, size)
	}
	stop := make(chan struct{})
	defer close(stop)
	var written int64
	for c := range readAhead(data, n, size, free, stop) {
		if c.err != nil {
			return written, c.err
		}
		if err := f.part.WriteAt(c.b, off+written); err != nil {
			if errors.Is(err, syncnode.ErrHashMismatch) {
				return written, fmt.Errorf("%w: %v", ErrLiar, err)
			}
			return written, err
		}
		written += int64(len(c.b))
		free <- c.b[:cap(c.b)]
		f.got(p, int64(len(c.b)))
	}
	if written < n {
		return written, io.ErrUnexpectedEOF
	}
	return written, nil
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

// getOnce sends one GetBlob request.
func (c *Client) getOnce(ctx context.Context, p peer.ID, req getRequest, body func(tree []byte, data io.Reader, n int64) error) (getResponse, error) {
	st, err := c.h.NewStream(ctx, p, ProtoGetBlob)
	if err != nil {
		return getResponse{}, fmt.Errorf("p2p: open stream: %w", err)
	}
	defer ctxStream(ctx, st)()
	if err := WriteMsg(st, req, c.cfg.IOTimeout); err != nil {
		st.Reset()
		return getResponse{}, err
	}
	st.CloseWrite()
	br := bufio.NewReaderSize(st, 64<<10)
	var resp getResponse
	if err := ReadMsg(br, st, &resp, maxRequest, c.cfg.IOTimeout); err != nil {
		st.Reset()
		return resp, err
	}
	if resp.Code != codeOK {
		st.Close()
		return resp, &RemoteError{Peer: p.String(), Code: resp.Code, Msg: resp.Msg}
	}
	maxSize := c.cfg.MaxBlobSize
	if maxSize <= 0 {
		maxSize = DefaultClientConfig().MaxBlobSize
	}
	if resp.TreeLen < 0 || resp.TreeLen > baotree.OutboardSize(resp.Size) || resp.Size < 0 || resp.Size > maxSize {
		st.Reset()
		return resp, fmt.Errorf("%w: tree of %d bytes for a blob of %d (at most %d)", ErrBadMessage, resp.TreeLen, resp.Size, maxSize)
	}
	dr := &deadlineReader{r: br, st: st, timeout: c.cfg.IOTimeout, need: max(c.cfg.MinProgress, 1)}
	// The tree is held as it arrives, not allocated at its announced size.
	var tb bytes.Buffer
	tb.Grow(int(min(resp.TreeLen, 64<<10)))
	if k, err := tb.ReadFrom(io.LimitReader(dr, resp.TreeLen)); err != nil || k != resp.TreeLen {
		st.Reset()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return resp, fmt.Errorf("p2p: read tree: %w", err)
	}
	tree := tb.Bytes()
	if err := body(tree, dr, resp.Len); err != nil {
		st.Reset()
		return resp, err
	}
	st.Close()
	return resp, nil
}
