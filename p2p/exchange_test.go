package p2p

import (
	"bufio"
	"errors"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
)

// udpProxy forwards QUIC datagrams between clients and a target that can
// be switched (a peer restarted behind the same address) or silenced (a
// peer that crashed, or whose network went away).
type udpProxy struct {
	conn *net.UDPConn

	mu      sync.Mutex
	target  *net.UDPAddr // nil: drop everything
	clients map[string]*net.UDPConn
}

func newUDPProxy(t *testing.T, target *net.UDPAddr) *udpProxy {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{conn: c, target: target, clients: map[string]*net.UDPConn{}}
	t.Cleanup(p.close)
	go p.run()
	return p
}

// addr is the proxy's address as a QUIC multiaddr.
func (p *udpProxy) addr() ma.Multiaddr {
	a := p.conn.LocalAddr().(*net.UDPAddr)
	return ma.StringCast("/ip4/127.0.0.1/udp/" + strconv.Itoa(a.Port) + "/quic-v1")
}

// point sends what comes from now on to target (nil: nowhere).
func (p *udpProxy) point(target *net.UDPAddr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
	for _, up := range p.clients {
		up.Close()
	}
	p.clients = map[string]*net.UDPConn{}
}

func (p *udpProxy) close() {
	p.conn.Close()
	p.point(nil)
}

func (p *udpProxy) run() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		target := p.target
		up := p.clients[from.String()]
		if target != nil && up == nil {
			if up, err = net.DialUDP("udp", nil, target); err == nil {
				p.clients[from.String()] = up
				go p.back(up, from)
			}
		}
		p.mu.Unlock()
		if target != nil && up != nil {
			up.Write(buf[:n])
		}
	}
}

// back forwards the target's answers to client.
func (p *udpProxy) back(up *net.UDPConn, client *net.UDPAddr) {
	buf := make([]byte, 64<<10)
	for {
		n, err := up.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		live := p.target != nil
		p.mu.Unlock()
		if live {
			p.conn.WriteToUDP(buf[:n], client)
		}
	}
}

const echoProto = "/syncnode/test/echo/1.0.0"

// echoHost is a QUIC-only host with identity key file key, answering
// echo requests.
func echoHost(t *testing.T, key string) host.Host {
	t.Helper()
	cfg := DefaultHostConfig()
	cfg.IdentityFile = key
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	h.SetStreamHandler(echoProto, func(st network.Stream) {
		defer st.Close()
		line, err := bufio.NewReader(st).ReadString('\n')
		if err != nil {
			st.Reset()
			return
		}
		st.Write([]byte(line))
	})
	return h
}

func udpAddrOf(t *testing.T, h host.Host) *net.UDPAddr {
	t.Helper()
	for _, a := range h.Addrs() {
		if port, err := a.ValueForProtocol(ma.P_UDP); err == nil {
			u, err := net.ResolveUDPAddr("udp", "127.0.0.1:"+port)
			if err != nil {
				t.Fatal(err)
			}
			return u
		}
	}
	t.Fatal("no UDP address")
	return nil
}

// echo sends one line on st and reads it back.
func echo(st network.Stream) error {
	defer st.Close()
	if err := st.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		return err
	}
	if _, err := st.Write([]byte("hello\n")); err != nil {
		st.Reset()
		return err
	}
	line, err := bufio.NewReader(st).ReadString('\n')
	if err != nil {
		st.Reset()
		return err
	}
	if line != "hello\n" {
		return errors.New("bad echo")
	}
	return nil
}

// restartedPeer sets up a client connected through a proxy to a server
// that is then replaced by a new process on the same identity, reached at
// the same address; the client's connection is to the old one.
func restartedPeer(t *testing.T) (client host.Host, server host.Host) {
	key := filepath.Join(t.TempDir(), "identity.key")
	old := echoHost(t, key)
	proxy := newUDPProxy(t, udpAddrOf(t, old))
	client = echoHost(t, "")
	client.Peerstore().AddAddrs(old.ID(), []ma.Multiaddr{proxy.addr()}, peerstore.PermanentAddrTTL)
	if err := Exchange(t.Context(), client, old.ID(), echoProto, func(st network.Stream) error { return echo(st) }); err != nil {
		t.Fatal(err)
	}
	// The old process dies without a word: the proxy no longer reaches
	// it, and it is closed only after the proxy points elsewhere.
	proxy.point(nil)
	server = echoHost(t, key)
	proxy.point(udpAddrOf(t, server))
	old.Close()
	return client, server
}

