package blobstore_test

import (
	"log/slog"
	"testing"

	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/storetest"
)

func TestDiskConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blobstore.Store {
		d, err := blobstore.OpenDisk(t.TempDir(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	})
}

func TestMemConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blobstore.Store { return blobstore.NewMem() })
}
