package blobstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/baotree"
)

// PackIndex records which pack holds each packed blob: a small table in a
// transactional database that the store's owner keeps (a node keeps it in
// its badger, see internal/packindex). The store serialises its changes:
// one Apply at a time.
type PackIndex interface {
	// Lookup returns ref's entry; ok is false if it has none.
	Lookup(ref syncnode.BlobRef) (e PackEntry, ok bool, err error)
	// Apply makes a batch of changes durable, in order, before it
	// returns. If it fails, or the power goes meanwhile, a prefix of the
	// changes may have been kept, each change whole.
	Apply(b PackBatch) error
	// Each calls fn for every entry until fn fails.
	Each(fn func(PackEntry) error) error
	// Dead returns the bytes of each pack that no entry points to any
	// more, as the batches applied counted them.
	Dead() (map[uint32]int64, error)
	// State and SetState keep how far the index is built, durably.
	State() (PackState, error)
	SetState(PackState) error
}

// PackState is how far a PackIndex is built.
type PackState uint8

// The states of a PackIndex.
const (
	// PackFresh: nothing recorded, as in a database just made (or
	// lost).
	PackFresh PackState = iota
	// PackRebuilding: being rebuilt from the packs' records; an opening
	// that finds it so rebuilds again.
	PackRebuilding
	// PackBuilt: the index says what is live.
	PackBuilt
)

// PackEntry locates a packed blob. An index gives an entry it cannot read
// (damaged) as in pack 0, which never exists: its blob reads as damaged.
type PackEntry struct {
	Ref syncnode.BlobRef
	// Pack numbers the pack file; Off is where the blob's record starts
	// in it.
	Pack uint32
	Off  int64
	// Size is the blob's length; Stored is when it was packed (Unix
	// nanoseconds).
	Size   int64
	Stored int64
}

// PackChange sets an entry, or deletes its ref's entry.
type PackChange struct {
	Entry  PackEntry
	Delete bool
}

// PackBatch is one durable change of a PackIndex.
type PackBatch struct {
	// Changes are applied in order: a ref set and then deleted in one
	// batch ends deleted.
	Changes []PackChange
	// Dead is added to each pack's count of dead bytes.
	Dead map[uint32]int64
	// Forget drops the counts of packs removed.
	Forget []uint32
}

// The pack record: magic, ref, size, stored time and a CRC-32C of them,
// then the blob's bytes, then its Bao tree if it has more than one group
// (as in a blob's own file); its ref verifies both.
const (
	// PackMax is the size of the largest blob a store with packs packs:
	// below it, a file of its own (created, synced, renamed, its
	// directory synced) costs more than writing its bytes again when
	// its pack is compacted.
	PackMax     = 256 << 10
	packMagic   = "SNPK"
	packHdrSize = 4 + syncnode.HashSize + 4 + 8 + 4
	// packLimit is the size past which a pack takes no more records.
	packLimit = 32 << 20
	// compactBatch bounds the moves of a compaction made durable at once.
	compactBatch = 1024
	// packExt names pack files: packs/<8 hex>.pack.
	packExt = ".pack"
)

// errPackGone reports a pack file removed (compacted) under a reader,
// which then looks its blob up again.
var errPackGone = errors.New("blobstore: pack removed meanwhile")

// packRecLen is the length of the record of a blob of size bytes.
func packRecLen(size int64) int64 { return packHdrSize + size + treeLen(size) }

// treeLen is the length of the tree kept after a blob's bytes.
func treeLen(size int64) int64 {
	if sizeOnly(size) {
		return 0
	}
	return baotree.OutboardSize(size)
}

// packable reports whether a store with packs packs a blob of size bytes.
func packable(size int64) bool { return size <= PackMax }

