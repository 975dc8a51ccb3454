// Package node wires a syncnode together: it opens the data directory's
// stores and exposes the Go API that the daemon, the CLI and the feature
// tests use.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/signpost"
)

// ErrPinned reports a blob that cannot be removed because this device still
// holds ownership shares of it.
var ErrPinned = errors.New("node: blob is pinned by ownership shares")

// Config configures a node.
type Config struct {
	// DataDir holds the node's stores: blobs/ and db/.
	DataDir string
	// Log receives the node's logs; nil discards them.
	Log *slog.Logger
}

// Node is one syncnode device.
type Node struct {
	log       *slog.Logger
	db        *badger.DB
	blobs     *blobstore.Disk
	signposts *signpost.Store
	ledger    *ownership.Ledger
}

// Open opens (creating if needed) the node's data directory.
func Open(cfg Config) (*Node, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("node: no data directory")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	blobs, err := blobstore.OpenDisk(filepath.Join(cfg.DataDir, "blobs"), log)
	if err != nil {
		return nil, err
	}
	db, err := kv.Open(filepath.Join(cfg.DataDir, "db"), log)
	if err != nil {
		blobs.Close()
		return nil, err
	}
	return &Node{
		log: log, db: db, blobs: blobs,
		signposts: signpost.NewStore(db),
		ledger:    ownership.NewLedger(db),
	}, nil
}

// Close closes the node's stores.
func (n *Node) Close() error {
	return errors.Join(n.db.Close(), n.blobs.Close())
}

// PutBlob stores the bytes of r as a blob and returns its ref and size.
func (n *Node) PutBlob(ctx context.Context, r io.Reader) (blobstore.Info, error) {
	return n.blobs.Put(ctx, r, syncnode.BlobRef{})
}

// OpenBlob opens a stored blob for reading at any offset.
func (n *Node) OpenBlob(ref syncnode.BlobRef) (blobstore.Reader, error) { return n.blobs.Open(ref) }

// StatBlob describes a stored blob.
func (n *Node) StatBlob(ref syncnode.BlobRef) (blobstore.Info, error) { return n.blobs.Stat(ref) }

// BlobShares returns this device's ownership shares of ref by syncgroup.
func (n *Node) BlobShares(ref syncnode.BlobRef) (map[syncnode.GroupID]int, error) {
	return n.ledger.Shares(ref)
}

// ListBlobs calls fn for every stored blob.
func (n *Node) ListBlobs(fn func(blobstore.Info) error) error { return n.blobs.List(fn) }

// RemoveBlob deletes a stored blob, unless this device holds shares of it:
// then the error wraps ErrPinned and the blob stays.
func (n *Node) RemoveBlob(ref syncnode.BlobRef) error {
	ok, err := n.ledger.MayEvict(ref)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s", ErrPinned, ref)
	}
	return n.blobs.Delete(ref)
}

// Blobs returns the node's blob store.
func (n *Node) Blobs() blobstore.Store { return n.blobs }

// Ledger returns the node's ownership-share ledger.
func (n *Node) Ledger() *ownership.Ledger { return n.ledger }

// Signposts returns the node's signpost store.
func (n *Node) Signposts() *signpost.Store { return n.signposts }
