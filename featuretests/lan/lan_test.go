// Package lan tests syncnode on real network stacks: each test builds its
// own topology of Linux network namespaces joined by veth pairs and
// bridges, with nftables NAT routers where it needs them, runs a real
// syncnode daemon in each namespace, and removes it all at the end. The
// tests need root, iproute2 and nftables; without them they skip, unless
// SYNCNODE_NETNS_TESTS is set (as CI sets it), when they fail. Under
// -short they skip unless SYNCNODE_NETNS_TESTS is set.
package lan

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/syncgroup"
)

// bin is the syncnode binary the namespaces run.
var bin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() && os.Getenv("SYNCNODE_NETNS_TESTS") == "" {
		// Every test skips (needNetns) before it runs the binary: no
		// need to build it.
		os.Exit(m.Run())
	}
	nodetest.RunWithBinary(m, &bin)
}

// needNetns skips the test where namespaces cannot be made.
func needNetns(t *testing.T) {
	testkit.SkipShortUnless(t, "SYNCNODE_NETNS_TESTS", "root, network namespaces and nftables")
	why := ""
	if os.Geteuid() != 0 {
		why = "network namespaces need root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "no ip (iproute2) on PATH"
	}
	if why == "" {
		return
	}
	if os.Getenv("SYNCNODE_NETNS_TESTS") != "" {
		t.Fatalf("%s, and SYNCNODE_NETNS_TESTS is set", why)
	}
	t.Skip(why)
}

// sh runs a command in the test's own namespace and fails the test if it
// fails.
func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netns is a network namespace the test made.
type netns struct {
	t    *testing.T
	name string
}

func newNetns(t *testing.T, name string) *netns {
	sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns := &netns{t, name}
	ns.sh("ip", "link", "set", "lo", "up")
	return ns
}

func (ns *netns) sh(args ...string) string {
	ns.t.Helper()
	return sh(ns.t, append([]string{"ip", "netns", "exec", ns.name}, args...)...)
}

// try runs a command in the namespace, returning its output and error.
func (ns *netns) try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
	return string(out), err
}

// device is a syncnode daemon running in a namespace.
type device struct {
	ns   *netns
	data string
	log  *bytes.Buffer
}

// startDevice initialises a data directory with name (and the further
// init flags given) and runs its daemon in ns until the test ends.
func startDevice(t *testing.T, ns *netns, name string, init ...string) *device {
	d := &device{ns: ns, data: filepath.Join(t.TempDir(), name), log: &bytes.Buffer{}}
	d.cli(append([]string{"init", "-name", name}, init...)...)
	cmd := exec.Command("ip", "netns", "exec", ns.name, bin, "-data", d.data, "run")
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() || os.Getenv("SYNCNODE_SHOW_LOGS") != "" {
			t.Logf("log of %s:\n%s", name, d.log.String())
		}
	})
	testkit.WaitFor(t, 20*time.Second, name+"'s daemon", func() bool {
		_, err := d.try("status")
		return err == nil
	})
	return d
}

func (d *device) cli(args ...string) string {
	d.ns.t.Helper()
	return d.ns.sh(append([]string{bin, "-data", d.data}, args...)...)
}

func (d *device) try(args ...string) (string, error) {
	return d.ns.try(append([]string{bin, "-data", d.data}, args...)...)
}

func (d *device) status() api.Status {
	d.ns.t.Helper()
	var st api.Status
	if err := json.Unmarshal([]byte(d.cli("status", "--json")), &st); err != nil {
		d.ns.t.Fatal(err)
	}
	return st
}

// randomID names a test's namespaces and links apart from another run's.
func randomID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// lan makes two namespaces joined by a veth pair, 10.231.0.1 and .2/24.
func lan(t *testing.T) (a, b *netns) {
	id := randomID()
	a, b = newNetns(t, "sn-a-"+id), newNetns(t, "sn-b-"+id)
	va, vb := "sna"+id, "snb"+id
	sh(t, "ip", "link", "add", va, "type", "veth", "peer", "name", vb)
	sh(t, "ip", "link", "set", va, "netns", a.name)
	sh(t, "ip", "link", "set", vb, "netns", b.name)
	a.sh("ip", "addr", "add", "10.231.0.1/24", "dev", va)
	b.sh("ip", "addr", "add", "10.231.0.2/24", "dev", vb)
	a.sh("ip", "link", "set", va, "up")
	b.sh("ip", "link", "set", vb, "up")
	return a, b
}