func packHeader(e PackEntry) []byte {
	h := make([]byte, packHdrSize, packRecLen(e.Size))
	copy(h, packMagic)
	hash := e.Ref.Hash()
	copy(h[4:], hash[:])
	o := 4 + syncnode.HashSize
	binary.BigEndian.PutUint32(h[o:], uint32(e.Size))
	binary.BigEndian.PutUint64(h[o+4:], uint64(e.Stored))
	binary.BigEndian.PutUint32(h[o+12:], crc32.Checksum(h[:o+12], castagnoli))
	return h
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// parsePackHeader reads a record's header: ok is false for bytes that are
// none (a torn tail, damage).
func parsePackHeader(h []byte) (e PackEntry, ok bool) {
	o := 4 + syncnode.HashSize
	if len(h) < packHdrSize || string(h[:4]) != packMagic ||
		binary.BigEndian.Uint32(h[o+12:]) != crc32.Checksum(h[:o+12], castagnoli) {
		return PackEntry{}, false
	}
	ref, err := syncnode.RefFromBytes(h[4:o])
	size := int64(binary.BigEndian.Uint32(h[o:]))
	if err != nil || !packable(size) {
		return PackEntry{}, false
	}
	return PackEntry{Ref: ref, Size: size, Stored: int64(binary.BigEndian.Uint64(h[o+4:]))}, true
}

// pack keeps blobs of at most PackMax bytes as records appended to pack
// files, packs/<8 hex>.pack, with their places in a PackIndex, which
// alone says what is live. A put appends its record, and joins every put that came
// meanwhile in one fdatasync of the pack and one durable batch of the
// index: a small blob costs no file of its own (on a file system where
// creating one is the costliest step of a put) and its syncs are shared,
// yet it is on stable storage before the put returns, and visible only
// once its index entry is, after its bytes are.
//
// A blob deleted, or packed again, leaves its old record dead; a pack at
// least half dead is compacted in the background: its live records are
// packed again, then the file removed. A crash between a record's sync
// and its index batch leaves a record no entry names: dead space that no
// count holds, at most one batch's worth per crash. A lost index (the
// database that kept it lost) is rebuilt from the records.
//
// Each opening appends to a pack of its own, numbered past every pack
// found, so a torn record can only be the last of a pack.
type pack struct {
	dir string
	idx PackIndex
	log *slog.Logger
	now func() time.Time

	mu   sync.Mutex
	cond *sync.Cond
	// files are the packs opened, for reading and (the active one,
	// number next) appending; sizes their lengths, dead their dead bytes.
	files map[uint32]*os.File
	sizes map[uint32]int64
	dead  map[uint32]int64
	next  uint32
	limit int64 // packLimit; less in tests
	// active is the pack appended to, opened by this opening (0: none yet).
	active uint32
	// keep holds packs with damaged records not compacted again.
	keep map[uint32]bool
	// broken holds packs whose sync failed, appended to no more, with
	// the error.
	broken map[uint32]error
	// closed refuses puts, deletes and new pack files after close.
	closed bool
	// view holds the changes appended but not yet in the index.
	view map[syncnode.BlobRef]*packOp
	// cur gathers changes for the next batch; committing says a batch
	// is being made durable.
	cur        *packBatch
	committing bool
	// syncing are the packs the batch being committed syncs.
	syncing map[uint32]bool

	kick      chan struct{}
	stopOnce  sync.Once
	stop      chan struct{}
	done      chan struct{}
	compacted func(n uint32) // tests: told of each pack removed
	// attempted, in tests, is told of each compaction's end.
	attempted func(n uint32, err error)
}

type packOp struct {
	e       PackEntry
	deleted bool
	b       *packBatch
}

type packBatch struct {
	PackBatch
	ops   []*packOp
	dirty map[uint32]bool
	done  bool
	err   error
}

func newPackBatch() *packBatch {
	return &packBatch{PackBatch: PackBatch{Dead: map[uint32]int64{}}, dirty: map[uint32]bool{}}
}

// openPack opens the packs in dir (made if needed) with their index and
// starts their compaction.
func openPack(dir string, idx PackIndex, now func() time.Time, log *slog.Logger) (*pack, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	dead, err := idx.Dead()
	if err != nil {
		return nil, fmt.Errorf("blobstore: pack index: %w", err)
	}
	p := &pack{dir: dir, idx: idx, limit: packLimit, log: log, now: now, files: map[uint32]*os.File{}, sizes: map[uint32]int64{},
		dead: dead, keep: map[uint32]bool{}, broken: map[uint32]error{}, view: map[syncnode.BlobRef]*packOp{}, cur: newPackBatch(),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	for _, e := range ents {
		n, ok := packNumber(e.Name())
		if !ok {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
		p.sizes[n] = fi.Size()
		p.next = max(p.next, n+1)
	}
	p.next = max(p.next, 1)
	var gone []uint32
	for n := range p.dead {
		if _, ok := p.sizes[n]; !ok {
			gone = append(gone, n) // removed by a compaction a crash cut short
		}
	}
	if len(gone) > 0 {
		if err := idx.Apply(PackBatch{Forget: gone}); err != nil {
			return nil, fmt.Errorf("blobstore: pack index: %w", err)
		}
		for _, n := range gone {
			delete(p.dead, n)
		}
	}
	if err := p.ensureBuilt(); err != nil {
		return nil, err
	}
	go p.compactor()
	p.poke()
	return p, nil
}

// errStop ends a walk of the index early.
var errStop = errors.New("stop")

// ensureBuilt makes sure the index says what is live. A fresh index
// beside packs holding records means the database that kept it was lost:
// it is rebuilt from the records (see rebuild), marked as being rebuilt
// until it is whole, so a rebuild cut short is done again. A fresh index
// with entries was built before the index kept its state.
func (p *pack) ensureBuilt() error {
	st, err := p.idx.State()
	if err != nil {
		return fmt.Errorf("blobstore: pack index: %w", err)
	}
	switch st {
	case PackBuilt:
		return nil
	case PackFresh:
		held := false
		for _, size := range p.sizes {
			held = held || size > 0
		}
		if held {
			switch err := p.idx.Each(func(PackEntry) error { return errStop }); {
			case errors.Is(err, errStop):
				held = false // entries: built before the state was kept
			case err != nil:
				return fmt.Errorf("blobstore: pack index: %w", err)
			}
		}
		if !held {
			return p.idx.SetState(PackBuilt)
		}
		if err := p.idx.SetState(PackRebuilding); err != nil {
			return err
		}
	}
	n, err := p.rebuild()
	if err != nil {
		return fmt.Errorf("blobstore: rebuilding the lost pack index: %w", err)
	}
	if err := p.idx.SetState(PackBuilt); err != nil {
		return err
	}
	p.log.Warn("the pack index was lost with the database: rebuilt from the packs (blobs deleted from packs not compacted since are back)", "packs", len(p.sizes), "blobs", n)
	return nil
}

func packName(n uint32) string { return fmt.Sprintf("%08x%s", n, packExt) }

func packNumber(name string) (uint32, bool) {
	hex, ok := strings.CutSuffix(name, packExt)
	if !ok || len(hex) != 8 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 32)
	return uint32(n), err == nil && n > 0
}

// close stops the compaction and closes the packs; changes already
// returned are durable. A second close does nothing.
func (p *pack) close() error {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for p.committing { // its syncs use the files
		p.cond.Wait()
	}
	var first error
	for n, f := range p.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
		delete(p.files, n)
	}
	return first
}

// lookup returns ref's entry as this opening sees it: its changes not
// yet in the index first. p.mu is held.
func (p *pack) lookup(ref syncnode.BlobRef) (PackEntry, *packOp, bool, error) {
	if op, ok := p.view[ref]; ok {
		return op.e, op, !op.deleted, nil
	}
	e, ok, err := p.idx.Lookup(ref)
	if err != nil {
		return PackEntry{}, nil, false, fmt.Errorf("blobstore: pack index: %w", err)
	}
	return e, nil, ok, nil
}

// file returns pack n open. p.mu is held.
func (p *pack) file(n uint32) (*os.File, error) {
	if f, ok := p.files[n]; ok {
		return f, nil
	}
	if p.closed {
		return nil, fmt.Errorf("blobstore: %w", os.ErrClosed)
	}
	f, err := os.Open(filepath.Join(p.dir, packName(n)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errPackGone
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore: %w", err)
	}
	// At most maxOpenPacks kept open: a scrub reads every pack. One
	// closed under a reader sends it back to the index (errPackGone).
	for m, g := range p.files {
		if len(p.files) < maxOpenPacks {
			break
		}
		if m != p.active && !p.cur.dirty[m] && !p.syncing[m] {
			g.Close()
			delete(p.files, m)
		}
	}
	p.files[n] = f
	return f, nil
}

// maxOpenPacks bounds the pack files kept open for reading.
const maxOpenPacks = 32

// readPacked reads e's record from f, checking its header names it, and
// returns the blob's bytes and tree, unverified.
func readPacked(f *os.File, e PackEntry) (data, tree []byte, err error) {
	if e.Size < 0 || !packable(e.Size) {
		return nil, nil, fmt.Errorf("%w: %s: its index entry names %d bytes", syncnode.ErrCorruptRecord, e.Ref, e.Size)
	}
	b := make([]byte, packRecLen(e.Size))
	if _, err := f.ReadAt(b, e.Off); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return nil, nil, errPackGone
		}
		if errors.Is(err, io.EOF) {
			return nil, nil, fmt.Errorf("%w: %s: its pack ends before its record", ErrDamaged, e.Ref)
		}
		return nil, nil, fmt.Errorf("blobstore: read %s: %w", e.Ref, err)
	}
	h, ok := parsePackHeader(b[:packHdrSize])
	if !ok || h.Ref != e.Ref || h.Size != e.Size {
		return nil, nil, fmt.Errorf("%w: %s: its record's header is damaged", ErrDamaged, e.Ref)
	}
	data, tree = b[packHdrSize:packHdrSize+e.Size], b[packHdrSize+e.Size:]
	if sizeOnly(e.Size) {
		tree = sizeTree(e.Size)
	}
	return data, tree, nil
}

