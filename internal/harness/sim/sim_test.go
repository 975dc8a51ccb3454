package sim

import (
	"bytes"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/syncnode/syncnode/blobstore/s3store"
	"github.com/syncnode/syncnode/internal/harness/s3faults"
	"github.com/syncnode/syncnode/internal/s3test"
)

// TestChurnShort runs a 20-node mesh with crashes, partitions, members
// leaving and ejected (and invited back) and tight budgets, and fails if
// any blob is lost or a share total is wrong. Under -short the mesh has
// 10 nodes and 30 blobs, with the same faults.
func TestChurnShort(t *testing.T) {
	t.Parallel()
	cfg := Config{Devices: 12, Leaves: 4, Servers: 4, Blobs: 40, BlobSize: 64 << 10,
		Budget: 256 << 10, Crashes: 4, Partitions: 2, Departures: 2, Ejections: 2, Unreferences: 6, Settle: 60 * time.Second, Seed: 1, Dir: t.TempDir()}
	if testing.Short() {
		cfg.Devices, cfg.Leaves, cfg.Servers, cfg.Blobs, cfg.Crashes = 6, 2, 2, 30, 3
	}
	var log bytes.Buffer
	rep, err := Run(t.Context(), cfg, &log)
	t.Logf("%s\n%s", log.String(), rep)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Crashes == 0 || rep.Partitions != 2 || rep.Departures+rep.Ejections+rep.Refused == 0 {
		t.Fatalf("churn without its faults: %d crashes, %d partitions, %d leaves, %d ejections, %d refused",
			rep.Crashes, rep.Partitions, rep.Departures, rep.Ejections, rep.Refused)
	}
	if rep.RowsFirst == 0 || rep.Fetches == 0 || rep.Removed+rep.RmRefused == 0 {
		t.Fatalf("churn without its operations: %+v", rep)
	}
	if rep.Unreferenced == 0 {
		t.Fatalf("churn without a row deleted or overwritten: %+v", rep)
	}
	if rep.Lost != 0 || rep.NotOnServer != 0 || rep.BadShares != 0 || rep.SharesWithoutCopy != 0 || rep.PinnedAfterServer != 0 || rep.Uncollected != 0 {
		t.Fatalf("churn: %+v", rep)
	}
}

var churnLong = flag.Bool("churn.long", false, "TestChurnOnFlakyObjectStore: 50 nodes, 200 blobs, more of every fault")

// TestChurnOnFlakyObjectStore is TestChurnShort with the servers' blobs
// on an object store (Versity), each behind a fault proxy: six times a
// server's store answers 503 or cuts reads short for a stretch of writes.
// With -churn.long: 50 nodes (8 of them servers), 200 blobs, 20 crashes,
// 4 partitions, 4 leaves, 4 ejections and 20 store faults.
func TestChurnOnFlakyObjectStore(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t, "churn")
	cfg := Config{Devices: 8, Leaves: 3, Servers: 3, Blobs: 40, BlobSize: 64 << 10,
		Budget: 256 << 10, Crashes: 3, Partitions: 1, Departures: 1, Ejections: 1, Unreferences: 4, Settle: 60 * time.Second, Seed: 2, Dir: t.TempDir(), StoreFaults: 6}
	if *churnLong {
		cfg.Devices, cfg.Leaves, cfg.Servers, cfg.Blobs, cfg.Crashes, cfg.Partitions, cfg.Departures, cfg.Ejections, cfg.StoreFaults =
			32, 10, 8, 200, 20, 4, 4, 4, 20
		cfg.Settle = 3 * time.Minute
	}
	cfg.Faults = make([]StoreFaults, cfg.Servers)
	for k := range cfg.Faults {
		cfg.Faults[k] = s3faults.New(t, srv.Addr)
	}
	cfg.ServerStore = func(k int) *s3store.Config {
		return &s3store.Config{Insecure: true, Bucket: "churn", Prefix: fmt.Sprintf("server%d", k), Creds: srv.Creds(), Timeout: 2 * time.Second}
	}
	var log bytes.Buffer
	rep, err := Run(t.Context(), cfg, &log)
	t.Logf("%s\n%s", log.String(), rep)
	if err != nil {
		t.Fatal(err)
	}
	if rep.StoreFaults == 0 {
		t.Fatal("no object-store fault ran")
	}
	if rep.Lost != 0 || rep.NotOnServer != 0 || rep.BadShares != 0 || rep.SharesWithoutCopy != 0 || rep.PinnedAfterServer != 0 || rep.Uncollected != 0 {
		t.Fatalf("churn on a flaky object store: %+v", rep)
	}
}
