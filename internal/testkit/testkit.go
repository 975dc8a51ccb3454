// Package testkit holds the helpers every test of syncnode shares:
// waiting on a condition with a deadline, seeded random bytes, the BLAKE3
// blob ref of bytes computed apart from any store, and the heap a piece
// of work keeps.
package testkit

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"
	"time"

	"lukechampine.com/blake3"

	"github.com/syncnode/syncnode"
)

// WaitFor polls cond until it holds, failing t if timeout passes first;
// what names the condition in the failure. It polls after 1 ms, then
// doubling to every 20 ms: quick conditions cost little wall time, long
// waits little CPU.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// RandomBytes returns size bytes drawn from seed: the same seed, the same
// bytes.
func RandomBytes(size int, seed uint64) []byte {
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i < size; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < size; j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	return data
}

// RandomReader returns a reader of the bytes RandomBytes(size, seed)
// returns, made as they are read rather than all at once.
func RandomReader(size int, seed uint64) io.Reader {
	return &randomReader{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), left: size}
}

type randomReader struct {
	r    *rand.Rand
	left int     // bytes still to read
	buf  [8]byte // bytes of the last draw, buf[next:] not yet read
	next int
}

func (r *randomReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if r.next == 0 {
		r.next = len(r.buf)
	}
	n := 0
	for n < len(p) && r.left > 0 {
		if r.next == len(r.buf) {
			binary.LittleEndian.PutUint64(r.buf[:], r.r.Uint64())
			r.next = 0
		}
		c := min(copy(p[n:], r.buf[r.next:]), r.left)
		n, r.next, r.left = n+c, r.next+c, r.left-c
	}
	return n, nil
}

// Ref returns the blob ref of data: its BLAKE3 hash, computed by the
// reference implementation rather than syncnode's own tree hasher.
func Ref(data []byte) syncnode.BlobRef { return syncnode.RefFromHash(blake3.Sum256(data)) }

// SkipShortUnless skips t under -short unless the environment variable
// env is set: the tests that need something beyond Go (root and network
// namespaces, a browser, S3 servers, FUSE) run in the short form only where
// asked to (.ci/run's second stage sets the variables), and always without
// -short. what says what the test needs.
func SkipShortUnless(t testing.TB, env, what string) {
	t.Helper()
	if testing.Short() && os.Getenv(env) == "" {
		t.Skipf("-short: skipping a test that needs %s (set %s to run it)", what, env)
	}
}

// HeapGrowth returns by how many bytes the live heap grew while fn ran,
// measured after a collection before and after: what fn's results keep.
func HeapGrowth(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.GC()
	runtime.ReadMemStats(&after)
	return after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
}