// get returns ref's bytes and tree, verified against ref (ErrDamaged if
// they do not match), and its entry; ok is false if ref is not packed.
// Readers go by the index alone: a put is visible once durable.
func (p *pack) get(ref syncnode.BlobRef) (data, tree []byte, e PackEntry, ok bool, err error) {
	var gone PackEntry // the entry last found in a pack that was gone
	for range 5 {
		var f *os.File
		e, ok, err = p.stat(ref)
		if err == nil && ok {
			p.mu.Lock()
			f, err = p.file(e.Pack)
			p.mu.Unlock()
		}
		if err != nil && !errors.Is(err, errPackGone) || err == nil && !ok {
			return nil, nil, e, ok, err
		}
		if err == nil {
			data, tree, err = readPacked(f, e)
		}
		if errors.Is(err, errPackGone) {
			// Compacted meanwhile, its new place in the index; unless
			// the index names the same place again: then the pack was
			// lost, and the copy with it.
			if e == gone {
				if _, serr := os.Stat(filepath.Join(p.dir, packName(e.Pack))); errors.Is(serr, fs.ErrNotExist) {
					return nil, nil, e, true, fmt.Errorf("%w: %s: its pack %s is missing", ErrDamaged, ref, packName(e.Pack))
				}
			}
			gone = e
			continue
		}
		if err == nil {
			err = verifyPacked(ref, data, tree)
		}
		return data, tree, e, true, err
	}
	return nil, nil, e, false, fmt.Errorf("blobstore: %s: its pack keeps being compacted under the reader", ref)
}

