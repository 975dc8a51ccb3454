// Package demo runs syncnode's demonstration: what one device and a server
// do with a blob, told step by step.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/baotree"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/signpost"
)

// Run runs the demo in a fresh directory under dir, printing to w.
func Run(ctx context.Context, dir string, w io.Writer) error {
	say := func(f string, a ...any) { fmt.Fprintf(w, f+"\n", a...) }
	phone, err := node.Open(node.Config{DataDir: filepath.Join(dir, "phone")})
	if err != nil {
		return err
	}
	defer phone.Close()
	server, err := node.Open(node.Config{DataDir: filepath.Join(dir, "server")})
	if err != nil {
		return err
	}
	defer server.Close()

	const size = 32 << 20
	data := make([]byte, size)
	rand.Read(data)
	start := time.Now()
	info, err := phone.PutBlob(ctx, bytes.NewReader(data))
	if err != nil {
		return err
	}
	took := time.Since(start)
	say("phone: stored a %d MiB blob in %v (%.0f MB/s, hashed, tree built, fsynced)", size>>20, took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6)
	say("       ref  %s", info.Ref)
	say("       b3sum %s", info.Ref.Hex())
	const group syncnode.GroupID = "photos"
	if err := phone.Ledger().Grant(info.Ref, group, ownership.CreatorShares); err != nil {
		return err
	}
	say("phone: as the blob's creator it holds %d shares in %q", ownership.CreatorShares, group)
	if err := phone.RemoveBlob(info.Ref); errors.Is(err, node.ErrPinned) {
		say("phone: evicting it now is refused: %v", err)
	} else {
		return fmt.Errorf("eviction of a pinned blob was not refused: %v", err)
	}

	// The server learns of the blob and where it is.
	now := time.Now()
	var sp signpost.Signpost
	sp.AddGroup(group)
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return err
	}
	phoneID, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return err
	}
	sp.AddLocation(phoneID, signpost.Location{WhenSeen: now, Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}})
	if _, err := server.Signposts().Merge(info.Ref, sp); err != nil {
		return err
	}
	say("server: signpost for the blob: groups %v, holder %s", sp.Groups(), phoneID)

	// It fetches the blob range by range, each range verified against the
	// phone's tree before it is written; one range arrives corrupted.
	ob, err := phone.Blobs().Outboard(info.Ref)
	if err != nil {
		return err
	}
	part, err := server.Blobs().OpenPartial(info.Ref, ob)
	if err != nil {
		return err
	}
	src, err := phone.OpenBlob(info.Ref)
	if err != nil {
		return err
	}
	defer src.Close()
	const chunk = 64 * baotree.GroupSize
	buf := make([]byte, chunk)
	rejected := 0
	for off := int64(0); off < size; off += chunk {
		n, _ := src.ReadAt(buf, off)
		if off == 3*chunk {
			buf[17] ^= 1
			if err := part.WriteAt(buf[:n], off); errors.Is(err, syncnode.ErrHashMismatch) {
				rejected++
			}
			buf[17] ^= 1
		}
		if err := part.WriteAt(buf[:n], off); err != nil {
			return err
		}
	}
	if _, err := part.Commit(); err != nil {
		return err
	}
	say("server: fetched %d MiB in verified %d KiB ranges; %d corrupted range rejected and fetched again", size>>20, chunk>>10, rejected)

	// Ownership moves to the server, which outranks the phone.
	phonePrio := syncnode.Priority{DevType: syncnode.Normal, Distance: 1, ServerTime: now}
	serverPrio := syncnode.Priority{DevType: syncnode.Server, ServerTime: now}
	id := ownership.NewTransferID()
	tr, err := phone.Ledger().Offer(id, info.Ref, group, phonePrio, serverPrio, "")
	if err != nil {
		return err
	}
	if _, err := server.StatBlob(info.Ref); err != nil {
		return err
	}
	if err := server.Ledger().Accept(tr, true); err != nil {
		return err
	}
	keeps, err := phone.Ledger().Settle(info.Ref, id, true)
	if err != nil {
		return err
	}
	shares, _ := server.BlobShares(info.Ref)
	say("server: took %d shares (now %v); phone keeps the blob: %v", tr.N, shares, keeps)
	if err := phone.RemoveBlob(info.Ref); err != nil {
		return err
	}
	r, err := server.OpenBlob(info.Ref)
	if err != nil {
		return err
	}
	defer r.Close()
	got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil || !bytes.Equal(got, data) {
		return errors.New("server copy differs")
	}
	say("phone: evicted its copy; the server's copy is whole and verified. Nothing was lost.")
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
