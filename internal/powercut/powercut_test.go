package powercut

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/testkit"
)

// TestMain runs child processes of the tests: programs that use the mount
// and get SIGKILLed before a cut. They are separate processes because a
// process must not fault in mapped pages of a FUSE file system it serves.
func TestMain(m *testing.M) {
	if mode := os.Getenv("POWERCUT_CHILD"); mode != "" {
		if err := runChild(mode, os.Getenv("POWERCUT_PATH"), os.Getenv("POWERCUT_ROUND")); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func mountT(t *testing.T) (*FS, string, string) {
	t.Helper()
	testkit.SkipShortUnless(t, "SYNCNODE_FUSE_TESTS", "root and FUSE")
	if err := Available(); err != nil {
		t.Skipf("FUSE power cuts unavailable: %v", err)
	}
	backing, mnt := t.TempDir(), t.TempDir()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	f, err := Mount(backing, mnt, log)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
	})
	return f, backing, mnt
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func writeFile(t *testing.T, path string, flag int, data []byte, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func wantFile(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s = %q, want %q", filepath.Base(path), got, want)
	}
}

const (
	create = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	appnd  = os.O_WRONLY | os.O_APPEND
)

func TestCutDropsUnsyncedWrites(t *testing.T) {
	f, _, mnt := mountT(t)
	p := func(name string) string { return filepath.Join(mnt, name) }

	writeFile(t, p("durable"), create, []byte("durable"), true)
	writeFile(t, p("volatile"), create, []byte("volatile"), false)
	writeFile(t, p("tail"), create, []byte("head"), true)
	writeFile(t, p("tail"), appnd, []byte("+tail"), false)
	writeFile(t, p("overwrite"), create, []byte("old content"), true)
	writeFile(t, p("overwrite"), os.O_WRONLY, []byte("NEW"), false)
	writeFile(t, p("truncated"), create, []byte("was synced"), true)
	writeFile(t, p("truncated"), create, []byte("x"), false)

	// Before the cut the programs see their own writes.
	wantFile(t, p("volatile"), "volatile")
	wantFile(t, p("tail"), "head+tail")
	wantFile(t, p("overwrite"), "NEW content")
	wantFile(t, p("truncated"), "x")
	if fi, err := os.Stat(p("tail")); err != nil || fi.Size() != int64(len("head+tail")) {
		t.Errorf("stat tail before the cut: %v, %v; want size %d", fi, err, len("head+tail"))
	}

	if err := f.Cut(); err != nil {
		t.Fatal(err)
	}
	wantFile(t, p("durable"), "durable")
	wantFile(t, p("volatile"), "") // the name is durable, the data is not
	wantFile(t, p("tail"), "head")
	wantFile(t, p("overwrite"), "old content")
	wantFile(t, p("truncated"), "was synced")

	st := f.Stats()
	if st.Cuts != 1 || st.DroppedFiles != 4 || st.DroppedBytes < 4*pageSize || st.Syncs < 4 || st.ForcedUnmounts != 0 {
		t.Errorf("stats = %+v, want 1 cut dropping 4 files, 4 pages, >= 4 syncs, no forced unmount", st)
	}

	// The mount works again after the cut.
	writeFile(t, p("tail"), appnd, []byte("+again"), true)
	if err := f.Cut(); err != nil {
		t.Fatal(err)
	}
	wantFile(t, p("tail"), "head+again")
	if st := f.Stats(); st.DroppedFiles != 0 || st.Cuts != 2 {
		t.Errorf("second cut stats = %+v, want nothing dropped", st)
	}
}

func TestRenameOfUnsyncedFile(t *testing.T) {
	f, _, mnt := mountT(t)
	p := func(name string) string { return filepath.Join(mnt, name) }

	writeFile(t, p("final"), create, []byte("old"), true)
	writeFile(t, p("tmp"), create, []byte("new"), false)
	if err := os.Rename(p("tmp"), p("final")); err != nil {
		t.Fatal(err)
	}
	// The right way: fsync the temporary file before the rename.
	writeFile(t, p("tmp2"), create, []byte("new2"), true)
	if err := os.Rename(p("tmp2"), p("final2")); err != nil {
		t.Fatal(err)
	}
	wantFile(t, p("final"), "new")

	if err := f.Cut(); err != nil {
		t.Fatal(err)
	}
	wantFile(t, p("final"), "") // tmp's inode, whose data never was synced
	wantFile(t, p("final2"), "new2")
	if _, err := os.Stat(p("tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tmp after rename and cut: %v, want not exist", err)
	}
}

func TestMmap(t *testing.T) {
	f, _, mnt := mountT(t)
	path := filepath.Join(mnt, "mapped")

	child := startChild(t, "mmap", path, "")
	child.kill(t)
	// The child's mapping reached the file system before the cut.
	wantFile(t, path, mmapWant(true))

	if err := f.Cut(); err != nil {
		t.Fatal(err)
	}
	wantFile(t, path, mmapWant(false))
	if st := f.Stats(); st.Syncs < 1 || st.DroppedBytes < pageSize {
		t.Errorf("stats = %+v, want >= 1 sync and >= 1 dropped page", st)
	}
}

// mmapWant is the mapped file's content: page 0 synced by msync, page 1
// written after it.
func mmapWant(withVolatile bool) string {
	b := make([]byte, 2*pageSize)
	copy(b, "synced by msync")
	if withVolatile {
		copy(b[pageSize:], "never synced")
	}
	return string(b)
}

func TestBadger(t *testing.T) {
	f, _, mnt := mountT(t)
	dir := filepath.Join(mnt, "db")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	found := 0
	const rounds = 3
	for r := range rounds {
		c := startChild(t, "badger", dir, strconv.Itoa(r))
		found += c.unsyncedFound
		c.kill(t)
		if err := f.Cut(); err != nil {
			t.Fatal(err)
		}
		if st := f.Stats(); st.DroppedBytes == 0 {
			t.Errorf("round %d: cut dropped nothing: %+v", r, st)
		}
	}
	c := startChild(t, "badger-verify", dir, strconv.Itoa(rounds))
	found += c.unsyncedFound
	c.kill(t)
	written := rounds * badgerUnsynced
	t.Logf("unsynced transactions found after cuts: %d of %d; stats %+v", found, written, f.Stats())
	if found >= written {
		t.Errorf("all %d unsynced transactions survived the cuts", written)
	}
}

func TestThroughput(t *testing.T) {
	f, _, mnt := mountT(t)
	path := filepath.Join(mnt, "big")
	data := make([]byte, 16<<20)
	rand.Read(data)
	start := time.Now()
	writeFile(t, path, create, data, true)
	took := time.Since(start)
	t.Logf("16 MiB write+fsync: %v", took)
	if took > time.Second {
		t.Errorf("16 MiB write+fsync took %v, want < 1s", took)
	}
	if err := f.Cut(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("16 MiB file differs after the cut")
	}
}

func TestUnmountKeepsUnsyncedWrites(t *testing.T) {
	f, backing, mnt := mountT(t)
	writeFile(t, filepath.Join(mnt, "a"), create, []byte("not synced"), false)
	if err := f.Unmount(); err != nil {
		t.Fatal(err)
	}
	wantFile(t, filepath.Join(backing, "a"), "not synced")
}

func TestCutAbortsBusyMount(t *testing.T) {
	f, _, mnt := mountT(t)
	h, err := os.Create(filepath.Join(mnt, "open"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.WriteString("lost"); err != nil {
		t.Fatal(err)
	}
	if err := f.Cut(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteString("more"); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("write to a file held across the cut: %v, want ENOTCONN", err)
	}
	wantFile(t, filepath.Join(mnt, "open"), "")
	if st := f.Stats(); st.ForcedUnmounts != 1 || st.DroppedFiles != 1 {
		t.Errorf("stats = %+v, want 1 forced unmount and 1 dropped file", st)
	}
}

type child struct {
	cmd           *exec.Cmd
	unsyncedFound int
}

// startChild runs a child process and waits for its "ready" line.
func startChild(t *testing.T, mode, path, round string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "POWERCUT_CHILD="+mode, "POWERCUT_PATH="+path, "POWERCUT_ROUND="+round)
	cmd.Stderr = testWriter{t}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd}
	t.Cleanup(func() { stdin.Close(); c.kill(t) })
	line, err := bufio.NewReader(out).ReadString('\n')
	var n int
	if _, serr := fmt.Sscanf(line, "ready %d", &n); err != nil || serr != nil {
		c.kill(t)
		t.Fatalf("child %s: read %q, %v", mode, line, err)
	}
	c.unsyncedFound = n
	return c
}

// kill SIGKILLs the child and waits until it is gone.
func (c *child) kill(t *testing.T) {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
}

const (
	badgerSynced   = 20
	badgerUnsynced = 20
)

func runChild(mode, path, round string) error {
	switch mode {
	case "mmap":
		return mmapChild(path)
	case "badger", "badger-verify":
		r, err := strconv.Atoi(round)
		if err != nil {
			return err
		}
		return badgerChild(path, r, mode == "badger")
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// waitForKill reports readiness and blocks until the parent kills it.
func waitForKill(found int) error {
	fmt.Printf("ready %d\n", found)
	_, _ = os.Stdin.Read(make([]byte, 1))
	return errors.New("stdin closed before the kill")
}

func mmapChild(path string) error {
	// A child must not inherit the server's /dev/fuse descriptor.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); l == "/dev/fuse" {
			return fmt.Errorf("inherited /dev/fuse as fd %s", e.Name())
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if err := f.Truncate(2 * pageSize); err != nil {
		return err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, 2*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	want := mmapWant(true)
	copy(m, want[:pageSize])
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		return err
	}
	copy(m[pageSize:], want[pageSize:])
	return waitForKill(0)
}

func badgerKey(round int, synced bool, i int) []byte {
	kind := "u"
	if synced {
		kind = "s"
	}
	return fmt.Appendf(nil, "r%02d-%s-%04d", round, kind, i)
}

// badgerChild opens the store, checks that every synced transaction of
// earlier rounds is there and counts the unsynced ones found. With write
// set it then adds its own round and waits for the kill; else it closes.
func badgerChild(dir string, round int, write bool) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := badger.Open(kv.Options(dir, log))
	if err != nil {
		return fmt.Errorf("reopen after cut: %w", err)
	}
	found := 0
	err = db.View(func(txn *badger.Txn) error {
		for r := range round {
			for i := range badgerSynced {
				if _, err := txn.Get(badgerKey(r, true, i)); err != nil {
					return fmt.Errorf("synced %s: %w", badgerKey(r, true, i), err)
				}
			}
			for i := range badgerUnsynced {
				if _, err := txn.Get(badgerKey(r, false, i)); err == nil {
					found++
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !write {
		if err := db.Close(); err != nil {
			return err
		}
		fmt.Printf("ready %d\n", found)
		return nil
	}
	put := func(k []byte) error {
		return db.Update(func(txn *badger.Txn) error { return txn.Set(k, bytes.Repeat(k, 8)) })
	}
	for i := range badgerSynced {
		if err := put(badgerKey(round, true, i)); err != nil {
			return err
		}
		if err := db.Sync(); err != nil {
			return err
		}
	}
	for i := range badgerUnsynced {
		if err := put(badgerKey(round, false, i)); err != nil {
			return err
		}
	}
	return waitForKill(found)
}
