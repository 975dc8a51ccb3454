// Package demo runs syncnode's demonstration: a small mesh on loopback in
// one process — a phone, a laptop and a server — through which a blob
// referenced by a row travels to the server, whose ownership shares free
// the phone to evict it. It prints each step.
package demo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/node"
)

// BlobSize is the size of the demo's blob.
const BlobSize = 32 << 20

// Run runs the demo with its nodes' data under dir, printing to w.
func Run(ctx context.Context, dir string, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	say := func(f string, a ...any) {
		fmt.Fprintf(w, "%6.2fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(f, a...))
	}
	open := func(name string, budget int64) (*node.Node, error) {
		fc := fetcher.DefaultConfig()
		fc.FirstScan, fc.ScanInterval = time.Second, 2*time.Second
		return node.Open(node.Config{DataDir: filepath.Join(dir, name), SyncInterval: time.Second,
			IOTimeout: 10 * time.Second, Fetcher: &fc, BlobBudget: budget})
	}
	phone, err := open("phone", BlobSize/2)
	if err != nil {
		return err
	}
	defer phone.Close()
	laptop, err := open("laptop", 0)
	if err != nil {
		return err
	}
	defer laptop.Close()
	server, err := open("server", 0)
	if err != nil {
		return err
	}
	defer server.Close()
	say("three nodes on loopback: phone %s, laptop %s, server %s", short(phone), short(laptop), short(server))

	spec, err := phone.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		return err
	}
	g := spec.ID
	for _, m := range []struct {
		n   *node.Node
		dev syncnode.DevType
	}{{laptop, syncnode.Normal}, {server, syncnode.Server}} {
		inv, err := phone.Invite(g, m.n.ID(), m.dev, time.Hour)
		if err != nil {
			return err
		}
		if _, err := m.n.JoinGroup(ctx, inv, phone.Host().Addrs()); err != nil {
			return err
		}
	}
	say("phone created the private syncgroup %q; the laptop joined as a normal device, the server as a server", spec.Name)

	info, err := phone.PutBlob(ctx, io.LimitReader(rand.Reader, BlobSize))
	if err != nil {
		return err
	}
	value, err := msgpack.Marshal(map[string]any{"title": "beach", "bytes": info.Size, "image": info.Ref})
	if err != nil {
		return err
	}
	if _, err := phone.PutRow(g, "photos/beach.jpg", value); err != nil {
		return err
	}
	say("phone stored a %d MiB blob %s and wrote the row photos/beach.jpg that references it", info.Size>>20, info.Ref)
	sh, _ := phone.BlobShares(info.Ref)
	say("phone, the blob's creator, holds %d ownership shares; its budget is %d MiB", sh[g], BlobSize>>21)
	if err := phone.RemoveBlob(info.Ref); errors.Is(err, node.ErrPinned) {
		say("phone may not evict it yet: %v", err)
	} else {
		return fmt.Errorf("demo: eviction before the server copy was not refused: %v", err)
	}

	if err := wait(ctx, func() bool {
		sp, err := laptop.Signpost(info.Ref)
		return err == nil && len(sp.Locations) > 0
	}); err != nil {
		return fmt.Errorf("demo: laptop never learned the blob's signpost: %w", err)
	}
	sp, _ := laptop.Signpost(info.Ref)
	say("laptop got the row; its signpost says the blob is at %d location(s), in group(s) %v", len(sp.Locations), sp.Groups())

	if err := wait(ctx, func() bool {
		s, _ := server.BlobShares(info.Ref)
		return server.HasBlob(info.Ref) && s[g] == 2
	}); err != nil {
		why, _ := server.Why(info.Ref)
		return fmt.Errorf("demo: server did not pull the blob (%+v): %w", why, err)
	}
	sh, _ = server.BlobShares(info.Ref)
	say("server's background fetcher pulled the blob, verified against its BLAKE3 tree, and took %d shares", sh[g])

	last := node.Pending
	_, err = laptop.FetchBlob(ctx, info.Ref, node.FetchOptions{Priority: node.PriorityHigh, Status: func(s node.Status) {
		if s.State != last {
			last = s.State
			say("laptop fetch: %s %s", s.State, progress(s))
		}
	}})
	if err != nil {
		return err
	}

	// The phone's escrow settles when the server's acceptance reaches it;
	// then its eviction pass (run here, and in the background) drops it.
	if err := wait(ctx, func() bool {
		if _, err := phone.Evict(); err != nil {
			return false
		}
		return !phone.HasBlob(info.Ref)
	}); err != nil {
		return fmt.Errorf("demo: the phone kept the blob over its budget: %w", err)
	}
	say("phone was over its budget and evicted its copy; the server holds the shares")
	var total int
	for _, n := range []*node.Node{phone, laptop, server} {
		s, _ := n.BlobShares(info.Ref)
		total += s[g]
	}
	say("shares in the group: %d (the creator's 2, moved, none made or lost). Nothing was lost.", total)
	return nil
}

func progress(s node.Status) string {
	if s.Total == 0 {
		return ""
	}
	return fmt.Sprintf("%d/%d MiB from %d holder(s)", s.Received>>20, s.Total>>20, len(s.Holders))
}

func short(n *node.Node) string {
	s := n.ID().String()
	return s[len(s)-6:]
}

// wait polls cond until it holds or ctx ends.
func wait(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// RunTemp runs the demo in a temporary directory that it removes after.
func RunTemp(ctx context.Context, w io.Writer) error {
	dir, err := os.MkdirTemp("", "syncnode-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	return Run(ctx, dir, w)
}
