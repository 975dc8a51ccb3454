package sim

import (
	"bytes"
	"testing"
	"time"
)

// TestChurnShort runs a 20-node mesh with crashes, partitions, members
// leaving and ejected (and invited back) and tight budgets, and fails if
// any blob is lost or a share total is wrong.
func TestChurnShort(t *testing.T) {
	var log bytes.Buffer
	rep, err := Run(t.Context(), Config{Devices: 12, Leaves: 4, Servers: 4, Blobs: 40, BlobSize: 64 << 10,
		Budget: 256 << 10, Crashes: 4, Partitions: 2, Departures: 2, Ejections: 2, Settle: 60 * time.Second, Seed: 1, Dir: t.TempDir()}, &log)
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
	if rep.Lost != 0 || rep.NotOnServer != 0 || rep.BadShares != 0 || rep.SharesWithoutCopy != 0 || rep.PinnedAfterServer != 0 {
		t.Fatalf("churn: %+v", rep)
	}
}
