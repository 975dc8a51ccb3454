package baotree

import (
	"bytes"
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
