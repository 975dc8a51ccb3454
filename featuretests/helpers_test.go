package featuretests

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"lukechampine.com/blake3"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/node"
)

// config is a node config with the sync and scan periods shortened.
func config(t testing.TB, dir string) node.Config {
	fc := fetcher.DefaultConfig()
	fc.BaseDelay, fc.Jitter, fc.MaxShift = 20*time.Millisecond, 20*time.Millisecond, 5
	fc.FirstScan, fc.ScanInterval = 100*time.Millisecond, 500*time.Millisecond
	return node.Config{DataDir: dir, SyncInterval: 250 * time.Millisecond, IOTimeout: 5 * time.Second,
		Fetcher: &fc, ListenAddrs: []string{freeAddr(t)}}
}

// freeAddr returns a loopback TCP address whose port is free now, so a
// node restarted with the same config is found where it was.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port)
}

func open(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// start opens a node in a fresh directory, closed when the test ends.
func start(t *testing.T, mod ...func(*node.Config)) *node.Node {
	t.Helper()
	cfg := config(t, t.TempDir())
	for _, m := range mod {
		m(&cfg)
	}
	n := open(t, cfg)
	t.Cleanup(func() { n.Close() })
	return n
}

func createGroup(t *testing.T, admin *node.Node, name string, dev syncnode.DevType) syncnode.GroupID {
	t.Helper()
	spec, err := admin.CreateGroup(name, []string{name + "/"}, true, dev)
	if err != nil {
		t.Fatal(err)
	}
	return spec.ID
}

func join(t *testing.T, admin, n *node.Node, g syncnode.GroupID, dev syncnode.DevType) {
	t.Helper()
	inv, err := admin.Invite(g, n.ID(), dev, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.JoinGroup(t.Context(), inv, admin.Host().Addrs()); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randomBytes(size int, seed uint64) []byte {
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return data
}

// blake3Ref is the ref of data computed independently of syncnode's hasher.
func blake3Ref(data []byte) syncnode.BlobRef { return syncnode.RefFromHash(blake3.Sum256(data)) }

// putBlobRow stores data as a blob on n and writes a row at key naming it.
func putBlobRow(t *testing.T, n *node.Node, g syncnode.GroupID, key string, data []byte) syncnode.BlobRef {
	t.Helper()
	info, err := n.PutBlob(t.Context(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if info.Ref != blake3Ref(data) {
		t.Fatalf("put returned %s, BLAKE3 of the bytes is %s", info.Ref, blake3Ref(data))
	}
	v, err := msgpack.Marshal(map[string]any{"key": key, "blob": info.Ref})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.PutRow(g, key, v); err != nil {
		t.Fatal(err)
	}
	return info.Ref
}

func shares(t *testing.T, n *node.Node, ref syncnode.BlobRef, g syncnode.GroupID) int {
	t.Helper()
	sh, err := n.BlobShares(ref)
	if err != nil {
		t.Fatal(err)
	}
	return sh[g]
}

func totalShares(t *testing.T, nodes []*node.Node, ref syncnode.BlobRef, g syncnode.GroupID) int {
	t.Helper()
	total := 0
	for _, n := range nodes {
		total += shares(t, n, ref, g)
	}
	return total
}

// readAll reads a held blob whole.
func readAll(t *testing.T, n *node.Node, ref syncnode.BlobRef) []byte {
	t.Helper()
	r, err := n.OpenBlob(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, r.Size())
	if _, err := r.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf
}