// stat returns ref's entry in the index, without reading its bytes; an
// entry the index cannot read gives ErrDamaged.
func (p *pack) stat(ref syncnode.BlobRef) (PackEntry, bool, error) {
	e, ok, err := p.idx.Lookup(ref)
	if err != nil {
		return PackEntry{}, false, fmt.Errorf("blobstore: pack index: %w", err)
	}
	if ok && e.Pack == 0 {
		return e, true, fmt.Errorf("%w: %s: its pack index entry is damaged", ErrDamaged, ref)
	}
	return e, ok, nil
}

// verifyPacked checks a packed blob's bytes and tree against its ref.
func verifyPacked(ref syncnode.BlobRef, data, tree []byte) error {
	if size, err := baotree.Size(tree); err != nil || size != int64(len(data)) {
		return fmt.Errorf("%w: %s: its tree names another length", ErrDamaged, ref)
	}
	if err := baotree.VerifyGroups(ref.Hash(), tree, 0, data); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDamaged, ref, err)
	}
	return nil
}

// put packs data and its tree (nil for a blob of one group), verified
// already against ref, unless a sound copy is packed; it returns once
// the record and its entry are durable.
func (p *pack) put(ref syncnode.BlobRef, data, tree []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	old, op, ok, err := p.lookup(ref)
	if err != nil {
		return err
	}
	if ok && p.sound(old) {
		if op != nil {
			return p.await(op.b) // packed by a put still syncing
		}
		return nil
	}
	// Not packed, or its copy is damaged: a put again repairs it.
	b, err := p.appendLocked(ref, int64(len(data)), p.now().UnixNano(), old, ok, data, tree)
	if err != nil {
		return err
	}
	return p.await(b)
}

