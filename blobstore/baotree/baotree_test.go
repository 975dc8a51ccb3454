package baotree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"

	"lukechampine.com/blake3"
	"lukechampine.com/blake3/bao"
)

func sizes() []int {
	return []int{0, 1, 1023, 1024, 1025, GroupSize - 1, GroupSize, GroupSize + 1,
		2 * GroupSize, 3*GroupSize + 17, 4 * GroupSize, 5 * GroupSize, 1<<20 + 5, 3 << 20}
}

func TestMatchesReferenceBao(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range sizes() {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		wantOB, wantRoot := bao.EncodeBuf(data, GroupLog, true)
		if wantRoot != blake3.Sum256(data) {
			t.Fatal("reference bao root is not the BLAKE3 hash")
		}
		// Write in odd-sized pieces to cross group boundaries every way.
		var h Hasher
		for p := data; len(p) > 0; {
			k := min(len(p), 1+rng.IntN(3*GroupSize))
			h.Write(p[:k])
			p = p[k:]
		}
		root, ob := h.Sum()
		if root != wantRoot {
			t.Fatalf("size %d: root %x, want %x", n, root, wantRoot)
		}
		if !bytes.Equal(ob, wantOB) {
			t.Fatalf("size %d: outboard differs from reference (%d vs %d bytes)", n, len(ob), len(wantOB))
		}
		if err := VerifyOutboard(root, ob); err != nil {
			t.Fatalf("size %d: VerifyOutboard: %v", n, err)
		}
		if len(ob) > 8 {
			bad := bytes.Clone(ob)
			bad[8+rng.IntN(len(bad)-8)] ^= 4
			if err := VerifyOutboard(root, bad); !errors.Is(err, ErrVerify) {
				t.Fatalf("size %d: VerifyOutboard accepted a flipped tree byte", n)
			}
		}
		if got, _ := Size(ob); got != int64(n) {
			t.Fatalf("Size = %d, want %d", got, n)
		}
		if err := VerifyGroups(root, ob, 0, data); err != nil {
			t.Fatalf("size %d: whole content: %v", n, err)
		}
		if n > 2*GroupSize {
			off := int64(GroupSize)
			if err := VerifyGroups(root, ob, off, data[off:2*off]); err != nil {
				t.Fatalf("size %d: middle group: %v", n, err)
			}
			bad := bytes.Clone(data[off : 2*off])
			bad[100] ^= 1
			if err := VerifyGroups(root, ob, off, bad); !errors.Is(err, ErrVerify) {
				t.Fatalf("size %d: flipped byte: %v", n, err)
			}
			badOB := bytes.Clone(ob)
			badOB[len(badOB)-1] ^= 1
			if err := VerifyGroups(root, badOB, 0, data); !errors.Is(err, ErrVerify) {
				t.Fatalf("size %d: flipped outboard byte: %v", n, err)
			}
		}
	}
}

func TestSizeRejectsGarbage(t *testing.T) {
	for _, ob := range [][]byte{nil, {1, 2, 3}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, append(make([]byte, 8), 1)} {
		if _, err := Size(ob); !errors.Is(err, ErrVerify) {
			t.Errorf("Size(%x) = %v", ob, err)
		}
	}
}

func BenchmarkHasher(b *testing.B) {
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	var h Hasher
	for b.Loop() {
		h.Write(data)
	}
	h.Sum()
}

