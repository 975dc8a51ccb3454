// Package baotree computes a blob's BLAKE3 hash and its Bao outboard tree in
// one streaming pass, and verifies byte ranges against that tree.
//
// The outboard format is Bao's (as lukechampine.com/blake3/bao writes it
// with chunk groups of 2^GroupLog chunks): an 8-byte little-endian length,
// then the parent chaining values in pre-order. Its root is the plain BLAKE3
// hash of the content, the hash b3sum prints.
package baotree

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"lukechampine.com/blake3/bao"
	"lukechampine.com/blake3/guts"
)

// GroupLog is log2 of the chunks per group: 16 chunks of 1 KiB, so the tree
// costs 64 bytes per 16 KiB of content (0.4%) and a range is verifiable at
// 16 KiB granularity.
const GroupLog = 4

// GroupSize is the size in bytes of one chunk group, the unit of
// verification.
const GroupSize = guts.ChunkSize << GroupLog

// ErrVerify reports content that does not match the tree's root.
var ErrVerify = errors.New("baotree: content does not match hash")

// OutboardSize returns the size of the outboard tree for size bytes of content.
func OutboardSize(size int64) int64 { return int64(bao.EncodedSize(int(size), GroupLog, true)) }

// Groups returns the number of chunk groups in size bytes of content (at
// least one: the empty blob has one empty group).
func Groups(size int64) int64 {
	if size <= GroupSize {
		return 1
	}
	return (size + GroupSize - 1) / GroupSize
}

// Hasher hashes content written to it and builds its outboard tree. The zero
// Hasher is ready to use. Memory grows by 32 bytes per 16 KiB written.
type Hasher struct {
	buf  [GroupSize]byte
	n    int         // bytes buffered in buf
	cvs  [][8]uint32 // chaining values of completed groups
	size int64
}

// Write hashes p. It never fails.
func (h *Hasher) Write(p []byte) (int, error) {
	total := len(p)
	h.size += int64(total)
	for len(p) > 0 {
		if h.n == GroupSize { // more content follows a full group: it is not the root
			h.compress(&h.buf)
			h.n = 0
		}
		if h.n == 0 && len(p) > GroupSize {
			h.compress((*[GroupSize]byte)(p[:GroupSize]))
			p = p[GroupSize:]
			continue
		}
		c := copy(h.buf[h.n:], p)
		h.n += c
		p = p[c:]
	}
	return total, nil
}

func (h *Hasher) compress(g *[GroupSize]byte) {
	counter := uint64(len(h.cvs)) << GroupLog
	h.cvs = append(h.cvs, guts.ChainingValue(guts.CompressBuffer(g, GroupSize, &guts.IV, counter, 0)))
}

// Size returns the number of bytes written.
func (h *Hasher) Size() int64 { return h.size }

// Sum returns the BLAKE3-256 hash of the content and its outboard tree. The
// Hasher must not be written to afterwards.
func (h *Hasher) Sum() (root [32]byte, outboard []byte) {
	counter := uint64(len(h.cvs)) << GroupLog
	last := guts.CompressBuffer(&h.buf, h.n, &guts.IV, counter, 0)
	outboard = make([]byte, 8, OutboardSize(h.size))
	binary.LittleEndian.PutUint64(outboard, uint64(h.size))
	if len(h.cvs) == 0 {
		last.Flags |= guts.FlagRoot
		return cvBytes(guts.ChainingValue(last)), outboard
	}
	leaves := append(h.cvs, guts.ChainingValue(last))
	var rec func(l []([8]uint32), flags uint32) [8]uint32
	rec = func(l [][8]uint32, flags uint32) [8]uint32 {
		if len(l) == 1 {
			return l[0]
		}
		at := len(outboard)
		outboard = append(outboard, make([]byte, 64)...)
		mid := 1 << (bits.Len(uint(len(l)-1)) - 1) // largest power of two below len(l)
		left, right := rec(l[:mid], 0), rec(l[mid:], 0)
		lb, rb := cvBytes(left), cvBytes(right)
		copy(outboard[at:], lb[:])
		copy(outboard[at+32:], rb[:])
		return guts.ChainingValue(guts.ParentNode(left, right, &guts.IV, flags))
	}
	return cvBytes(rec(leaves, guts.FlagRoot)), outboard
}

func cvBytes(cv [8]uint32) (b [32]byte) {
	for i, w := range cv {
		binary.LittleEndian.PutUint32(b[4*i:], w)
	}
	return b
}

// Size returns the content length an outboard tree records, checking that
// the tree's length matches it.
func Size(outboard []byte) (int64, error) {
	if len(outboard) < 8 {
		return 0, fmt.Errorf("%w: outboard of %d bytes has no length", ErrVerify, len(outboard))
	}
	n := binary.LittleEndian.Uint64(outboard)
	if n > 1<<50 || OutboardSize(int64(n)) != int64(len(outboard)) {
		return 0, fmt.Errorf("%w: outboard of %d bytes does not fit content length %d", ErrVerify, len(outboard), n)
	}
	return int64(n), nil
}

// VerifyGroups checks that data, which starts at group-aligned offset off,
// is the content named by root according to outboard. data must end at a
// group boundary or at the end of the content. The outboard itself is
// checked along the way: a wrong tree fails as wrong content does.
func VerifyGroups(root [32]byte, outboard []byte, off int64, data []byte) error {
	size, err := Size(outboard)
	if err != nil {
		return err
	}
	end := off + int64(len(data))
	switch {
	case off%GroupSize != 0:
		return fmt.Errorf("baotree: offset %d is not a multiple of %d", off, GroupSize)
	case end > size:
		return fmt.Errorf("baotree: range %d+%d passes the end %d", off, len(data), size)
	case end%GroupSize != 0 && end != size:
		return fmt.Errorf("baotree: range end %d is not on a group boundary", end)
	case size == 0:
		var h Hasher
		if r, _ := h.Sum(); r != root {
			return fmt.Errorf("%w: empty content", ErrVerify)
		}
		return nil
	case len(data) == 0:
		return nil
	}
	if !bao.VerifyChunk(data, outboard, GroupLog, uint64(off), root) {
		return fmt.Errorf("%w: bytes %d..%d", ErrVerify, off, end)
	}
	return nil
}

// VerifyOutboard checks a whole outboard tree against root: every parent
// node, from the root down, must hash to the chaining value its own parent
// holds. Since the lowest parents hold the chunk groups' chaining values, a
// tree that passes is the blob's one true tree, and each group can then be
// checked against it alone.
func VerifyOutboard(root [32]byte, outboard []byte) error {
	size, err := Size(outboard)
	if err != nil {
		return err
	}
	if size <= GroupSize {
		return nil // no parents: the data itself is checked against root
	}
	p := outboard[8:]
	var rec func(cv [8]uint32, groups int64, flags uint32) bool
	rec = func(cv [8]uint32, groups int64, flags uint32) bool {
		if groups == 1 {
			return true
		}
		l, r := bytesCV(p[:32]), bytesCV(p[32:64])
		p = p[64:]
		if guts.ChainingValue(guts.ParentNode(l, r, &guts.IV, flags)) != cv {
			return false
		}
		mid := int64(1) << (bits.Len64(uint64(groups-1)) - 1)
		return rec(l, mid, 0) && rec(r, groups-mid, 0)
	}
	if !rec(bytesCV(root[:]), Groups(size), guts.FlagRoot) {
		return fmt.Errorf("%w: outboard tree", ErrVerify)
	}
	return nil
}

func bytesCV(b []byte) (cv [8]uint32) {
	for i := range cv {
		cv[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return cv
}