// sound reports whether e's record reads back whole and matching its
// ref. p.mu is held.
func (p *pack) sound(e PackEntry) bool {
	f, err := p.file(e.Pack)
	if err != nil {
		return false
	}
	data, tree, err := readPacked(f, e)
	return err == nil && verifyPacked(e.Ref, data, tree) == nil
}

// appendLocked appends a record of ref, a blob of size bytes, to the
// active pack and queues its entry, counting old (if had) as dead. body
// is the record's bytes after its header: the blob's bytes, then its tree
// if it has more than one group. p.mu is held.
func (p *pack) appendLocked(ref syncnode.BlobRef, size, stored int64, old PackEntry, had bool, body ...[]byte) (*packBatch, error) {
	f, err := p.activeFor(packRecLen(size))
	if err != nil {
		return nil, err
	}
	e := PackEntry{Ref: ref, Pack: p.active, Off: p.sizes[p.active], Size: size, Stored: stored}
	rec := packHeader(e)
	for _, b := range body {
		rec = append(rec, b...)
	}
	if int64(len(rec)) != packRecLen(size) {
		return nil, fmt.Errorf("blobstore: pack record of %s: %d bytes, want %d", ref, len(rec), packRecLen(size))
	}
	if _, err := f.WriteAt(rec, e.Off); err != nil {
		// Not counted as written: the next record overwrites these bytes.
		return nil, fmt.Errorf("blobstore: pack write: %w", err)
	}
	p.sizes[p.active] += int64(len(rec))
	b := p.cur
	if had {
		b.Dead[old.Pack] += packRecLen(old.Size)
	}
	b.dirty[p.active] = true
	p.queue(b, &packOp{e: e, b: b})
	return b, nil
}

// queue adds op to batch b and to the view. p.mu is held.
func (p *pack) queue(b *packBatch, op *packOp) {
	b.Changes = append(b.Changes, PackChange{Entry: op.e, Delete: op.deleted})
	b.ops = append(b.ops, op)
	p.view[op.e.Ref] = op
}

// activeFor returns the pack to append n bytes to, starting a new one
// when there is none yet or the active one is full. p.mu is held.
func (p *pack) activeFor(n int64) (*os.File, error) {
	if p.closed {
		return nil, fmt.Errorf("blobstore: pack: %w", os.ErrClosed)
	}
	if p.active != 0 && p.broken[p.active] == nil && p.sizes[p.active]+n <= p.limit {
		return p.files[p.active], nil
	}
	if p.active != 0 {
		p.poke() // the pack ending may be half dead already
	}
	num := p.next
	f, err := os.OpenFile(filepath.Join(p.dir, packName(num)), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("blobstore: new pack: %w", err)
	}
	// Its name is on stable storage before any entry names it.
	if err := syncDir(p.dir); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	p.next++
	p.files[num], p.sizes[num], p.active = f, 0, num
	return f, nil
}

// delete removes ref's entry, durably; ok is false if ref is not packed.
func (p *pack) delete(ref syncnode.BlobRef) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false, fmt.Errorf("blobstore: pack: %w", os.ErrClosed)
	}
	old, op, ok, err := p.lookup(ref)
	for err == nil && !ok && op != nil {
		// Deleted by a call still syncing: gone once that is durable;
		// if it fails, the blob is there still, to delete here.
		if p.await(op.b) == nil {
			return false, nil
		}
		old, op, ok, err = p.lookup(ref)
	}
	if err != nil || !ok {
		return false, err
	}
	b := p.cur
	b.Dead[old.Pack] += packRecLen(old.Size)
	p.queue(b, &packOp{e: PackEntry{Ref: ref, Pack: old.Pack, Off: old.Off}, deleted: true, b: b})
	if err := p.await(b); err != nil {
		return false, err
	}
	if p.dead[old.Pack]*2 >= p.sizes[old.Pack] && old.Pack != p.active {
		p.poke()
	}
	return true, nil
}