// A peer restarted on the same identity and address answers the old
// connection with a stateless reset: an Exchange on that connection
// replaces it and succeeds at once. (A plain stream fails there unless a
// packet of the client's reached the new process first and got the reset
// already; featuretests/faults' TestFetchFromRestartedHolder shows the
// failure with real daemons.)
func TestExchangeReachesARestartedPeer(t *testing.T) {
	t.Parallel()
	client, server := restartedPeer(t)
	start := time.Now()
	err := Exchange(t.Context(), client, server.ID(), echoProto, func(st network.Stream) error { return echo(st) })
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the exchange took %v (a read on the dead connection times out at 20 s)", took)
	}
}

// A peer that went silent (crashed, or its network gone) is found out by
// a probe: the exchange fails after about ProbeAfter+ProbeTimeout with
// ErrProbe, not at the request's own 20 s timeout.
func TestExchangeGivesUpOnASilentPeer(t *testing.T) {
	t.Parallel()
	server := echoHost(t, filepath.Join(t.TempDir(), "identity.key"))
	proxy := newUDPProxy(t, udpAddrOf(t, server))
	client := echoHost(t, "")
	client.Peerstore().AddAddrs(server.ID(), []ma.Multiaddr{proxy.addr()}, peerstore.PermanentAddrTTL)
	send := func() error {
		return Exchange(t.Context(), client, server.ID(), echoProto, func(st network.Stream) error { return echo(st) })
	}
	if err := send(); err != nil {
		t.Fatal(err)
	}
	// The server is known at the proxy's address alone (identify taught
	// the client its own).
	client.Peerstore().ClearAddrs(server.ID())
	client.Peerstore().AddAddrs(server.ID(), []ma.Multiaddr{proxy.addr()}, peerstore.PermanentAddrTTL)
	proxy.point(nil)
	start := time.Now()
	err := send()
	took := time.Since(start)
	if !errors.Is(err, ErrProbe) {
		t.Fatalf("exchange with a silent peer: %v, want ErrProbe", err)
	}
	if took > 10*time.Second {
		t.Fatalf("the silent peer was given up after %v (its read times out at 20 s)", took)
	}
	if client.Network().Connectedness(server.ID()) == network.Connected {
		t.Fatal("the silent connection is still open")
	}
}

// A silent connection to a peer that can be reached another way (it came
// back on a new address, which the client knows) is replaced: the
// exchange succeeds after the probe.
func TestExchangeRedialsASilentPeerAtItsOtherAddress(t *testing.T) {
	t.Parallel()
	server := echoHost(t, filepath.Join(t.TempDir(), "identity.key"))
	proxy := newUDPProxy(t, udpAddrOf(t, server))
	client := echoHost(t, "")
	send := func() error {
		return Exchange(t.Context(), client, server.ID(), echoProto, func(st network.Stream) error { return echo(st) })
	}
	client.Peerstore().AddAddrs(server.ID(), []ma.Multiaddr{proxy.addr()}, peerstore.PermanentAddrTTL)
	if err := send(); err != nil {
		t.Fatal(err)
	}
	if c := client.Network().ConnsToPeer(server.ID()); len(c) != 1 || !c[0].RemoteMultiaddr().Equal(proxy.addr()) {
		t.Fatalf("the client is not connected through the proxy: %v", c)
	}
	client.Peerstore().AddAddrs(server.ID(), server.Addrs(), peerstore.PermanentAddrTTL)
	proxy.point(nil)
	start := time.Now()
	if err := send(); err != nil {
		t.Fatalf("exchange after the proxy went silent: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the exchange took %v (its read times out at 20 s)", took)
	}
}
