package blobproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/p2p"
)

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
	// Relayed names, for each holder reached only through a circuit
	// relay, that relay.
	Relayed map[peer.ID]peer.ID
}

// FetchOptions tune one fetch.
type FetchOptions struct {
	// Progress, if not nil, is called (from one goroutine at a time) as
	// bytes arrive.
	Progress func(Progress)
	// Commit, if not nil, is called once the blob is whole and verified,
	// to make it visible by calling commit, with whatever must come
	// before or around that (a durable mark, a lock). If it returns
	// without calling commit, the blob stays partial, to be resumed, and
	// the fetch ends with its error.
	Commit func(commit func() (blobstore.Info, error)) (blobstore.Info, error)
	// WholeOnly asks the first holder for the blob whole, tree and bytes
	// on one stream, and for nothing more: a blob larger than WholeSize
	// ends the fetch with ErrNotWhole, its tree kept, so that a fetch from
	// several holders can take over.
	WholeOnly bool
}

// WholeSize is the largest blob asked for whole, tree and bytes on one
// stream, from the first holder: one request instead of two.
const WholeSize = 4 << 20

// ErrNotWhole reports a WholeOnly fetch of a blob too large to come whole.
var ErrNotWhole = errors.New("blobproto: blob larger than one whole-blob answer")

// Fetch fetches ref from holders, splitting it into ranges that the holders
// take in turn (a faster holder takes more), verifying every range against
// the blob's tree before it is written, and resuming whatever a previous
// fetch left. A holder that sends a byte that does not verify is dropped and
// reported; a holder whose stream drops is retried. progress, if not nil,
// is called (from one goroutine at a time) as bytes arrive.
func (c *Client) Fetch(ctx context.Context, ref syncnode.BlobRef, holders []peer.ID, progress func(Progress)) (FetchResult, error) {
	return c.FetchWith(ctx, ref, holders, FetchOptions{Progress: progress})
}

// FetchWith is Fetch with options.
func (c *Client) FetchWith(ctx context.Context, ref syncnode.BlobRef, holders []peer.ID, opts FetchOptions) (FetchResult, error) {
	if info, ok := c.held(ctx, ref); ok {
		return FetchResult{Info: info}, nil
	}
	f := &fetch{c: c, ref: ref, bytesBy: map[peer.ID]int64{}, progress: opts.Progress}
	holders, err := f.tree(ctx, holders)
	if err != nil { // no partial was opened
		return FetchResult{Rejected: f.rejected, Faulty: f.faulty, Relayed: f.relayed}, err
	}
	if opts.WholeOnly {
		holders = nil
	}
	if err := f.plan(len(holders)); err != nil {
		return FetchResult{}, err
	}
	f.run(ctx, holders)
	res := FetchResult{FromNetwork: f.fromNet, BytesBy: f.bytesBy, Rejected: f.rejected, Faulty: f.faulty, Relayed: f.relayed}
	if len(f.part.Missing()) > 0 {
		return res, f.unfinished(ctx, opts.WholeOnly)
	}
	return f.commit(res, opts.Commit)
}

// held returns ref's info if the store has it already, committed or, for
// a store shared with others, adopted from there: nothing to fetch.
func (c *Client) held(ctx context.Context, ref syncnode.BlobRef) (blobstore.Info, bool) {
	if info, err := c.store.Stat(ref); err == nil {
		return info, true
	}
	if a, ok := c.store.(blobstore.Adopter); ok {
		if info, err := a.Adopt(ctx, ref); err == nil {
			return info, true // in storage shared with others already
		}
	}
	return blobstore.Info{}, false
}

