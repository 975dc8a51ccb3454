package lan

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/testkit"
)

// needNAT skips the test where NAT routers cannot be built.
func needNAT(t *testing.T) {
	needNetns(t)
	if _, err := exec.LookPath("nft"); err != nil {
		if os.Getenv("SYNCNODE_NETNS_TESTS") != "" {
			t.Fatal("no nft (nftables) on PATH, and SYNCNODE_NETNS_TESTS is set")
		}
		t.Skip("no nft (nftables) on PATH")
	}
}

// internet is a "public" segment: a bridge in a namespace of its own, to
// which hosts attach with addresses in 11.0.0.0/24. These are public
// addresses to libp2p, yet no packet leaves the test's namespaces: none
// has a route out.
type internet struct {
	t  *testing.T
	ns *netns
	id string
	n  int
}

func newInternet(t *testing.T) *internet {
	id := randomID()
	in := &internet{t: t, ns: newNetns(t, "sn-i-"+id), id: id}
	in.ns.sh("ip", "link", "add", "br0", "type", "bridge")
	in.ns.sh("ip", "link", "set", "br0", "up")
	return in
}

// attach joins host to the segment at ip, returning its interface's name.
func (in *internet) attach(host *netns, ip string) string {
	in.n++
	dev, br := fmt.Sprintf("snw%s%d", in.id, in.n), fmt.Sprintf("snx%s%d", in.id, in.n)
	sh(in.t, "ip", "link", "add", dev, "type", "veth", "peer", "name", br)
	sh(in.t, "ip", "link", "set", dev, "netns", host.name)
	sh(in.t, "ip", "link", "set", br, "netns", in.ns.name)
	in.ns.sh("ip", "link", "set", br, "master", "br0")
	in.ns.sh("ip", "link", "set", br, "up")
	host.sh("ip", "addr", "add", ip+"/24", "dev", dev)
	host.sh("ip", "link", "set", dev, "up")
	return dev
}

// behindNAT builds a home network: a NAT router attached to the internet
// at publicIP, and a namespace behind it on lan (say "10.1.0": the router
// is .1, the device .2), returned. The router masquerades what leaves for
// the internet and drops connections the internet starts. Without random
// it keeps a device's source port where it can (an endpoint-independent
// mapping, which hole punching gets through); with random it picks a
// random port for every flow (a symmetric NAT, which defeats it). The
// addresses members announce from behind it are what a server saw.
func behindNAT(t *testing.T, in *internet, name, publicIP, lan string, random bool) (dev, router *netns) {
	id := randomID()
	router, dev = newNetns(t, "sn-"+name+"r-"+id), newNetns(t, "sn-"+name+"-"+id)
	wan := in.attach(router, publicIP)
	lr, ld := "snl"+id, "snd"+id
	sh(t, "ip", "link", "add", lr, "type", "veth", "peer", "name", ld)
	sh(t, "ip", "link", "set", lr, "netns", router.name)
	sh(t, "ip", "link", "set", ld, "netns", dev.name)
	router.sh("ip", "addr", "add", lan+".1/24", "dev", lr)
	router.sh("ip", "link", "set", lr, "up")
	dev.sh("ip", "addr", "add", lan+".2/24", "dev", ld)
	dev.sh("ip", "link", "set", ld, "up")
	dev.sh("ip", "route", "add", "default", "via", lan+".1")
	router.sh("sysctl", "-qw", "net.ipv4.ip_forward=1")
	router.sh("nft", "add", "table", "ip", "nat")
	router.sh("nft", "add", "chain", "ip", "nat", "post", "{ type nat hook postrouting priority srcnat ; }")
	masq := []string{"nft", "add", "rule", "ip", "nat", "post", "oifname", wan, "masquerade"}
	if random {
		masq = append(masq, "fully-random")
	}
	router.sh(masq...)
	// What the internet starts is dropped, whether it is for the router
	// or for the network behind it, as home routers do. Dropped, it
	// leaves no connection-tracking entry behind, which would otherwise
	// take the port a device's next outbound flow is mapped to.
	router.sh("nft", "add", "table", "ip", "filter")
	for _, hook := range []string{"input", "forward"} {
		router.sh("nft", "add", "chain", "ip", "filter", "from_"+hook, "{ type filter hook "+hook+" priority 0 ; policy accept ; }")
		router.sh("nft", "add", "rule", "ip", "filter", "from_"+hook, "iifname", wan, "ct", "state", "new", "drop")
	}
	return dev, router
}

