package main

import (
	"bytes"
	"context"
	"log"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/node"
)

// TestDropReachesEveryDevice runs a phone (the admin), a laptop with a
// blob budget and a server, joined with the invitations photodrop prints:
// a file dropped into the phone's folder appears in the others' with the
// same bytes and mod time, and one dropped on the laptop in the phone's;
// the server keeps both blobs, and the laptop's store stays within its
// budget while its folder keeps both files.
func TestDropReachesEveryDevice(t *testing.T) {
	const budget = 400 << 10
	phone := nodetest.Start(t)
	laptop := nodetest.Start(t, func(c *node.Config) { c.BlobBudget = budget })
	server := nodetest.Start(t)

	g, err := setup(t.Context(), phone, true, "", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		n      *node.Node
		as     string
		server bool
	}{{laptop, laptop.ID().String(), false}, {server, server.ID().String() + ":server", true}} {
		line, err := invite(phone, g, m.as)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := setup(t.Context(), m.n, false, line, !m.server); err == nil {
			t.Fatal("an invitation joined a device started with another type")
		}
		if got, err := setup(t.Context(), m.n, false, line, m.server); err != nil || got != g {
			t.Fatalf("joined %q, %v; want %q", got, err, g)
		}
	}
	phoneDir, laptopDir, serverDir := run(t, phone, g, "phone"), run(t, laptop, g, "laptop"), run(t, server, g, "server")

	beach := drop(t, phoneDir, "beach.jpg", testkit.RandomBytes(300<<10, 1))
	awaitFile(t, laptopDir, "beach.jpg", beach)
	awaitFile(t, serverDir, "beach.jpg", beach)
	cat := drop(t, laptopDir, "cat.jpg", testkit.RandomBytes(200<<10, 2))
	awaitFile(t, phoneDir, "cat.jpg", cat)

	for _, data := range [][]byte{beach, cat} {
		ref := testkit.Ref(data)
		testkit.WaitFor(t, 20*time.Second, "the server holding the blob and its shares", func() bool {
			sh, err := server.BlobShares(ref)
			return err == nil && sh[g] > 0 && server.HasBlob(ref)
		})
	}
	testkit.WaitFor(t, 20*time.Second, "the laptop's store within its budget", func() bool {
		held := int64(0)
		for _, data := range [][]byte{beach, cat} {
			if laptop.HasBlob(testkit.Ref(data)) {
				held += int64(len(data))
			}
		}
		return held <= budget
	})
	for name, data := range map[string][]byte{"beach.jpg": beach, "cat.jpg": cat} {
		if b, err := os.ReadFile(filepath.Join(laptopDir, name)); err != nil || !bytes.Equal(b, data) {
			t.Errorf("the laptop's %s: %d bytes, %v; want the file kept", name, len(b), err)
		}
	}
	phoneFile, _ := os.Stat(filepath.Join(phoneDir, "beach.jpg"))
	laptopFile, _ := os.Stat(filepath.Join(laptopDir, "beach.jpg"))
	if !laptopFile.ModTime().Equal(phoneFile.ModTime()) {
		t.Errorf("beach.jpg's mod time on the laptop %v, on the phone %v", laptopFile.ModTime(), phoneFile.ModTime())
	}
}

// run runs photodrop on n in a fresh folder, with a 50 ms settle time,
// until the test ends; it returns the folder.
func run(t *testing.T, n *node.Node, g syncnode.GroupID, name string) string {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	d := &Drop{Node: n, Group: g, Folder: dir, Settle: 50 * time.Millisecond, Log: log.New(testLog{t}, name+": ", 0)}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
	return dir
}

// drop writes a file into a folder as a user would: not in one go.
func drop(t *testing.T, dir, name string, data []byte) []byte {
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	for b := data; len(b) > 0; b = b[min(len(b), 64<<10):] {
		if _, err := f.Write(b[:min(len(b), 64<<10)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return data
}

func awaitFile(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	testkit.WaitFor(t, 20*time.Second, name+" in "+dir, func() bool {
		b, err := os.ReadFile(filepath.Join(dir, name))
		return err == nil && bytes.Equal(b, data)
	})
}

// testLog writes photodrop's log lines into the test's.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(string(bytes.TrimSuffix(b, []byte("\n"))))
	return len(b), nil
}