// FuzzVerify checks arbitrary trees and bytes against a real blob's root:
// nothing panics, and only the blob's own tree and bytes verify.
func FuzzVerify(f *testing.F) {
	data := make([]byte, 3*GroupSize+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var h Hasher
	h.Write(data)
	root, ob := h.Sum()
	f.Add(ob, data[:GroupSize], int64(0))
	f.Add(ob, data[2*GroupSize:], int64(2*GroupSize))
	f.Fuzz(func(t *testing.T, tree, chunk []byte, off int64) {
		if err := VerifyOutboard(root, tree); err == nil && !bytes.Equal(tree, ob) {
			t.Fatalf("a tree of %d bytes that is not the blob's verified", len(tree))
		}
		if off < 0 || off%GroupSize != 0 || off > int64(len(data)) {
			return
		}
		err := VerifyGroups(root, ob, off, chunk)
		want := off+int64(len(chunk)) <= int64(len(data)) && bytes.Equal(chunk, data[off:off+int64(len(chunk))])
		if err == nil && !want {
			t.Fatalf("%d bytes at %d that are not the blob's verified", len(chunk), off)
		}
	})
}

// The streaming verifier accepts every honest tree in pieces of any size,
// and refuses a flipped bit at the node that holds it, a tree cut short
// and bytes beyond the end.
func TestOutboardVerifier(t *testing.T) {
	for _, size := range []int{0, 1, GroupSize, GroupSize + 1, 5*GroupSize + 7, 64 * GroupSize, 100*GroupSize + 3} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 7)
		}
		var h Hasher
		h.Write(data)
		root, ob := h.Sum()
		for _, piece := range []int{1, 7, 64, 1000, len(ob) + 1} {
			v := NewOutboardVerifier(root)
			for off := 0; off < len(ob); off += piece {
				if _, err := v.Write(ob[off:min(off+piece, len(ob))]); err != nil {
					t.Fatalf("size %d, pieces of %d: %v", size, piece, err)
				}
			}
			if err := v.Close(); err != nil {
				t.Fatalf("size %d, pieces of %d: %v", size, piece, err)
			}
		}
		if len(ob) > 8 {
			bad := bytes.Clone(ob)
			bad[len(bad)-1] ^= 1
			v := NewOutboardVerifier(root)
			_, err := v.Write(bad)
			if err == nil {
				err = v.Close()
			}
			if !errors.Is(err, ErrVerify) {
				t.Fatalf("size %d: a flipped bit in the last node: %v", size, err)
			}
			v = NewOutboardVerifier(root)
			v.Write(ob[:len(ob)-1])
			if err := v.Close(); !errors.Is(err, ErrVerify) {
				t.Fatalf("size %d: a tree cut short: %v", size, err)
			}
		}
		v := NewOutboardVerifier(root)
		if _, err := v.Write(append(bytes.Clone(ob), make([]byte, 64)...)); !errors.Is(err, ErrVerify) {
			t.Fatalf("size %d: 64 bytes past the end: %v", size, err)
		}
	}
	// A garbage tree for a huge blob is refused at its first node.
	var h Hasher
	h.Write([]byte("x"))
	root, _ := h.Sum()
	v := NewOutboardVerifier(root)
	head := binary.LittleEndian.AppendUint64(nil, 64<<30)
	if _, err := v.Write(head); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Write(make([]byte, 64)); !errors.Is(err, ErrVerify) {
		t.Fatalf("a garbage first node of a 64 GiB tree: %v", err)
	}
}

// FuzzOutboardVerifier: on any bytes, the streaming verifier agrees with
// VerifyOutboard, whatever the pieces they arrive in.
func FuzzOutboardVerifier(f *testing.F) {
	var h Hasher
	h.Write(bytes.Repeat([]byte{3}, 3*GroupSize+5))
	root, ob := h.Sum()
	f.Add(ob, uint8(7))
	f.Add(ob[:20], uint8(1))
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, tree []byte, piece uint8) {
		want := VerifyOutboard(root, tree)
		v := NewOutboardVerifier(root)
		step := int(piece) + 1
		var err error
		for off := 0; off < len(tree) && err == nil; off += step {
			_, err = v.Write(tree[off:min(off+step, len(tree))])
		}
		if err == nil {
			err = v.Close()
		}
		if (err == nil) != (want == nil) {
			t.Fatalf("streaming: %v; whole: %v", err, want)
		}
	})
}
