package faults

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/control"
	"github.com/syncnode/syncnode/internal/ports"
	"github.com/syncnode/syncnode/internal/s3test"
	"github.com/syncnode/syncnode/internal/testkit"
)

// listenOn returns init's -listen flags for a daemon on a fresh loopback
// port: TCP, QUIC, or both.
func listenOn(t testing.TB, transport string) []string {
	var args []string
	for _, a := range listenAddrs(t, transport) {
		args = append(args, "-listen", a)
	}
	return args
}

// listenAddrs returns listen addresses on a fresh loopback port: TCP,
// QUIC, or both.
func listenAddrs(t testing.TB, transport string) []string {
	t.Helper()
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	tcp := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)
	quic := fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", port)
	switch transport {
	case "tcp":
		return []string{tcp}
	case "quic":
		return []string{quic}
	}
	return []string{tcp, quic}
}

// restartGroup is a phone, a laptop and a server in one private group;
// the server holds the phone's blob and the laptop knows its row.
type restartGroup struct {
	phone, laptop, server *proc
	group                 string
	ref                   string
	data                  []byte
}

// newRestartGroup starts the three daemons on transport and waits until
// the server holds the phone's 8 MB blob and the laptop has its row.
func newRestartGroup(t *testing.T, transport string, serverArgs ...string) *restartGroup {
	t.Helper()
	rg := &restartGroup{
		phone:  newProc(t, "phone", time.Hour, listenOn(t, transport)...),
		laptop: newProc(t, "laptop", time.Hour, listenOn(t, transport)...),
		server: newProc(t, "server", time.Hour, append(listenOn(t, transport), serverArgs...)...),
	}
	g, err := rg.phone.cl.CreateGroup(rg.phone.ctx(), api.CreateRequest{Name: "photos", Prefixes: []string{"p/"}, Private: true, DevType: "normal"})
	rg.phone.must("create group", err)
	rg.group = g.ID
	for _, m := range []struct {
		p       *proc
		devtype string
	}{{rg.server, "server"}, {rg.laptop, "normal"}} {
		inv, err := rg.phone.cl.Invite(rg.phone.ctx(), api.InviteRequest{Group: g.ID, Peer: m.p.id, DevType: m.devtype})
		rg.phone.must("invite", err)
		_, err = m.p.cl.Join(m.p.ctx(), inv)
		m.p.must("join", err)
	}
	rg.data = testkit.RandomBytes(8<<20, 29)
	ref, err := rg.phone.putBlobRow(g.ID, "p/beach", rg.data)
	rg.phone.must("put", err)
	rg.ref = ref.String()
	testkit.WaitFor(t, time.Minute, "the server to hold the blob and the laptop its row", func() bool {
		_, err := rg.server.cl.StatBlob(rg.server.ctx(), rg.ref)
		if err != nil {
			return false
		}
		_, err = rg.laptop.cl.GetRow(rg.laptop.ctx(), g.ID, "p/beach")
		return err == nil
	})
	// The laptop has a connection to the server, which a restart makes
	// stale: a round of rows both ways.
	rg.rowReaches(t, rg.laptop, rg.server, "p/hello-server")
	rg.rowReaches(t, rg.server, rg.laptop, "p/hello-laptop")
	return rg
}

