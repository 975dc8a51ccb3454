package testkit

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// A RandomReader yields RandomBytes' bytes, whatever the sizes of the reads.
func TestRandomReaderMatchesRandomBytes(t *testing.T) {
	for _, size := range []int{0, 1, 7, 8, 9, 1000, 64<<10 + 3} {
		want := RandomBytes(size, uint64(size)+1)
		got, err := io.ReadAll(RandomReader(size, uint64(size)+1))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: %d bytes, err %v, equal %v", size, len(got), err, bytes.Equal(got, want))
		}
		got, err = io.ReadAll(iotest.OneByteReader(RandomReader(size, uint64(size)+1)))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d, one byte at a time: %d bytes, err %v", size, len(got), err)
		}
		if err := iotest.TestReader(RandomReader(size, uint64(size)+1), want); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
	}
}
