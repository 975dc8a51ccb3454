// Package testkit holds the helpers every test of syncnode shares:
// waiting on a condition with a deadline, seeded random bytes, and the
// BLAKE3 blob ref of bytes computed apart from any store.
package testkit

import (
	"math/rand/v2"
	"os"
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
