package blobstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/syncnode/syncnode"
)

// Mem is a Store in memory, for tests and for nodes that keep nothing on
// disk.
type Mem struct {
	bufs  putBuffers
	mu    sync.Mutex
	blobs map[syncnode.BlobRef]memBlob
	parts map[syncnode.BlobRef]*memPartial
}

type memBlob struct {
	data, ob []byte
}

var (
	_ Store          = (*Mem)(nil)
	_ PartialDropper = (*Mem)(nil)
)

// NewMem returns an empty in-memory store.
func NewMem() *Mem {
	return &Mem{blobs: map[syncnode.BlobRef]memBlob{}, parts: map[syncnode.BlobRef]*memPartial{}}
}

func notFound(ref syncnode.BlobRef) error {
	return fmt.Errorf("blobstore: %s: %w", ref, syncnode.ErrNotFound)
}

// Put implements Store.
func (m *Mem) Put(ctx context.Context, r io.Reader, want syncnode.BlobRef) (Info, error) {
	var buf bytes.Buffer
	info, ob, err := hashing(ctx, &buf, r, want, &m.bufs)
	if err != nil {
		return Info{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blobs[info.Ref]; !ok {
		m.blobs[info.Ref] = memBlob{data: buf.Bytes(), ob: ob}
	}
	return info, nil
}

func (m *Mem) get(ref syncnode.BlobRef) (memBlob, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[ref]
	if !ok {
		return memBlob{}, notFound(ref)
	}
	return b, nil
}

// Open implements Store.
func (m *Mem) Open(ref syncnode.BlobRef) (Reader, error) {
	b, err := m.get(ref)
	if err != nil {
		return nil, err
	}
	return newVerifiedReader(ref, bytes.NewReader(b.data), int64(len(b.data)), nil, b.ob)
}

// Stat implements Store.
func (m *Mem) Stat(ref syncnode.BlobRef) (Info, error) {
	b, err := m.get(ref)
	if err != nil {
		return Info{}, err
	}
	return Info{Ref: ref, Size: int64(len(b.data))}, nil
}

// Outboard implements Store.
func (m *Mem) Outboard(ref syncnode.BlobRef) ([]byte, error) {
	b, err := m.get(ref)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(b.ob), nil
}

// List implements Store.
func (m *Mem) List(fn func(Info) error) error {
	m.mu.Lock()
	infos := make([]Info, 0, len(m.blobs))
	for ref, b := range m.blobs {
		infos = append(infos, Info{Ref: ref, Size: int64(len(b.data))})
	}
	m.mu.Unlock()
	for _, i := range infos {
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements Store.
func (m *Mem) Delete(ref syncnode.BlobRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blobs[ref]; !ok {
		return notFound(ref)
	}
	delete(m.blobs, ref)
	return nil
}

type memPartial struct {
	inMemory
	m *Mem
}

// inMemory is a partial blob's bytes in memory: each range verified
// before it is copied in. Its Sync keeps nothing beyond its owner's
// lifetime.
type inMemory struct {
	*groups
	data []byte
}

func newInMemory(g *groups) inMemory { return inMemory{groups: g, data: make([]byte, g.size)} }

func (p *inMemory) Size() int64      { return p.size }
func (p *inMemory) Missing() []Range { return p.missing() }
func (p *inMemory) Sync() error      { return nil }
func (p *inMemory) Close() error     { return nil }

func (p *inMemory) WriteAt(b []byte, off int64) error {
	first, last, err := p.verify(b, off)
	if err != nil {
		return err
	}
	p.mu.Lock()
	copy(p.data[off:], b)
	p.mu.Unlock()
	p.mark(first, last)
	return nil
}

// bytes returns a copy of the bytes written: another writer sharing
// the partial may still write the same (verified) bytes.
func (p *inMemory) bytes() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.data)
}

// DropPartial implements PartialDropper.
func (m *Mem) DropPartial(ref syncnode.BlobRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.parts, ref)
	return nil
}

// OpenPartial implements Store. Progress lives as long as the Mem.
func (m *Mem) OpenPartial(ref syncnode.BlobRef, outboard []byte) (Partial, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := m.parts[ref]; ok && bytes.Equal(p.ob, outboard) {
		return p, nil
	}
	g, err := newGroups(ref, outboard)
	if err != nil {
		return nil, err
	}
	p := &memPartial{inMemory: newInMemory(g), m: m}
	m.parts[ref] = p
	return p, nil
}

func (p *memPartial) Commit() (Info, error) {
	if err := p.complete(); err != nil {
		return Info{}, err
	}
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	if _, ok := p.m.blobs[p.ref]; !ok {
		p.m.blobs[p.ref] = memBlob{data: p.data, ob: p.ob}
	}
	delete(p.m.parts, p.ref)
	return Info{Ref: p.ref, Size: p.size}, nil
}

func (p *memPartial) Abort() error {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	delete(p.m.parts, p.ref)
	return nil
}