// await returns once batch b is durable (or failed), making it durable
// itself, with every change queued since, if no batch is under way.
// p.mu is held; it is released while syncing.
func (p *pack) await(b *packBatch) error {
	for !b.done {
		if p.committing {
			p.cond.Wait()
			continue
		}
		c := p.cur // b itself, or a batch that b is in: b is not done
		p.cur, p.committing = newPackBatch(), true
		var nums []uint32
		var files []*os.File
		var err error
		for n := range c.dirty {
			if p.broken[n] != nil {
				// Its sync failed before: a later sync of the same file
				// may report success for pages that were never written.
				err = fmt.Errorf("blobstore: pack %s failed to sync before: %w", packName(n), p.broken[n])
			}
			nums, files = append(nums, n), append(files, p.files[n])
		}
		if err == nil {
			p.syncing = c.dirty
			p.mu.Unlock()
			var failed int
			failed, err = commitPackBatch(p.idx, files, c.PackBatch)
			p.mu.Lock()
			p.syncing = nil
			if failed >= 0 {
				// Appended to no more: the next record starts a new pack.
				p.broken[nums[failed]] = err
			}
		}
		for _, op := range c.ops {
			if p.view[op.e.Ref] == op {
				delete(p.view, op.e.Ref)
			}
		}
		if err == nil {
			for n, d := range c.Dead {
				p.dead[n] += d
			}
		}
		c.done, c.err, p.committing = true, err, false
		p.cond.Broadcast()
	}
	return b.err
}

// commitPackBatch syncs the packs appended to, then applies the batch. If
// a sync fails, failed is the index of its file, else -1.
func commitPackBatch(idx PackIndex, files []*os.File, b PackBatch) (failed int, err error) {
	for i, f := range files {
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return i, fmt.Errorf("blobstore: pack sync: %w", err)
		}
	}
	if err := idx.Apply(b); err != nil {
		return -1, fmt.Errorf("blobstore: pack index: %w", err)
	}
	return -1, nil
}

// each calls fn for every packed blob in the index.
func (p *pack) each(fn func(PackEntry) error) error { return p.idx.Each(fn) }

// poke asks the compactor to look for packs to compact.
func (p *pack) poke() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// compactor compacts packs at least half dead when poked, until close.
func (p *pack) compactor() {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
		for _, n := range p.halfDead() {
			select {
			case <-p.stop:
				return
			default:
			}
			err := p.compact(n)
			if err != nil {
				p.log.Warn("pack not compacted", "pack", packName(n), "err", err)
			}
			p.mu.Lock()
			told := p.attempted
			p.mu.Unlock()
			if told != nil {
				told(n, err)
			}
		}
	}
}

// halfDead lists the packs, other than the active one, at least half dead.
func (p *pack) halfDead() []uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []uint32
	for n, size := range p.sizes {
		if n != p.active && !p.keep[n] && p.dead[n]*2 >= size {
			out = append(out, n)
		}
	}
	return out
}