// block has router drop every packet its network sends to ip, until the
// returned func lifts it.
func block(router *netns, ip string) (lift func()) {
	router.sh("nft", "add", "table", "ip", "block")
	router.sh("nft", "add", "chain", "ip", "block", "drops", "{ type filter hook forward priority 0 ; policy accept ; }")
	router.sh("nft", "add", "rule", "ip", "block", "drops", "ip", "daddr", ip, "drop")
	return func() { router.sh("nft", "delete", "table", "ip", "block") }
}

// rxBytes returns the bytes received on interface dev of ns.
func rxBytes(t *testing.T, ns *netns, dev string) int64 {
	var links []struct {
		Stats struct {
			RX struct {
				Bytes int64 `json:"bytes"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(ns.sh("ip", "-s", "-j", "link", "show", "dev", dev)), &links); err != nil || len(links) != 1 {
		t.Fatalf("counters of %s: %v", dev, err)
	}
	return links[0].Stats.RX.Bytes
}

// peer returns d's view of its connections to p.
func (d *device) peer(p string) (api.Peer, bool) {
	out, err := d.try("peers", "--json")
	if err != nil {
		return api.Peer{}, false
	}
	var ps []api.Peer
	if json.Unmarshal([]byte(out), &ps) != nil {
		return api.Peer{}, false
	}
	i := slices.IndexFunc(ps, func(x api.Peer) bool { return x.ID == p })
	if i < 0 {
		return api.Peer{}, false
	}
	return ps[i], true
}

// natScene is a server on the internet and two devices behind NATs, all
// members of one group the server runs as a server (so it relays for
// them), and a second group of the two devices alone.
type natScene struct {
	server, a, b *device
	serverNS     *netns
	// unblock lets the devices' direct packets to each other through, when
	// the scene was made with them dropped.
	unblock   func()
	serverDev string
	shared    string // the group with the server
	private   string // the devices' own group
	reserved  time.Duration
	// quick: the devices join both groups at once, and nothing waits for
	// their relay reservations.
	quick bool
}

func newNATScene(t *testing.T, symmetric bool, init ...string) *natScene {
	return newNATSceneBlocked(t, symmetric, false, init...)
}

// newNATSceneBlocked is newNATScene, with the routers dropping whatever
// one device sends to the other's public address, if blocked, until
// sc.unblock.
func newNATSceneBlocked(t *testing.T, symmetric, blocked bool, init ...string) *natScene {
	return newNATSceneWith(t, &natScene{unblock: func() {}}, symmetric, blocked, init...)
}

// newNATSceneWith builds the scene into sc; with sc.quick, the devices
// join both groups at once and nothing waits for relay reservations.
func newNATSceneWith(t *testing.T, sc *natScene, symmetric, blocked bool, init ...string) *natScene {
	in := newInternet(t)
	sns := newNetns(t, "sn-s-"+randomID())
	sc.serverNS, sc.serverDev = sns, in.attach(sns, "11.0.0.10")
	nsA, routerA := behindNAT(t, in, "a", "11.0.0.1", "10.1.0", symmetric)
	nsB, routerB := behindNAT(t, in, "b", "11.0.0.2", "10.2.0", symmetric)
	if blocked {
		liftA, liftB := block(routerA, "11.0.0.2"), block(routerB, "11.0.0.1")
		sc.unblock = func() { liftA(); liftB() }
	}
	sc.server = startDevice(t, sns, "server")
	sc.a = startDevice(t, nsA, "phone", init...)
	sc.b = startDevice(t, nsB, "laptop", init...)
	start := time.Now()
	sc.shared = strings.TrimSpace(sc.server.cli("sg", "create", "family", "-prefix", "photos/", "-private", "-type", "server"))
	for _, d := range []*device{sc.a, sc.b} {
		d.cli("sg", "join", sc.server.cli("sg", "invite", sc.shared, d.status().ID))
	}
	if sc.quick {
		// The devices' own group at once, before any settling.
		sc.private = strings.TrimSpace(sc.a.cli("sg", "create", "diary", "-prefix", "diary/", "-private"))
		sc.b.cli("sg", "join", sc.a.cli("sg", "invite", sc.private, sc.b.status().ID))
		return sc
	}
	serverID := sc.server.status().ID
	for _, d := range []*device{sc.a, sc.b} {
		testkit.WaitFor(t, 60*time.Second, "a relay reservation with the server behind the NAT", func() bool {
			st := d.status()
			return st.Reachability == "private" && slices.Contains(st.Relays, serverID)
		})
	}
	sc.reserved = time.Since(start)
	// The servers' view says "behind a NAT" long before AutoNAT's own
	// verdict, which a NAT that drops silently holds for 15 s.
	if sc.reserved > 10*time.Second {
		t.Errorf("relay reservations %v after the joins; the server saw the devices behind NATs at once", sc.reserved)
	}
	if st := sc.server.status(); st.Reachability == "private" || len(st.Relays) > 0 {
		t.Errorf("the server on the public segment thinks itself behind a NAT: %+v", st)
	}
	// The devices' own group: the server is not in it, so its blobs go
	// from device to device.
	sc.private = strings.TrimSpace(sc.a.cli("sg", "create", "diary", "-prefix", "diary/", "-private"))
	sc.b.cli("sg", "join", sc.a.cli("sg", "invite", sc.private, sc.b.status().ID))
	return sc
}

var refPattern = regexp.MustCompile(`bafkr[a-z2-7]+`)

// putBlob stores size random bytes on d under key in group g, returning
// the ref and the bytes.
func putBlob(t *testing.T, d *device, g, key string, size int, seed uint64) (string, []byte) {
	data := testkit.RandomBytes(size, seed)
	file := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// The output holds the progress bar (stderr) before the ref.
	refs := refPattern.FindAllString(d.cli("blob", "put", file), -1)
	if len(refs) == 0 {
		t.Fatal("blob put printed no ref")
	}
	ref := refs[len(refs)-1]
	d.cli("row", "put", g, key, `{"file": {"$blob": "`+ref+`"}}`)
	return ref, data
}

// waitRelayed waits until d is connected to peer p through a relay.
func waitRelayed(t *testing.T, d *device, p string) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "the devices connected through the relay", func() bool {
		info, ok := d.peer(p)
		return ok && len(info.Relays) > 0
	})
}

// waitRow waits until d has row key of group g.
func waitRow(t *testing.T, d *device, g, key string) {
	t.Helper()
	testkit.WaitFor(t, 30*time.Second, "row "+key, func() bool {
		_, err := d.try("row", "get", g, key)
		return err == nil
	})
}

// getBlob fetches ref on d and checks its bytes.
func getBlob(t *testing.T, d *device, ref string, want []byte) {
	out := filepath.Join(t.TempDir(), "got")
	d.cli("blob", "get", ref, "-o", out)
	if got, _ := os.ReadFile(out); string(got) != string(want) {
		t.Fatal("the fetched copy differs")
	}
}

// Two devices behind two NATs that keep ports: their rows and blobs reach
// each other and the server, and the relayed connection between them is
// upgraded by hole punching, so the blob goes direct.
func TestTwoNATsHolePunch(t *testing.T) {
	needNAT(t)
	sc := newNATScene(t, false)
	a, b, server := sc.a, sc.b, sc.server
	aID := a.status().ID

	start := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := b.try("peers", "--json")
			m, _ := b.try("sg", "members", sc.shared, "--json")
			t.Logf("laptop's peers:\n%s\nmembers:\n%s", out, m)
		}
	})
	testkit.WaitFor(t, 60*time.Second, "a direct connection between the devices behind their NATs", func() bool {
		p, ok := b.peer(aID)
		return ok && p.Direct
	})
	punched := time.Since(start)

	ref, data := putBlob(t, a, sc.shared, "photos/beach", 3<<20, 11)
	waitRow(t, b, sc.shared, "photos/beach")
	testkit.WaitFor(t, 60*time.Second, "the server's copy of the phone's blob", func() bool {
		var w api.Why
		out, err := server.try("why", ref, "--json")
		return err == nil && json.Unmarshal([]byte(out), &w) == nil && w.Held
	})

	ref2, data2 := putBlob(t, a, sc.private, "diary/today", 3<<20, 12)
	waitRow(t, b, sc.private, "diary/today")
	before := rxBytes(t, sc.serverNS, sc.serverDev)
	fetchStart := time.Now()
	getBlob(t, b, ref2, data2)
	took := time.Since(fetchStart)
	relayed := rxBytes(t, sc.serverNS, sc.serverDev) - before
	var w api.Why
	if err := json.Unmarshal([]byte(b.cli("why", ref2, "--json")), &w); err != nil {
		t.Fatal(err)
	}
	if w.Route != "" {
		t.Fatalf("the blob crossed a relay though the devices had a direct connection: %s", w.Route)
	}
	if p, _ := b.peer(aID); !p.Direct {
		t.Fatalf("the laptop's connection to the phone is not direct: %+v", p)
	}
	if relayed > int64(len(data2))/10 {
		t.Fatalf("the server received %d bytes while the laptop fetched %d directly", relayed, len(data2))
	}
	getBlob(t, b, ref, data)
	t.Logf("relay reservations behind NAT %v after start; direct connection between the devices %v after that; %d MiB fetched direct in %v; the server's interface took in %d bytes meanwhile (%.1f%% of the blob)",
		sc.reserved.Round(time.Millisecond), punched.Round(time.Millisecond), len(data2)>>20, took.Round(time.Millisecond), relayed, 100*float64(relayed)/float64(len(data2)))
}

// TestFetchRightAfterJoiningGoesDirect: two devices behind home NATs
// (ports kept, unsolicited packets dropped) fetch from each other right
// after they joined their own group, before any renewed punch came
// round: the fetch punches first and waits for it briefly, so 16 MB go
// direct, not through the server's throttled relay, in under 3 s.
func TestFetchRightAfterJoiningGoesDirect(t *testing.T) {
	needNAT(t)
	sc := newNATSceneWith(t, &natScene{quick: true, unblock: func() {}}, false, false)
	joined := time.Now()
	a, b := sc.a, sc.b
	ref, data := putBlob(t, a, sc.private, "diary/today", 16<<20, 21)
	waitRow(t, b, sc.private, "diary/today")
	if wait := time.Until(joined.Add(2 * time.Second)); wait > 0 {
		time.Sleep(wait)
	}
	p, _ := b.peer(a.status().ID)
	t.Logf("the fetch starts %v after the join (connection then: direct %v, relays %v)", time.Since(joined).Round(time.Millisecond), p.Direct, p.Relays)
	fetchDirect(t, b, ref, data)
}

// fetchDirect fetches ref on d, checks its bytes, and fails unless the
// blob came direct (no relay on its route) in under 3 s.
func fetchDirect(t *testing.T, d *device, ref string, data []byte) {
	t.Helper()
	start := time.Now()
	getBlob(t, d, ref, data)
	took := time.Since(start)
	var w api.Why
	if err := json.Unmarshal([]byte(d.cli("why", ref, "--json")), &w); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MiB in %v, route %q", len(data)>>20, took.Round(time.Millisecond), w.Route)
	if w.Route != "" {
		t.Fatalf("the blob crossed a relay: %s", w.Route)
	}
	if took > 3*time.Second {
		t.Fatalf("%d MiB took %v, over 3 s", len(data)>>20, took)
	}
}

// TestFetchPunchesFirst: the devices' first hole punches failed (their
// routers dropped each other's packets while they met through the
// server's relay); the routers let them through again, and a fetch comes
// before any renewed punch is due. The fetch punches first: 16 MB go
// direct, not through the throttled relay, in under 3 s.
func TestFetchPunchesFirst(t *testing.T) {
	needNAT(t)
	sc := newNATSceneBlocked(t, false, true)
	a, b := sc.a, sc.b
	aID := a.status().ID
	waitRelayed(t, b, aID)
	ref, data := putBlob(t, a, sc.private, "diary/blocked", 16<<20, 22)
	waitRow(t, b, sc.private, "diary/blocked")
	if p, _ := b.peer(aID); p.Direct {
		t.Fatalf("a direct connection through routers that drop it: %+v", p)
	}
	sc.unblock()
	fetchDirect(t, b, ref, data)
}

// A hole punch that failed is tried again. The routers drop what each
// device sends to the other's public address while they join and meet
// through the server's relay, so the punches libp2p makes when the
// relayed connection opens (three, once) all fail. Once the routers let
// the packets through, the device that dialled through the relay dials
// again, its peer punches once more, and the devices connect directly.
func TestHolePunchTriedAgainAfterAFailure(t *testing.T) {
	needNAT(t)
	sc := newNATSceneBlocked(t, false, true)
	a, b := sc.a, sc.b
	aID := a.status().ID
	waitRelayed(t, b, aID)
	// libp2p's punches run at once and fail against the block.
	time.Sleep(30 * time.Second)
	if p, _ := b.peer(aID); p.Direct {
		t.Fatalf("a direct connection through routers that drop it: %+v", p)
	}
	sc.unblock()
	lifted := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := b.try("peers", "--json")
			t.Logf("laptop's peers:\n%s", out)
		}
	})
	testkit.WaitFor(t, 150*time.Second, "a direct connection once the routers let it through", func() bool {
		p, ok := b.peer(aID)
		return ok && p.Direct
	})
	t.Logf("direct %v after the routers let the devices' packets through", time.Since(lifted).Round(time.Millisecond))
}

// Behind NATs that map every flow to a random port, hole punching fails;
// the laptop still gets the phone's blob, through the server's relay,
// throttled as its setting says, and why says so.
func TestSymmetricNATFallsBackToRelay(t *testing.T) {
	needNAT(t)
	const rate = 2 << 20
	sc := newNATScene(t, true, "-relayed", "throttle", "-relay-rate", fmt.Sprint(rate))
	a, b, server := sc.a, sc.b, sc.server
	aID, serverID := a.status().ID, server.status().ID

	ref, data := putBlob(t, a, sc.private, "diary/today", 4<<20, 13)
	waitRow(t, b, sc.private, "diary/today")
	before := rxBytes(t, sc.serverNS, sc.serverDev)
	start := time.Now()
	getBlob(t, b, ref, data)
	took := time.Since(start)
	relayed := rxBytes(t, sc.serverNS, sc.serverDev) - before

	p, ok := b.peer(aID)
	if !ok || p.Direct || !slices.Contains(p.Relays, serverID) {
		t.Fatalf("the laptop's connection to the phone should run through the server's relay only: %+v", p)
	}
	var w api.Why
	if err := json.Unmarshal([]byte(b.cli("why", ref, "--json")), &w); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(w.Route, "through relay server") || !strings.Contains(w.Route, "throttled") {
		t.Fatalf("why does not say the blob came through the server's relay, throttled: %q", w.Route)
	}
	if why := b.cli("why", ref); !strings.Contains(why, "through relay") {
		t.Fatalf("why's text does not name the relay:\n%s", why)
	}
	if relayed < int64(len(data)) {
		t.Fatalf("the server's interface took in %d bytes, less than the %d-byte blob it relayed", relayed, len(data))
	}
	if min := time.Duration(float64(len(data)-rate) / rate * float64(time.Second)); took < min {
		t.Fatalf("a %d-byte fetch throttled to %d bytes/s took %v, under %v", len(data), rate, took, min)
	}
	t.Logf("relay reservations behind symmetric NATs %v after start; %d MiB through the relay in %v (throttle %d MiB/s); the server's interface took in %d bytes (%.0f%% of the blob); route: %s",
		sc.reserved.Round(time.Millisecond), len(data)>>20, took.Round(time.Millisecond), rate>>20, relayed, 100*float64(relayed)/float64(len(data)), w.Route)
}
