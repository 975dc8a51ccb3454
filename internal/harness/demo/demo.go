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
	d := &demo{dir: dir, w: w, start: time.Now()}
	defer d.close()
	if err := d.setUp(ctx); err != nil {
		return err
	}
	ref, err := d.store(ctx)
	if err != nil {
		return err
	}
	if err := d.spread(ctx, ref); err != nil {
		return err
	}
	return d.evict(ctx, ref)
}

// demo is the demonstration's three nodes and its group.
type demo struct {
	dir                   string
	w                     io.Writer
	start                 time.Time
	phone, laptop, server *node.Node
	g                     syncnode.GroupID
}

func (d *demo) say(f string, a ...any) {
	fmt.Fprintf(d.w, "%6.2fs  %s\n", time.Since(d.start).Seconds(), fmt.Sprintf(f, a...))
}

func (d *demo) open(name string, budget int64) (*node.Node, error) {
	fc := fetcher.Config{}
	fc.FirstScan, fc.ScanInterval = time.Second, 2*time.Second
	return node.Open(node.Config{DataDir: filepath.Join(d.dir, name), SyncInterval: time.Second,
		IOTimeout: 10 * time.Second, Fetcher: &fc, BlobBudget: budget, NoLAN: true})
}

func (d *demo) close() {
	for _, n := range []*node.Node{d.phone, d.laptop, d.server} {
		if n != nil {
			n.Close()
		}
	}
}

// setUp opens the phone (with a budget half the blob), the laptop and the
// server, and has the phone create a group the others join.
func (d *demo) setUp(ctx context.Context) (err error) {
	if d.phone, err = d.open("phone", BlobSize/2); err != nil {
		return err
	}
	if d.laptop, err = d.open("laptop", 0); err != nil {
		return err
	}
	if d.server, err = d.open("server", 0); err != nil {
		return err
	}
	d.say("three nodes on loopback: phone %s, laptop %s, server %s", short(d.phone), short(d.laptop), short(d.server))
	spec, err := d.phone.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		return err
	}
	d.g = spec.ID
	for _, m := range []struct {
		n   *node.Node
		dev syncnode.DevType
	}{{d.laptop, syncnode.Normal}, {d.server, syncnode.Server}} {
		inv, err := d.phone.Invite(d.g, m.n.ID(), m.dev, time.Hour)
		if err != nil {
			return err
		}
		if _, err := m.n.JoinGroup(ctx, inv); err != nil {
			return err
		}
	}
	d.say("phone created the private syncgroup %q; the laptop joined as a normal device, the server as a server", spec.Name)
	return nil
}

// store has the phone store a blob and write a row naming it; the phone
// may not evict it yet.
func (d *demo) store(ctx context.Context) (syncnode.BlobRef, error) {
	info, err := d.phone.PutBlob(ctx, io.LimitReader(rand.Reader, BlobSize))
	if err != nil {
		return syncnode.BlobRef{}, err
	}
	value, err := msgpack.Marshal(map[string]any{"title": "beach", "bytes": info.Size, "image": info.Ref})
	if err != nil {
		return syncnode.BlobRef{}, err
	}
	if _, err := d.phone.PutRow(d.g, "photos/beach.jpg", value); err != nil {
		return syncnode.BlobRef{}, err
	}
	d.say("phone stored a %d MiB blob %s and wrote the row photos/beach.jpg that references it", info.Size>>20, info.Ref)
	sh, _ := d.phone.BlobShares(info.Ref)
	d.say("phone, the blob's creator, holds %d ownership shares; its budget is %d MiB", sh[d.g], BlobSize>>21)
	err = d.phone.RemoveBlob(info.Ref)
	if !errors.Is(err, node.ErrPinned) {
		return syncnode.BlobRef{}, fmt.Errorf("demo: eviction before the server copy was not refused: %v", err)
	}
	d.say("phone may not evict it yet: %v", err)
	return info.Ref, nil
}

// spread waits for the laptop to learn of the blob and the server to pull
// it with its shares, then has the laptop fetch it.
func (d *demo) spread(ctx context.Context, ref syncnode.BlobRef) error {
	if err := wait(ctx, func() bool {
		sp, err := d.laptop.Signpost(ref)
		return err == nil && len(sp.Locations) > 0
	}); err != nil {
		return fmt.Errorf("demo: laptop never learned the blob's signpost: %w", err)
	}
	sp, _ := d.laptop.Signpost(ref)
	d.say("laptop got the row; its signpost says the blob is at %d location(s), in group(s) %v", len(sp.Locations), sp.Groups())
	if err := wait(ctx, func() bool {
		s, _ := d.server.BlobShares(ref)
		return d.server.HasBlob(ref) && s[d.g] == 2
	}); err != nil {
		why, _ := d.server.Why(ref)
		return fmt.Errorf("demo: server did not pull the blob (%+v): %w", why, err)
	}
	sh, _ := d.server.BlobShares(ref)
	d.say("server's background fetcher pulled the blob, verified against its BLAKE3 tree, and took %d shares", sh[d.g])
	last := node.Pending
	_, err := d.laptop.FetchBlob(ctx, ref, node.FetchOptions{Urgency: node.UrgencyHigh, Status: func(s node.Status) {
		if s.State != last {
			last = s.State
			d.say("laptop fetch: %s %s", s.State, progress(s))
		}
	}})
	return err
}

// evict waits for the phone, over its budget, to evict its copy once its
// escrow settles (when the server's acceptance reaches it), and counts
// the shares.
func (d *demo) evict(ctx context.Context, ref syncnode.BlobRef) error {
	if err := wait(ctx, func() bool {
		if _, err := d.phone.Evict(); err != nil {
			return false
		}
		return !d.phone.HasBlob(ref)
	}); err != nil {
		return fmt.Errorf("demo: the phone kept the blob over its budget: %w", err)
	}
	d.say("phone was over its budget and evicted its copy; the server holds the shares")
	var total int
	for _, n := range []*node.Node{d.phone, d.laptop, d.server} {
		s, _ := n.BlobShares(ref)
		total += s[d.g]
	}
	d.say("shares in the group: %d (the creator's 2, moved, none made or lost). Nothing was lost.", total)
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
