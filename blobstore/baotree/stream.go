package baotree

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"lukechampine.com/blake3/guts"
)

// OutboardVerifier checks an outboard tree against a root as its bytes
// arrive, parent node by parent node: a wrong tree is refused at its first
// wrong node, before the rest is read (or held). It keeps one expected
// chaining value per level of the tree, whatever the tree's size.
type OutboardVerifier struct {
	root    [32]byte
	want    int64 // the tree's length, once its length prefix is in
	got     int64
	partial []byte // bytes of the prefix or of a node not yet whole
	stack   []expected
	err     error
}

// expected is a parent node the tree must hold next, in pre-order.
type expected struct {
	cv     [8]uint32
	groups int64
	flags  uint32
}

// NewOutboardVerifier returns a verifier of the outboard tree of the
// content whose BLAKE3 hash is root.
func NewOutboardVerifier(root [32]byte) *OutboardVerifier {
	return &OutboardVerifier{root: root, want: -1}
}

// Write checks p, the next bytes of the tree. Once a byte is wrong (or
// comes after the tree's end) it fails, and so does every later call.
func (v *OutboardVerifier) Write(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n := len(p)
	for len(p) > 0 {
		need := 64
		if v.want < 0 {
			need = 8
		}
		k := min(need-len(v.partial), len(p))
		v.partial = append(v.partial, p[:k]...)
		p = p[k:]
		if len(v.partial) < need {
			break
		}
		if v.err = v.take(v.partial); v.err != nil {
			return 0, v.err
		}
		v.partial = v.partial[:0]
	}
	return n, nil
}

// take checks one whole unit: the length prefix, or a parent node.
func (v *OutboardVerifier) take(b []byte) error {
	if v.want < 0 {
		size := binary.LittleEndian.Uint64(b)
		if size > 1<<50 {
			return fmt.Errorf("%w: outboard tree for %d bytes", ErrVerify, size)
		}
		v.want, v.got = OutboardSize(int64(size)), 8
		if groups := Groups(int64(size)); groups > 1 {
			v.stack = append(v.stack, expected{cv: bytesCV(v.root[:]), groups: groups, flags: guts.FlagRoot})
		}
		return nil
	}
	if len(v.stack) == 0 || v.got+64 > v.want {
		return fmt.Errorf("%w: outboard tree longer than its %d bytes", ErrVerify, v.want)
	}
	e := v.stack[len(v.stack)-1]
	v.stack = v.stack[:len(v.stack)-1]
	l, r := bytesCV(b[:32]), bytesCV(b[32:64])
	if guts.ChainingValue(guts.ParentNode(l, r, &guts.IV, e.flags)) != e.cv {
		return fmt.Errorf("%w: outboard tree node at byte %d", ErrVerify, v.got)
	}
	v.got += 64
	mid := int64(1) << (bits.Len64(uint64(e.groups-1)) - 1)
	// Pre-order: the left subtree's nodes come first.
	if e.groups-mid > 1 {
		v.stack = append(v.stack, expected{cv: r, groups: e.groups - mid})
	}
	if mid > 1 {
		v.stack = append(v.stack, expected{cv: l, groups: mid})
	}
	return nil
}

// Close reports whether the tree arrived whole and verified.
func (v *OutboardVerifier) Close() error {
	switch {
	case v.err != nil:
		return v.err
	case v.want < 0 || len(v.partial) > 0 || v.got != v.want || len(v.stack) > 0:
		return fmt.Errorf("%w: outboard tree cut short (%d of %d bytes)", ErrVerify, v.got+int64(len(v.partial)), v.want)
	}
	return nil
}