// plan queues the ranges the partial blob still misses, counting what it
// holds as received: RangeSize ranges that the holders (how many there
// are) take in turn, or each missing stretch whole for a single holder.
// The empty blob has nothing to ask for: plan writes it at once, which
// checks its root.
func (f *fetch) plan(holders int) error {
	f.received = f.total
	step := f.c.cfg.RangeSize
	if holders == 1 {
		step = f.total + 1
	}
	for _, m := range f.part.Missing() {
		f.received -= m.Len
		for off := m.Off; off < m.Off+m.Len; off += step {
			f.todo = append(f.todo, blobstore.Range{Off: off, Len: min(step, m.Off+m.Len-off)})
		}
	}
	f.cond = sync.NewCond(&f.mu)
	if f.total == 0 { // the empty blob: nothing to ask for, only the root to check
		if err := f.part.WriteAt(nil, 0); err != nil {
			return err
		}
	}
	return nil
}

// run reports the progress held, then has every holder work the queued
// ranges at once, with the syncer making progress durable off the data
// path, and returns once the holders are done and the last sync asked for
// has ended.
func (f *fetch) run(ctx context.Context, holders []peer.ID) {
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
}

// unfinished syncs and closes a partial blob the holders left incomplete,
// so that a later fetch resumes it, and returns why the fetch ended:
// ErrNotWhole for a WholeOnly fetch that met no error, else ErrNoHolder
// with every holder's error (and the sync's), under ctx's error if the
// fetch was cancelled.
func (f *fetch) unfinished(ctx context.Context, wholeOnly bool) error {
	serr := f.part.Sync()
	f.part.Close()
	if wholeOnly && len(f.errs) == 0 {
		return fmt.Errorf("%w: %s is %d bytes", ErrNotWhole, f.ref, f.total)
	}
	err := fmt.Errorf("%w: %s: %d of %d bytes held (%w)", ErrNoHolder, f.ref, f.received, f.total, errors.Join(f.errs...))
	if serr != nil {
		err = errors.Join(err, serr)
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return err
}

// commit makes the whole, verified blob visible, through wrap (see
// FetchOptions.Commit) if not nil, and returns res with its info. If wrap
// returns without committing, the partial is synced and closed to be
// resumed, and the fetch fails with wrap's error (or one saying so).
func (f *fetch) commit(res FetchResult, wrap func(commit func() (blobstore.Info, error)) (blobstore.Info, error)) (FetchResult, error) {
	if wrap == nil {
		wrap = func(commit func() (blobstore.Info, error)) (blobstore.Info, error) { return commit() }
	}
	committed := false
	info, err := wrap(func() (blobstore.Info, error) {
		committed = true
		return f.part.Commit()
	})
	if !committed {
		f.part.Sync()
		f.part.Close()
		if err == nil {
			err = fmt.Errorf("blobproto: %s: the commit was skipped", f.ref)
		}
		return res, err
	}
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
	relayed  map[peer.ID]peer.ID
	errs     []error
}

// get sends f's request to p, noting the relay its answer came through.
func (f *fetch) get(ctx context.Context, p peer.ID, req getRequest, body func(tree []byte, data io.Reader, n int64) error) error {
	resp, err := f.c.get(ctx, p, req, body)
	if resp.via != "" {
		f.mu.Lock()
		if f.relayed == nil {
			f.relayed = map[peer.ID]peer.ID{}
		}
		f.relayed[p] = resp.via
		f.mu.Unlock()
	}
	return err
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
		req := getRequest{Ref: f.ref.Bytes(), Tree: true, Whole: WholeSize}
		err := f.get(ctx, p, req, func(tree []byte, data io.Reader, n int64) error {
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
				return fmt.Errorf("%w: asked for the whole blob, offered %d of %d bytes", p2p.ErrBadMessage, n, f.total)
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
	return nil, fmt.Errorf("%w: %s: no verified tree (%w)", ErrNoHolder, f.ref, errors.Join(f.errs...))
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
	err := f.get(ctx, p, getRequest{Ref: f.ref.Bytes(), Off: r.Off, Len: r.Len}, func(_ []byte, data io.Reader, n int64) error {
		if n != r.Len {
			return fmt.Errorf("%w: asked for %d bytes, offered %d", p2p.ErrBadMessage, r.Len, n)
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
