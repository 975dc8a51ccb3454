package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"lukechampine.com/blake3"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/atomicfile"
	"github.com/syncnode/syncnode/internal/control"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
)

var (
	long      = flag.Bool("faults.long", false, "run the long form of the fault suite")
	faultSeed = flag.Uint64("faults.seed", 0, "seed of the randomised fault tests (0: the time); each test prints the seed it used")
)

// seedOf returns the seed a randomised fault test runs with, and prints
// it with the flag that replays it.
func seedOf(t testing.TB) uint64 {
	seed := *faultSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -faults.seed=%d)", seed, seed)
	return seed
}

// bin is the syncnode binary the tests run as separate processes.
var bin string

func TestMain(m *testing.M) {
	flag.Parse()
	nodetest.RunWithBinary(m, &bin)
}

// proc is a syncnode daemon running as its own process.
type proc struct {
	t    testing.TB
	name string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	cl   *api.Client
	id   string
	// starts counts the daemon's starts.
	starts int
}

// newProc initialises a data directory for a daemon syncing every
// syncEvery, and starts it; it is killed when the test ends. initArgs are
// more flags of init; with no -listen among them the daemon listens on
// TCP on a loopback port fixed here.
func newProc(t testing.TB, name string, syncEvery time.Duration, initArgs ...string) *proc {
	t.Helper()
	return newProcAt(t, filepath.Join(t.TempDir(), name), name, syncEvery, initArgs...)
}

// newProcAt is newProc with the data directory at dir.
func newProcAt(t testing.TB, dir, name string, syncEvery time.Duration, initArgs ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, dir: dir}
	// Loopback on a port fixed here, and no LAN announcements: the fault
	// suite's daemons are reached at the addresses their configs name.
	if !slices.Contains(initArgs, "-listen") {
		initArgs = append(initArgs, "-listen", nodetest.FreeAddr(t))
	}
	args := append([]string{"-data", p.dir, "init", "-no-lan"}, initArgs...)
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: init: %v\n%s", name, err, out)
	}
	p.config(func(cfg *control.Config) { cfg.SyncInterval = syncEvery.String() })
	var err error
	if p.cl, err = control.Dial(p.dir); err != nil {
		t.Fatal(err)
	}
	p.start()
	st, err := p.cl.Status(p.ctx())
	p.must("status", err)
	p.id = st.ID
	t.Cleanup(func() {
		if p.cmd != nil {
			p.kill()
		}
	})
	return p
}

// config changes the daemon's config file (it takes effect at the next
// start).
func (p *proc) config(change func(*control.Config)) {
	p.t.Helper()
	cfgPath := filepath.Join(p.dir, control.ConfigFile)
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		p.t.Fatal(err)
	}
	var cfg control.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		p.t.Fatal(err)
	}
	change(&cfg)
	if b, err = json.Marshal(cfg); err != nil {
		p.t.Fatal(err)
	}
	if err := atomicfile.Write(cfgPath, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
}

// start runs the daemon and waits until its control API answers.
func (p *proc) start() {
	p.t.Helper()
	logf, err := os.OpenFile(filepath.Join(p.dir, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(logf, "--- start %d\n", p.starts+1)
	p.cmd = exec.Command(bin, "-data", p.dir, "run")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	logf.Close()
	p.starts++
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(p.cmd, p.done)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := p.cl.Status(p.ctx())
		if err == nil {
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited at start: %s\n%s", p.name, p.cmd.ProcessState, p.logTail())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s never answered: %v\n%s", p.name, err, p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() { p.stop(syscall.SIGKILL) }

// stop sends sig and waits for the process to be gone.
func (p *proc) stop(sig syscall.Signal) {
	p.cmd.Process.Signal(sig)
	<-p.done
	p.cmd = nil
}

// pid is the running daemon's process ID.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// peakRSS is the daemon's peak resident set size in bytes.
func (p *proc) peakRSS() (int64, error) { return p.procStatus("VmHWM:") }

// rss is the daemon's resident set size in bytes now.
func (p *proc) rss() (int64, error) { return p.procStatus("VmRSS:") }

// procStatus reads a size field of /proc/PID/status.
func (p *proc) procStatus(field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == field {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, p.pid())
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "daemon.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// ctx bounds one call of p's control API: 30 s, or the test's end.
func (p *proc) ctx() context.Context {
	ctx, cancel := context.WithTimeout(p.t.Context(), 30*time.Second)
	p.t.Cleanup(cancel)
	return ctx
}

// must fails the test if a call of p's control API failed.
func (p *proc) must(what string, err error) {
	p.t.Helper()
	if err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, what, err)
	}
}

// putBlobRow stores data on p and writes a row at key naming it.
func (p *proc) putBlobRow(group, key string, data []byte) (syncnode.BlobRef, error) {
	info, err := p.cl.PutBlob(p.ctx(), bytes.NewReader(data))
	if err != nil {
		return syncnode.BlobRef{}, err
	}
	ref, err := syncnode.ParseBlobRef(info.Ref)
	if err != nil {
		return ref, err
	}
	if want := testkit.Ref(data); ref != want {
		return ref, fmt.Errorf("put returned %s, the bytes hash to %s", ref, want)
	}
	val := fmt.Sprintf(`{"n": %q, "blob": {"$blob": %q}}`, key, ref)
	_, err = p.cl.PutRow(p.ctx(), api.RowRequest{Group: group, Key: key, Value: json.RawMessage(val)})
	return ref, err
}

// blobs lists the blobs p holds.
func (p *proc) blobs() ([]api.BlobInfo, error) { return p.cl.ListBlobs(p.ctx()) }

// verifyAll reads every blob p shows and checks its bytes hash to its
// ref: nothing partial or corrupt may ever be visible. It returns the
// blobs checked.
func (p *proc) verifyAll() (map[syncnode.BlobRef]api.BlobInfo, error) {
	infos, err := p.blobs()
	if err != nil {
		return nil, err
	}
	out := map[syncnode.BlobRef]api.BlobInfo{}
	for _, in := range infos {
		ref, err := syncnode.ParseBlobRef(in.Ref)
		if err != nil {
			return nil, err
		}
		h := blake3.New(32, nil)
		if err := p.cl.ReadBlob(p.ctx(), in.Ref, 0, -1, h); err != nil {
			if strings.Contains(err.Error(), "not found") {
				continue // evicted between the list and the read
			}
			return nil, err
		}
		var got [32]byte
		h.Sum(got[:0])
		if syncnode.RefFromHash(got) != ref {
			return nil, fmt.Errorf("%s shows blob %s whose bytes hash to %s", p.name, ref, syncnode.RefFromHash(got))
		}
		out[ref] = in
	}
	return out, nil
}

// group creates a private group with prefix on admin and has every other
// proc join it with the given device type.
func group(t testing.TB, admin *proc, name, prefix string, members []*proc, devtype string) string {
	t.Helper()
	g, err := admin.cl.CreateGroup(admin.ctx(), api.CreateRequest{Name: name, Prefixes: []string{prefix}, Private: true, DevType: "normal"})
	admin.must("create group", err)
	for _, m := range members {
		inv, err := admin.cl.Invite(admin.ctx(), api.InviteRequest{Group: g.ID, Peer: m.id, DevType: devtype})
		admin.must("invite", err)
		_, err = m.cl.Join(m.ctx(), inv)
		m.must("join", err)
	}
	return g.ID
}
