// Package nodetest holds the helpers multi-node tests share: node configs
// with short periods on free loopback ports, groups, blobs with rows, share
// totals and condition waits.
package nodetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/nodeaccess"
	"github.com/syncnode/syncnode/internal/ports"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/ownership"
)

// Config is a node config in dir with the sync and scan periods shortened
// and a free loopback port, so that a node restarted with it is found where
// it was.
func Config(t testing.TB, dir string) node.Config {
	fc := fetcher.Config{}
	fc.BaseDelay, fc.Jitter, fc.MaxShift = 20*time.Millisecond, 20*time.Millisecond, 5
	fc.FirstScan, fc.ScanInterval = 100*time.Millisecond, 500*time.Millisecond
	return node.Config{DataDir: dir, SyncInterval: 250 * time.Millisecond, IOTimeout: 5 * time.Second,
		Fetcher: &fc, ListenAddrs: []string{FreeAddr(t)}, NoLAN: true}
}

// FreeAddr returns a loopback TCP multiaddr whose port is free now and
// that no outgoing connection will take (ports.Free): a node restarted on
// it finds it still free.
func FreeAddr(t testing.TB) string {
	t.Helper()
	p, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p)
}

// access keeps the ledger and host of each node Open opened, until its
// test ends.
var access sync.Map // *node.Node → *nodeaccess.Access

// Open opens a node with cfg; Host and Ledger reach its host and ledger.
func Open(t testing.TB, cfg node.Config) *node.Node {
	t.Helper()
	if cfg.Access == nil {
		cfg.Access = new(nodeaccess.Access)
	}
	n, err := node.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	access.Store(n, cfg.Access)
	t.Cleanup(func() { access.Delete(n) })
	return n
}

// accessOf returns what Open kept of n.
func accessOf(n *node.Node) *nodeaccess.Access {
	a, ok := access.Load(n)
	if !ok {
		panic("nodetest: a node not opened by nodetest.Open")
	}
	return a.(*nodeaccess.Access)
}

// Host returns the libp2p host of n, which Open or Start opened: a test
// that injects faults dials, serves and edits the peerstore with it.
func Host(n *node.Node) host.Host { return accessOf(n).Host }

// Ledger returns the share ledger of n, which Open or Start opened: a
// test that makes share transfers behind the node's back uses it.
func Ledger(n *node.Node) *ownership.Ledger { return accessOf(n).Ledger }

// Start opens a node in a fresh directory, closed when the test ends.
func Start(t testing.TB, mod ...func(*node.Config)) *node.Node {
	t.Helper()
	cfg := Config(t, t.TempDir())
	for _, m := range mod {
		m(&cfg)
	}
	n := Open(t, cfg)
	t.Cleanup(func() { n.Close() })
	return n
}

// CreateGroup creates a private group whose prefix is name + "/".
func CreateGroup(t testing.TB, admin *node.Node, name string, dev syncnode.DevType) syncnode.GroupID {
	t.Helper()
	spec, err := admin.CreateGroup(name, []string{name + "/"}, true, dev)
	if err != nil {
		t.Fatal(err)
	}
	return spec.ID
}

// Join has n join g with an invitation from admin.
func Join(t testing.TB, admin, n *node.Node, g syncnode.GroupID, dev syncnode.DevType) {
	t.Helper()
	inv, err := admin.Invite(g, n.ID(), dev, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.JoinGroup(t.Context(), inv); err != nil {
		t.Fatal(err)
	}
}

// PutBlobRow stores data as a blob on n and writes a row at key naming it.
func PutBlobRow(t testing.TB, n *node.Node, g syncnode.GroupID, key string, data []byte) syncnode.BlobRef {
	t.Helper()
	info, err := n.PutBlob(t.Context(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if info.Ref != testkit.Ref(data) {
		t.Fatalf("put returned %s, BLAKE3 of the bytes is %s", info.Ref, testkit.Ref(data))
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

// TotalShares adds up the shares of ref in g over nodes.
func TotalShares(t testing.TB, nodes []*node.Node, ref syncnode.BlobRef, g syncnode.GroupID) int {
	t.Helper()
	total := 0
	for _, n := range nodes {
		sh, err := n.BlobShares(ref)
		if err != nil {
			t.Fatal(err)
		}
		total += sh[g]
	}
	return total
}

// ReadAll reads a blob n holds, whole.
func ReadAll(t testing.TB, n *node.Node, ref syncnode.BlobRef) []byte {
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

// RunWithBinary builds the syncnode command into a temporary directory,
// runs m's tests with *bin naming it, removes it, and exits with the
// tests' code: the TestMain of packages that run daemons as processes.
func RunWithBinary(m *testing.M, bin *string) {
	dir, err := os.MkdirTemp("", "syncnode-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, "syncnode")
	build := exec.Command("go", "build", "-o", *bin, "github.com/syncnode/syncnode/cmd/syncnode")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building syncnode:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