// withoutAddrs returns an invitation as sg invite prints it, with the
// addresses taken out: only the admin's peer ID remains, as in an
// invitation from an older node given no address.
func withoutAddrs(t *testing.T, inv string) string {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(inv))
	if err != nil {
		t.Fatal(err)
	}
	in, err := syncgroup.UnmarshalInvitation(raw)
	if err != nil {
		t.Fatal(err)
	}
	out, err := in.WithoutAddrs().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(out)
}

// Two daemons on one LAN find each other with no address exchanged beyond
// the invitation's peer ID, and sync a row and a blob.
func TestLANDiscovery(t *testing.T) {
	needNetns(t)
	nsA, nsB := lan(t)
	desktop, laptop := startDevice(t, nsA, "desktop"), startDevice(t, nsB, "laptop")
	gid := strings.TrimSpace(desktop.cli("sg", "create", "photos", "-prefix", "photos/", "-private"))
	inv := withoutAddrs(t, desktop.cli("sg", "invite", gid, laptop.status().ID))
	start := time.Now()
	laptop.cli("sg", "join", inv)
	joined := time.Since(start)

	data := testkit.RandomBytes(3<<20, 7)
	file := filepath.Join(t.TempDir(), "beach.jpg")
	os.WriteFile(file, data, 0o644)
	ref := strings.TrimSpace(desktop.cli("blob", "put", file))
	desktop.cli("row", "put", gid, "photos/beach", `{"image": {"$blob": "`+ref+`"}}`)
	testkit.WaitFor(t, 20*time.Second, "the row on the laptop", func() bool {
		_, err := laptop.try("row", "get", gid, "photos/beach")
		return err == nil
	})
	out := filepath.Join(t.TempDir(), "out.jpg")
	laptop.cli("blob", "get", ref, "-o", out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("the laptop's copy differs")
	}
	if members := laptop.cli("sg", "members", gid); !strings.Contains(members, "desktop") {
		t.Fatalf("the laptop does not list the desktop by name:\n%s", members)
	}
	t.Logf("joined over the LAN %v after the invitation (no address in it); row and blob synced", joined.Round(time.Millisecond))
}

// A device that moves to another subnet is reached again and sync
// resumes: its new addresses travel in its membership.
func TestAddressChange(t *testing.T) {
	needNetns(t)
	nsA, nsB := lan(t)
	vb := strings.Replace(nsB.name, "sn-b-", "snb", 1)
	va := strings.Replace(nsA.name, "sn-a-", "sna", 1)
	// The LAN carries a second subnet the desktop will move to.
	nsB.sh("ip", "addr", "add", "10.231.1.2/24", "dev", vb)
	desktop, laptop := startDevice(t, nsA, "desktop"), startDevice(t, nsB, "laptop")
	gid := strings.TrimSpace(desktop.cli("sg", "create", "photos", "-prefix", "photos/", "-private"))
	laptop.cli("sg", "join", desktop.cli("sg", "invite", gid, laptop.status().ID))
	desktop.cli("row", "put", gid, "photos/before", `{"n": 1}`)
	testkit.WaitFor(t, 20*time.Second, "the first row on the laptop", func() bool {
		_, err := laptop.try("row", "get", gid, "photos/before")
		return err == nil
	})

	start := time.Now()
	nsA.sh("ip", "addr", "del", "10.231.0.1/24", "dev", va)
	nsA.sh("ip", "addr", "add", "10.231.1.1/24", "dev", va)
	desktop.cli("row", "put", gid, "photos/after", `{"n": 2}`)
	testkit.WaitFor(t, 20*time.Second, "the row written after the move on the laptop", func() bool {
		_, err := laptop.try("row", "get", gid, "photos/after")
		return err == nil
	})
	resumed := time.Since(start)
	laptop.cli("row", "put", gid, "photos/back", `{"n": 3}`)
	testkit.WaitFor(t, 20*time.Second, "the laptop's row on the desktop", func() bool {
		_, err := desktop.try("row", "get", gid, "photos/back")
		return err == nil
	})
	both := time.Since(start)
	testkit.WaitFor(t, 20*time.Second, "the desktop's new address in the laptop's view of the membership", func() bool {
		out, err := laptop.try("sg", "members", gid, "--json")
		return err == nil && strings.Contains(out, "10.231.1.1")
	})
	t.Logf("after the desktop moved to another subnet: its row reached the laptop in %v, the laptop's reached it in %v, its new address in the membership in %v",
		resumed.Round(time.Millisecond), both.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