// compact packs again the live records of pack n, then removes it, once
// the index names none of its records: a move whose batch failed, or a
// delete pending while the pack was read whose batch then fails, leaves
// the pack for a later compaction. A damaged record, which cannot be
// moved, stays where a scrub finds it.
func (p *pack) compact(n uint32) error {
	path := filepath.Join(p.dir, packName(n))
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var last *packBatch
	var seen []syncnode.BlobRef
	clean, err := scanRecords(raw, n, func(h PackEntry, body []byte) error {
		seen = append(seen, h.Ref)
		p.mu.Lock()
		defer p.mu.Unlock()
		e, _, ok, err := p.lookup(h.Ref)
		if err == nil && ok && e.Pack == n && e.Off == h.Off {
			// Live: moved as it is, damage and all, for a scrub to find.
			last, err = p.appendLocked(h.Ref, h.Size, h.Stored, e, true, body)
			if err == nil && len(last.ops) >= compactBatch {
				err = p.await(last)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	if last != nil {
		p.mu.Lock()
		err := p.await(last) // and every batch before it
		p.mu.Unlock()
		if err != nil {
			return err
		}
	}
	// The index alone says what is live: no entry can come to name n
	// (records go to the active pack), and a batch that failed left the
	// entries it would have changed as they were.
	named := 0
	if clean {
		for _, ref := range seen {
			e, ok, err := p.idx.Lookup(ref)
			if err != nil {
				return err
			}
			if ok && e.Pack == n {
				named++
			}
		}
	} else if named, err = p.named(n); err != nil {
		return err
	}
	if named > 0 {
		if !clean {
			p.mu.Lock()
			p.keep[n] = true
			p.mu.Unlock()
			return fmt.Errorf("%d blobs in it, damaged or not moved: kept for a scrub to restore", named)
		}
		return fmt.Errorf("%d blobs in it not moved: kept for a later compaction", named)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// A batch that appended to n before it stopped being the active pack
	// must be durable before n is closed.
	for p.committing || p.cur.dirty[n] {
		if p.committing {
			p.cond.Wait()
		} else if err := p.await(p.cur); err != nil {
			return err
		}
	}
	if f, ok := p.files[n]; ok {
		f.Close()
		delete(p.files, n)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := syncDir(p.dir); err != nil {
		return err
	}
	delete(p.sizes, n)
	delete(p.dead, n)
	if p.compacted != nil {
		p.compacted(n)
	}
	// Its count is dropped at the next open if this batch is lost.
	p.cur.Forget = append(p.cur.Forget, n)
	return p.await(p.cur)
}

// scanRecords calls fn for each record of pack n, whose bytes are raw,
// with its entry and the bytes after its header, until fn fails. Bytes
// that are no record (damage, a torn tail) are skipped to the next
// record, and make clean false.
func scanRecords(raw []byte, n uint32, fn func(h PackEntry, body []byte) error) (clean bool, err error) {
	clean = true
	for off := int64(0); off < int64(len(raw)); {
		h, ok := PackEntry{}, false
		if off+packHdrSize <= int64(len(raw)) {
			h, ok = parsePackHeader(raw[off : off+packHdrSize])
		}
		if !ok || off+packRecLen(h.Size) > int64(len(raw)) {
			clean = false
			i := bytes.Index(raw[off+1:], []byte(packMagic))
			if i < 0 {
				break
			}
			off += 1 + int64(i)
			continue
		}
		body := raw[off+packHdrSize : off+packRecLen(h.Size)]
		h.Pack, h.Off = n, off
		off += packRecLen(h.Size)
		if err := fn(h, body); err != nil {
			return clean, err
		}
	}
	return clean, nil
}

// rebuild enters in a lost index every record of the packs whose bytes
// verify against its ref, a pack at a time in the order they were
// written (so a later record of a ref replaces an earlier one), and
// counts the rest of each pack as dead. Blobs deleted since their pack
// was last compacted come back: a lost index cannot tell them from blobs
// kept, and keeping a deleted blob costs less than losing a kept one. It
// returns how many records it entered. Done again over a part done, it
// ends with the same index and counts.
func (p *pack) rebuild() (int, error) {
	nums := make([]uint32, 0, len(p.sizes))
	for n := range p.sizes {
		nums = append(nums, n)
	}
	slices.Sort(nums)
	if err := p.idx.Apply(PackBatch{Forget: nums}); err != nil { // counted afresh
		return 0, err
	}
	p.dead = map[uint32]int64{}
	entered := 0
	for _, n := range nums {
		raw, err := os.ReadFile(filepath.Join(p.dir, packName(n)))
		if err != nil {
			// Its records are not entered; what other packs hold is.
			p.log.Error("a pack unreadable while rebuilding the index", "pack", packName(n), "err", err)
			continue
		}
		b := PackBatch{Dead: map[uint32]int64{n: p.sizes[n]}}
		if _, err := scanRecords(raw, n, func(h PackEntry, body []byte) error {
			data, tree := body[:h.Size], body[h.Size:]
			if sizeOnly(h.Size) {
				tree = sizeTree(h.Size)
			}
			if verifyPacked(h.Ref, data, tree) != nil {
				return nil
			}
			old, ok, err := p.idx.Lookup(h.Ref)
			if err != nil {
				return err
			}
			b.Dead[n] -= packRecLen(h.Size)
			if ok && old.Pack == n && old.Off == h.Off {
				return nil // entered by a rebuild cut short
			}
			if ok {
				// Another record of it, entered before: the same bytes,
				// dead now. (A count too high only compacts earlier:
				// compaction moves whatever the index names.)
				b.Dead[old.Pack] += packRecLen(old.Size)
			}
			b.Changes = append(b.Changes, PackChange{Entry: h})
			return nil
		}); err != nil {
			return 0, err
		}
		if err := p.idx.Apply(b); err != nil {
			return 0, err
		}
		for m, d := range b.Dead {
			p.dead[m] += d
		}
		entered += len(b.Changes)
	}
	return entered, nil
}

// named counts the index's entries in pack n, reading the whole index
// (only after damage).
func (p *pack) named(n uint32) (int, error) {
	count := 0
	err := p.idx.Each(func(e PackEntry) error {
		if e.Pack == n {
			count++
		}
		return nil
	})
	return count, err
}
