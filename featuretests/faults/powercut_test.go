package faults

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/powercut"
	"github.com/syncnode/syncnode/internal/testkit"
)

// mountCut mounts a power-cut file system for one device's data and
// returns it with the data directory on it; it is unmounted when the test
// ends, after the device's daemon is gone.
func mountCut(t *testing.T, name string) (*powercut.FS, string) {
	t.Helper()
	base := t.TempDir()
	back, mnt := filepath.Join(base, "back"), filepath.Join(base, "mnt")
	for _, d := range []string{back, mnt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := powercut.Mount(back, mnt, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fs.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", name, err)
		}
	})
	return fs, filepath.Join(mnt, name)
}

// ackedRow is a row (and the blob it names, if data is not nil) whose
// write was acknowledged.
type ackedRow struct {
	key  string
	ref  syncnode.BlobRef
	data []byte
}

// TestPowerCutLosesNothingAcknowledged runs a phone and a server, each on
// a file system that loses every write not yet fsynced when its power is
// cut. Each round the phone stores blobs, writes rows naming them and rows
// naming none, and
// at a point drawn from the seed — at once, or while the server is
// fetching them and taking their shares — the power of one of them is cut
// (SIGKILL, then every unsynced write dropped) and it starts again. After
// each cut: every row acknowledged to the user is on the phone, every
// acknowledged blob has a verified copy somewhere and the group never
// holds more than two shares of it, and a row written after the restart
// reaches the server (a sequence number reused after a cut would make the
// server take it for a row it has). At the end the server holds every
// blob with both shares.
func TestPowerCutLosesNothingAcknowledged(t *testing.T) {
	testkit.SkipShortUnless(t, "SYNCNODE_FUSE_TESTS", "root and FUSE")
	if err := powercut.Available(); err != nil {
		t.Skipf("power cuts need FUSE: %v", err)
	}
	t.Parallel()
	seed := seedOf(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x90e7))
	rounds := 3
	if *long {
		rounds = 12
	}
	phoneFS, phoneDir := mountCut(t, "phone")
	serverFS, serverDir := mountCut(t, "server")
	phone := newProcAt(t, phoneDir, "phone", 100*time.Millisecond)
	server := newProcAt(t, serverDir, "server", 100*time.Millisecond)
	g := group(t, phone, "photos", "photos/", []*proc{server}, "server")

	var acked []ackedRow
	for round := range rounds {
		for i := range 1 + rng.IntN(4) {
			size := 32<<10 + rng.IntN(768<<10)
			if i%2 == 1 {
				size = 1 + rng.IntN(16<<10) // one group: one file, its tree its length
			}
			data := testkit.RandomBytes(size, seed+uint64(round*10+i))
			key := fmt.Sprintf("photos/%d-%d", round, i)
			ref, err := phone.putBlobRow(g, key, data)
			phone.must("put", err)
			acked = append(acked, ackedRow{key, ref, data})
		}
		victim, fs := phone, phoneFS
		mode := (int(seed%3) + round) % 3 // every three rounds, each mode once
		if mode == 0 {
			victim, fs = server, serverFS
		}
		// The cut comes at a point of the background work the seed picks
		// (the server fetching, shares moving), right after rows that
		// name no blob: no share step syncs the database for them. In one
		// mode of three the server is away meanwhile, so that the phone's
		// own disk is the rows' only home.
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		away := mode == 2
		if away {
			server.kill()
		}
		for i := range 1 + rng.IntN(3) {
			key := fmt.Sprintf("photos/%d-note-%d", round, i)
			_, err := phone.cl.PutRow(phone.ctx(), api.RowRequest{Group: g, Key: key, Value: json.RawMessage(`{"note": "a caption"}`)})
			phone.must("put a row", err)
			acked = append(acked, ackedRow{key: key})
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		victim.kill()
		if err := fs.Cut(); err != nil {
			t.Fatalf("round %d: power cut on %s: %v", round, victim.name, err)
		}
		t.Logf("round %d: power cut on %s (server away: %v); %d bytes of %d files were never synced", round, victim.name, away, fs.Stats().DroppedBytes, fs.Stats().DroppedFiles)
		victim.start()
		if away {
			// The server is not there to hand the rows back.
			for _, a := range acked {
				if _, err := phone.cl.GetRow(phone.ctx(), g, a.key); err != nil {
					t.Fatalf("round %d: row %s, acknowledged before the power cut, is gone from the phone: %v", round, a.key, err)
				}
			}
			// A row written now must not take the sequence number of
			// one the server holds already.
			key := fmt.Sprintf("photos/while-away-%d", round)
			_, err := phone.cl.PutRow(phone.ctx(), api.RowRequest{Group: g, Key: key, Value: json.RawMessage(`{"n": 2}`)})
			phone.must("row while the server is away", err)
			acked = append(acked, ackedRow{key: key})
			server.start()
			testkit.WaitFor(t, 30*time.Second, "the row written while the server was away reaches it", func() bool {
				_, err := server.cl.GetRow(server.ctx(), g, key)
				return err == nil
			})
		}

		for _, a := range acked {
			row, err := phone.cl.GetRow(phone.ctx(), g, a.key)
			if err != nil {
				t.Fatalf("round %d: row %s, acknowledged before the cut on %s, is gone from the phone: %v", round, a.key, victim.name, err)
			}
			if a.data == nil {
				continue
			}
			if !bytes.Contains(row.Value, []byte(a.ref.String())) {
				t.Fatalf("round %d: row %s reads %s", round, a.key, row.Value)
			}
			checkCopiesAndShares(t, round, g, a, phone, server)
		}
		key := fmt.Sprintf("photos/after-cut-%d", round)
		_, err := phone.cl.PutRow(phone.ctx(), api.RowRequest{Group: g, Key: key, Value: json.RawMessage(`{"n": 1}`)})
		phone.must("row after the cut", err)
		testkit.WaitFor(t, 30*time.Second, "the row written after the cut reaches the server", func() bool {
			_, err := server.cl.GetRow(server.ctx(), g, key)
			return err == nil
		})
	}
	testkit.WaitFor(t, 2*time.Minute, "the server holds every blob with both shares", func() bool {
		for _, a := range acked {
			if a.data == nil {
				continue
			}
			w, err := server.cl.Why(server.ctx(), a.ref.String())
			if err != nil || !w.Held || w.Shares[syncnode.GroupID(g)] != 2 {
				return false
			}
		}
		return true
	})
	for _, p := range []*proc{phone, server} {
		if _, err := p.verifyAll(); err != nil {
			t.Fatal(err)
		}
	}
}

