package faults

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/testkit"
)

// blobSize draws a blob size: mostly small, some of a few hundred KiB,
// a few of several MiB so that kills land mid-transfer.
func blobSize(r *rand.Rand) int {
	switch x := r.IntN(100); {
	case x < 80:
		return 1 + r.IntN(64<<10)
	case x < 97:
		return 64<<10 + r.IntN(960<<10)
	default:
		return 2<<20 + r.IntN(4<<20)
	}
}

// TestKill9DuringTransfers writes blobs and rows on a device daemon while
// a server daemon pulls them, and kills one or the other with SIGKILL at
// random moments, restarting it at once. After every restart each blob the
// restarted node shows must hash to its ref; in the end the server must
// hold every blob, verified, and each blob's two shares must add up.
func TestKill9DuringTransfers(t *testing.T) {
	t.Parallel()
	transfers, kills := 150, 6
	if *long {
		transfers, kills = 1000, 40
	}
	seed := seedOf(t)
	r := rand.New(rand.NewPCG(seed, 1))
	dev := newProc(t, "device", 500*time.Millisecond)
	srv := newProc(t, "server", 500*time.Millisecond)
	g := group(t, dev, "files", "f/", []*proc{srv}, "server")
	start := time.Now()

	// The writer: every transfer is retried until the device took it.
	var (
		mu      sync.Mutex
		refs    []syncnode.BlobRef
		retries atomic.Int64
	)
	written := make(chan error, 1)
	wr := rand.New(rand.NewPCG(seed, 2))
	go func() {
		for i := range transfers {
			time.Sleep(time.Duration(wr.IntN(40)) * time.Millisecond) // spread the writes over the kills
			data := testkit.RandomBytes(blobSize(wr), wr.Uint64())
			key := fmt.Sprintf("f/%05d", i)
			deadline := time.Now().Add(60 * time.Second)
			for {
				ref, err := dev.putBlobRow(g, key, data)
				if err == nil {
					mu.Lock()
					refs = append(refs, ref)
					mu.Unlock()
					break
				}
				if time.Now().After(deadline) {
					written <- fmt.Errorf("transfer %d never taken: %w", i, err)
					return
				}
				retries.Add(1)
				time.Sleep(50 * time.Millisecond)
			}
		}
		written <- nil
	}()

	// The killer, until the writer is done and enough kills happened.
	var killed = map[string]int{}
	checked := 0
	writing := true
	for writing || killed["server"]+killed["device"] < kills {
		select {
		case err := <-written:
			if err != nil {
				t.Fatal(err)
			}
			writing = false
		case <-time.After(time.Duration(100+r.IntN(800)) * time.Millisecond):
		}
		victim := srv
		if r.IntN(3) == 0 {
			victim = dev
		}
		victim.kill()
		killed[victim.name]++
		time.Sleep(time.Duration(r.IntN(300)) * time.Millisecond)
		victim.start()
		seen, err := victim.verifyAll()
		if err != nil {
			t.Fatalf("after kill %d of %s: %v\n%s", killed[victim.name], victim.name, err, victim.logTail())
		}
		checked += len(seen)
	}
	mu.Lock()
	all := append([]syncnode.BlobRef(nil), refs...)
	mu.Unlock()
	if len(all) != transfers {
		t.Fatalf("%d of %d transfers taken", len(all), transfers)
	}
	t.Logf("%d kills (server %d, device %d), writes retried %d times, %d blobs verified at restarts",
		killed["server"]+killed["device"], killed["server"], killed["device"], retries.Load(), checked)

	// Every transfer completes: the server holds every blob, verified,
	// with both shares; the device holds none of them any more.
	var held map[syncnode.BlobRef]api.BlobInfo
	testkit.WaitFor(t, 5*time.Minute, "the server to hold every blob with both shares", func() bool {
		infos, err := srv.blobs()
		if err != nil {
			return false
		}
		n := 0
		for _, in := range infos {
			if in.Shares[syncnode.GroupID(g)] == 2 {
				n++
			}
		}
		return n == transfers
	})
	held, err := srv.verifyAll()
	if err != nil {
		t.Fatal(err)
	}
	var devShares int
	for _, ref := range all {
		if _, ok := held[ref]; !ok {
			t.Fatalf("blob %s lost", ref)
		}
		if in, err := dev.cl.StatBlob(dev.ctx(), ref.String()); err == nil {
			devShares += in.Shares[syncnode.GroupID(g)]
		}
	}
	if devShares != 0 {
		t.Fatalf("the device still holds %d shares besides the server's 2 per blob: totals not conserved", devShares)
	}
	t.Logf("%d transfers survived %d SIGKILLs in %v: 0 lost, 0 corrupt or partial blobs visible, shares 2 per blob",
		transfers, killed["server"]+killed["device"], time.Since(start).Round(time.Millisecond))
}