// rowReaches writes a row at key on from and returns how long it took to
// reach to.
func (rg *restartGroup) rowReaches(t *testing.T, from, to *proc, key string) time.Duration {
	t.Helper()
	start := time.Now()
	_, err := from.cl.PutRow(from.ctx(), api.RowRequest{Group: rg.group, Key: key, Value: []byte(`"hi"`)})
	from.must("put row", err)
	for {
		if _, err := to.cl.GetRow(to.ctx(), rg.group, key); err == nil {
			return time.Since(start)
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("row %s from %s did not reach %s in a minute\n%s\n%s", key, from.name, to.name, from.logTail(), to.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fetchOnLaptop fetches the blob on the laptop, checks its bytes, and
// returns how long the fetch took.
func (rg *restartGroup) fetchOnLaptop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	if err := rg.laptop.cl.FetchBlob(rg.laptop.ctx(), rg.ref, api.FetchOptions{Wait: 20 * time.Second}, nil); err != nil {
		t.Fatalf("laptop fetch after %v: %v\n%s\n%s", time.Since(start).Round(time.Millisecond), err, rg.laptop.logTail(), rg.server.logTail())
	}
	took := time.Since(start)
	var got bytes.Buffer
	rg.laptop.must("read", rg.laptop.cl.ReadBlob(rg.laptop.ctx(), rg.ref, 0, -1, &got))
	if !bytes.Equal(got.Bytes(), rg.data) {
		t.Fatal("the laptop's copy differs from the phone's bytes")
	}
	return took
}

// TestFetchFromRestartedHolder: the server holds the only copy reachable
// (the phone is gone) and is stopped and started again on the same
// identity and port. One second later the laptop, which still has a
// connection to the server's old process, fetches the 8 MB blob: the dead
// connection is replaced at once, so the fetch takes about as long as
// with no restart. Rows written on either side after the restart reach
// the other as fast as before it. When the phone vanished without a word
// (SIGKILL), the laptop's connection to it is silent, and is given up
// after a probe. It times fetches and rows to the second, so it runs
// alone (not in parallel with the busier fault tests).
func TestFetchFromRestartedHolder(t *testing.T) {
	for _, tc := range []struct {
		transport string
		server    syscall.Signal
		phone     syscall.Signal
		within    time.Duration
		// then is what happens while the server is down: it is given a
		// new port, or loses its database (its blobs on an object store),
		// or "later": the fetch comes 10 s after the restart, not 1 s.
		then string
	}{
		{"quic", syscall.SIGKILL, syscall.SIGTERM, 2 * time.Second, ""},
		{"tcp", syscall.SIGKILL, syscall.SIGTERM, 2 * time.Second, ""},
		{"quic", syscall.SIGTERM, syscall.SIGTERM, 2 * time.Second, ""},
		{"quic", syscall.SIGKILL, syscall.SIGKILL, 5 * time.Second, ""},
		// On a new port the old QUIC connection is silent (nothing there
		// to reset it): it is given up after a probe.
		{"quic", syscall.SIGKILL, syscall.SIGTERM, 8 * time.Second, "new-port"}, // 2 s alone; the whole suite under -race stretches it
		{"both", syscall.SIGKILL, syscall.SIGTERM, 2 * time.Second, "lost-db"},
		{"quic", syscall.SIGKILL, syscall.SIGTERM, time.Second, "later"},
	} {
		name := fmt.Sprintf("%s-server-%s-phone-%s", tc.transport, sigName(tc.server), sigName(tc.phone))
		if tc.then != "" {
			name += "-" + tc.then
		}
		t.Run(name, func(t *testing.T) {
			var serverArgs []string
			if tc.then == "lost-db" {
				s3 := s3test.Start(t, "syncnode")
				serverArgs = []string{"-store", "s3://syncnode/site", "-s3-endpoint", s3.Addr, "-s3-insecure",
					"-s3-access-key", s3test.AccessKey, "-s3-secret-key", s3test.SecretKey}
			}
			rg := newRestartGroup(t, tc.transport, serverArgs...)
			before := rg.rowReaches(t, rg.server, rg.laptop, "p/before")
			rg.phone.stop(tc.phone)
			rg.server.stop(tc.server)
			switch tc.then {
			case "new-port":
				rg.server.config(func(c *control.Config) { c.Listen = listenAddrs(t, tc.transport) })
			case "lost-db":
				// The disk is lost; the identity key and the config
				// are kept, and the blobs are in the bucket.
				for _, sub := range []string{"db", "blobs"} {
					if err := os.RemoveAll(filepath.Join(rg.server.dir, sub)); err != nil {
						t.Fatal(err)
					}
				}
			}
			rg.server.start()
			if tc.then == "later" {
				time.Sleep(10 * time.Second)
			} else {
				time.Sleep(time.Second)
			}
			took := rg.fetchOnLaptop(t)
			t.Logf("8 MB fetched from the restarted server in %v", took.Round(time.Millisecond))
			if took > tc.within {
				t.Errorf("the fetch from the restarted server took %v; want under %v", took, tc.within)
			}
			toLaptop := rg.rowReaches(t, rg.server, rg.laptop, "p/after-server")
			toServer := rg.rowReaches(t, rg.laptop, rg.server, "p/after-laptop")
			t.Logf("rows after the restart: server to laptop %v, laptop to server %v (before: %v)",
				toLaptop.Round(time.Millisecond), toServer.Round(time.Millisecond), before.Round(time.Millisecond))
			if limit := before + time.Second; toLaptop > limit || toServer > limit {
				t.Errorf("rows after the restart took %v and %v; before it %v", toLaptop, toServer, before)
			}
		})
	}
}

// sigName is a signal's short name: kill, term.
func sigName(s syscall.Signal) string {
	if s == syscall.SIGKILL {
		return "kill"
	}
	return "term"
}

// TestBlobGetWaitsForAHolderToComeBack: the only holder reachable is down
// when a user asks for the blob. `blob get` says it waits for a holder,
// and succeeds as soon as the server is back; with the server gone for
// good it gives up at its -wait, naming the holders and why, with exit
// status 1.
func TestBlobGetWaitsForAHolderToComeBack(t *testing.T) {
	t.Parallel()
	rg := newRestartGroup(t, "both")
	rg.phone.stop(syscall.SIGTERM)
	rg.server.kill()

	out := filepath.Join(t.TempDir(), "beach.jpg")
	cmd := exec.Command(bin, "-data", rg.laptop.dir, "blob", "get", "-wait", "1m", "-o", out, rg.ref)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	testkit.WaitFor(t, 30*time.Second, "blob get to say it waits for a holder", func() bool {
		select {
		case err := <-done:
			t.Fatalf("blob get ended while no holder was up: %v\n%s", err, stderr.String())
		default:
		}
		return strings.Contains(stderr.String(), "waiting for a holder")
	})
	restarted := time.Now()
	rg.server.start()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("blob get: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("blob get still waiting 30 s after the server came back\n%s", stderr.String())
	}
	t.Logf("blob get done %v after the server came back", time.Since(restarted).Round(time.Millisecond))
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, rg.data) {
		t.Fatalf("the fetched file differs from the phone's bytes (%v)", err)
	}

	// Gone for good: the laptop drops its copy, the server goes away, and
	// blob get gives up after its wait.
	rg.laptop.must("rm", rg.laptop.cl.RemoveBlob(rg.laptop.ctx(), rg.ref))
	rg.server.kill()
	start := time.Now()
	cmd = exec.Command(bin, "-data", rg.laptop.dir, "blob", "get", "-wait", "3s", "-o", out+".2", rg.ref)
	res, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("blob get with no holder: %v, want exit status 1\n%s", err, res)
	}
	if took := time.Since(start); took < 3*time.Second || took > 20*time.Second {
		t.Errorf("blob get -wait 3s gave up after %v", took)
	}
	for _, want := range []string{"within 3s", rg.server.id} {
		if !strings.Contains(string(res), want) {
			t.Errorf("blob get's output does not say %q:\n%s", want, res)
		}
	}
}

// lockedBuffer is a buffer that a command writes while the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