// checkCopiesAndShares checks, as far as a read of two nodes one after the
// other can, that a's blob has a verified copy and at most two shares in g.
func checkCopiesAndShares(t *testing.T, round int, g string, a ackedRow, procs ...*proc) {
	t.Helper()
	var held bool
	var total int
	for try := 0; ; try++ {
		held, total = false, 0
		for _, p := range procs {
			w, err := p.cl.Why(p.ctx(), a.ref.String())
			if err != nil {
				continue
			}
			held = held || w.Held
			total += w.Shares[syncnode.GroupID(g)]
		}
		if (held && total <= 2) || try == 20 {
			break
		}
		time.Sleep(50 * time.Millisecond) // a transfer between the two reads
	}
	if !held {
		t.Fatalf("round %d: blob of %s, acknowledged, has no copy left", round, a.key)
	}
	if total > 2 {
		t.Fatalf("round %d: blob of %s has %d shares in the group", round, a.key, total)
	}
}

// TestPowerCutWhileLeaving: a laptop stores blobs, writes the rows naming
// them and leaves the group at once, handing its shares to the server;
// at a point of the hand-off drawn from the seed the power of the laptop
// or of the server is cut. After the restart every acknowledged blob has
// a verified copy on a member or on the laptop, the group holds at most
// two shares of it (a node out of the group holds none), and the laptop
// is either still a member or out with nothing pinned. It joins again
// for the next round. At the end the server holds every blob with both
// shares.
func TestPowerCutWhileLeaving(t *testing.T) {
	testkit.SkipShortUnless(t, "SYNCNODE_FUSE_TESTS", "root and FUSE")
	if err := powercut.Available(); err != nil {
		t.Skipf("power cuts need FUSE: %v", err)
	}
	t.Parallel()
	seed := seedOf(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x1ea7))
	rounds := 3
	if *long {
		rounds = 10
	}
	laptopFS, laptopDir := mountCut(t, "laptop")
	serverFS, serverDir := mountCut(t, "server")
	phone := newProc(t, "phone", 100*time.Millisecond)
	laptop := newProcAt(t, laptopDir, "laptop", 100*time.Millisecond)
	server := newProcAt(t, serverDir, "server", 100*time.Millisecond)
	g := group(t, phone, "photos", "photos/", []*proc{server}, "server")
	join := func() {
		inv, err := phone.cl.Invite(phone.ctx(), api.InviteRequest{Group: g, Peer: laptop.id, DevType: "normal"})
		phone.must("invite", err)
		_, err = laptop.cl.Join(laptop.ctx(), inv)
		laptop.must("join", err)
	}
	member := func() bool { return memberOf(phone, g, laptop.id) }
	join()

	var acked []ackedRow
	for round := range rounds {
		for i := range 1 + rng.IntN(3) {
			data := testkit.RandomBytes(256<<10+rng.IntN(2<<20), seed+uint64(round*10+i))
			key := fmt.Sprintf("photos/laptop-%d-%d", round, i)
			ref, err := laptop.putBlobRow(g, key, data)
			laptop.must("put", err)
			acked = append(acked, ackedRow{key, ref, data})
		}
		left := make(chan error, 1)
		go func() {
			_, err := laptop.cl.LeaveWith(laptop.ctx(), api.GroupRequest{Group: g})
			left <- err
		}()
		victim, fs := laptop, laptopFS
		if rng.IntN(2) == 0 {
			victim, fs = server, serverFS
		}
		// Within the hand-off: rounds, asks, the server's fetch.
		time.Sleep(time.Duration(rng.IntN(60)) * time.Millisecond)
		victim.kill()
		if err := fs.Cut(); err != nil {
			t.Fatalf("round %d: power cut on %s: %v", round, victim.name, err)
		}
		victim.start()
		err := <-left
		t.Logf("round %d: power cut on %s during the laptop's leave (leave: %v); %d bytes of %d files were never synced",
			round, victim.name, err, fs.Stats().DroppedBytes, fs.Stats().DroppedFiles)
		for _, a := range acked {
			checkCopiesAndShares(t, round, g, a, phone, server, laptop)
		}
		// A leave that the cut stopped after the laptop's tombstone was
		// stored finishes after the restart: the laptop tells the others.
		testkit.WaitFor(t, time.Minute, "the laptop and the phone to agree whether the laptop is a member", func() bool {
			return memberOf(laptop, g, laptop.id) == member()
		})
		if !member() {
			join()
		}
	}
	testkit.WaitFor(t, 2*time.Minute, "the server holds every blob with both shares", func() bool {
		for _, a := range acked {
			w, err := server.cl.Why(server.ctx(), a.ref.String())
			if err != nil || !w.Held || w.Shares[syncnode.GroupID(g)] != 2 {
				return false
			}
		}
		return true
	})
	for _, a := range acked {
		checkCopiesAndShares(t, rounds, g, a, phone, server, laptop)
	}
}

// memberOf reports whether p holds peer for a member of group g; a group
// p does not sync has no members there.
func memberOf(p *proc, g, peer string) bool {
	ms, err := p.cl.Members(p.ctx(), g)
	return err == nil && slices.ContainsFunc(ms, func(m api.Member) bool { return m.Peer == peer })
}
