package featuretests

import (
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
)

// The shared multi-node helpers, under the short names these tests use.
var (
	config      = nodetest.Config
	freeAddr    = nodetest.FreeAddr
	createGroup = nodetest.CreateGroup
	join        = nodetest.Join
	waitFor     = testkit.WaitFor
	randomBytes = testkit.RandomBytes
	blake3Ref   = testkit.Ref
	putBlobRow  = nodetest.PutBlobRow
	totalShares = nodetest.TotalShares
)

func open(t *testing.T, cfg node.Config) *node.Node { return nodetest.Open(t, cfg) }

func start(t *testing.T, mod ...func(*node.Config)) *node.Node { return nodetest.Start(t, mod...) }

func shares(t *testing.T, n *node.Node, ref syncnode.BlobRef, g syncnode.GroupID) int {
	t.Helper()
	sh, err := n.BlobShares(ref)
	if err != nil {
		t.Fatal(err)
	}
	return sh[g]
}

// readAll reads a held blob whole.
func readAll(t *testing.T, n *node.Node, ref syncnode.BlobRef) []byte {
	return nodetest.ReadAll(t, n, ref)
}
