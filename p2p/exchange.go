package p2p

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	msmux "github.com/multiformats/go-multistream"
	"github.com/quic-go/quic-go"
)

// How a connection that went silent is found out. A peer that crashed or
// lost its network sends nothing, not even a close: its connections look
// alive until QUIC's idle timeout (30 s) or TCP's much later.
const (
	// ProbeAfter is how long a request waits for the first byte of its
	// answer before its connection is probed: a ping costs one round trip,
	// so a slow answer costs little more than that.
	ProbeAfter = 500 * time.Millisecond
	// ProbeTimeout bounds a probe: a ping over that same connection. A
	// false verdict closes a live connection and every stream on it, so
	// it leaves room for a peer that is only busy.
	ProbeTimeout = 3 * time.Second
)

// ErrProbe reports a connection that did not answer a ping in time.
var ErrProbe = errors.New("p2p: connection did not answer a ping")

// Exchange opens a stream to p for proto and runs fn on it; fn closes or
// resets the stream. It is how every syncnode request is sent:
//
//   - A connection that goes quiet is probed: when no byte of the answer
//     has come ProbeAfter after the stream opened (then twice as long
//     each time), and the connection brought no bytes on any stream
//     meanwhile, it is pinged over that connection, one ping shared by
//     every request waiting on it, and closed if neither the ping's answer
//     nor any byte comes within ProbeTimeout — fn's read then fails at
//     once instead of at its own timeout.
//   - A dead connection is replaced once: when fn fails because the
//     stream's connection is gone (closed under it, reset by a peer that
//     restarted, timed out, or closed after a failed probe) before any
//     byte of the answer arrived, fn runs once more on a new stream, which
//     dials the peer again. A peer that restarted is thus reached at once,
//     and the request is never taken to have reached it. After a failed
//     probe the peer is tried again only if there is another way to it (a
//     second connection, or an address other than the silent one): the
//     same address that just went silent would only make the caller wait
//     out a dial.
func Exchange(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID, fn func(network.Stream) error) error {
	live := livenessOf(h)
	for try := 0; ; try++ {
		st, err := h.NewStream(ctx, p, proto)
		if err != nil {
			return fmt.Errorf("p2p: open %s stream to %s: %w", proto, p, err)
		}
		ws := &watchedStream{Stream: st, live: live}
		stop := ws.watch(ctx)
		err = fn(ws)
		stop()
		if err == nil || try > 0 || ctx.Err() != nil || ws.answered.Load() || !connGone(st.Conn(), err) {
			return err
		}
		// Closed already, or as good as: closing it makes sure the next
		// stream does not land on it.
		c := st.Conn()
		c.Close()
		if ws.silent.Load() && !otherWay(h, p, c) {
			return fmt.Errorf("%w: %w", ErrProbe, err)
		}
	}
}

// MarkAnswered tells Exchange that the request fn was to send on st, the
// stream Exchange handed it, went on another stream instead: a failure of
// st's connection then no longer makes Exchange send the request again.
func MarkAnswered(st network.Stream) {
	if ws, ok := st.(*watchedStream); ok {
		ws.answered.Store(true)
	}
}

// otherWay reports whether p can be reached otherwise than over c: an
// open connection besides it, or an address other than c's.
func otherWay(h host.Host, p peer.ID, c network.Conn) bool {
	for _, o := range h.Network().ConnsToPeer(p) {
		if o != c && !o.IsClosed() {
			return true
		}
	}
	for _, a := range h.Peerstore().Addrs(p) {
		if !a.Equal(c.RemoteMultiaddr()) {
			return true
		}
	}
	return false
}

// connGone reports whether err ended a stream on c because c itself is
// gone: closed (by either side, or after a failed probe), reset by a peer
// that no longer knows it, or timed out.
func connGone(c network.Conn, err error) bool {
	if err == nil {
		return false
	}
	if c != nil && c.IsClosed() {
		return true
	}
	var (
		ce    *network.ConnError
		reset *quic.StatelessResetError
		idle  *quic.IdleTimeoutError
	)
	return errors.As(err, &ce) || errors.As(err, &reset) || errors.As(err, &idle) || errors.Is(err, ErrProbe)
}

// watchedStream is a stream that notes whether any byte of the answer
// arrived, and tells the connection's liveness of every byte.
type watchedStream struct {
	network.Stream
	live     *liveness
	answered atomic.Bool
	// silent is set when the connection failed a probe.
	silent atomic.Bool
}

func (s *watchedStream) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	if n > 0 {
		s.answered.Store(true)
		s.live.heard(s.Stream.Conn())
	}
	return n, err
}

// watch probes the stream's connection while no byte of the answer has
// come: after ProbeAfter, then after twice as long each time, unless the
// connection brought bytes on any stream meanwhile. A connection that
// fails a probe is closed. The returned function stops the watch.
func (s *watchedStream) watch(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := s.Stream.Conn()
		for wait := ProbeAfter; ; wait *= 2 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			if s.answered.Load() {
				return
			}
			if s.live.heardWithin(c, wait) {
				continue
			}
			if !s.live.probe(ctx, c) {
				if ctx.Err() == nil {
					s.silent.Store(true)
					c.Close()
				}
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

// liveness is what a host knows of its connections' life: when each last
// brought a byte to a watched stream, and the probe running on it, which
// every request waiting on that connection shares.
type liveness struct {
	mu    sync.Mutex
	conns map[network.Conn]*connLife
}

type connLife struct {
	heard time.Time
	// probing is closed when the running probe ends; alive is its verdict.
	probing chan struct{}
	alive   bool
}

func newLiveness() *liveness { return &liveness{conns: map[network.Conn]*connLife{}} }

// livenessOf returns the liveness that a host built by NewHost keeps, or
// a fresh one for any other host.
func livenessOf(h host.Host) *liveness {
	if lh, ok := h.(*Host); ok {
		return lh.live
	}
	return newLiveness()
}

func (l *liveness) life(c network.Conn) *connLife {
	cl := l.conns[c]
	if cl == nil {
		cl = &connLife{}
		l.conns[c] = cl
	}
	return cl
}

// heard notes that c brought bytes now.
func (l *liveness) heard(c network.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !c.IsClosed() {
		l.life(c).heard = time.Now()
	}
}

// heardWithin reports whether c brought bytes within the last d.
func (l *liveness) heardWithin(c network.Conn, d time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	cl := l.conns[c]
	return cl != nil && time.Since(cl.heard) < d
}

// probe reports whether c answers a probe, joining the probe already
// running on c if there is one.
func (l *liveness) probe(ctx context.Context, c network.Conn) bool {
	l.mu.Lock()
	cl := l.life(c)
	running := cl.probing
	if running == nil {
		running = make(chan struct{})
		cl.probing = running
		l.mu.Unlock()
		start := time.Now()
		err := pingConn(ctx, c)
		l.mu.Lock()
		// Bytes that came on any stream while the ping went unanswered
		// show the peer alive, only slow.
		alive := err == nil || !errors.Is(err, ErrProbe) || cl.heard.After(start)
		if alive {
			cl.heard = time.Now()
		}
		cl.alive = alive
		cl.probing = nil
		close(running)
		l.mu.Unlock()
		return alive
	}
	l.mu.Unlock()
	select {
	case <-running:
	case <-ctx.Done():
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return cl.alive
}

// forget drops what is known of c, once it is closed.
func (l *liveness) forget(c network.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, c)
}

// pingConn pings the peer over connection c itself (not over whichever
// connection the host would pick), within ProbeTimeout. It fails with
// ErrProbe only when the connection is gone or silent: a peer that
// refuses or resets the ping stream (too busy to take one more) is alive.
func pingConn(ctx context.Context, c network.Conn) error {
	pctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	st, err := c.NewStream(pctx)
	if err != nil {
		if c.IsClosed() || pctx.Err() != nil {
			return fmt.Errorf("%w: %w", ErrProbe, err)
		}
		return err
	}
	defer context.AfterFunc(pctx, func() { st.Reset() })()
	if err := probeOn(st); err != nil {
		st.Reset()
		if c.IsClosed() || (pctx.Err() != nil && ctx.Err() == nil) {
			return fmt.Errorf("%w: %w", ErrProbe, err)
		}
		return err
	}
	return st.Close()
}

// probeOn negotiates the ping protocol on st and checks one echo.
func probeOn(st network.Stream) error {
	if err := st.SetProtocol(ping.ID); err != nil {
		return err
	}
	if err := msmux.SelectProtoOrFail(ping.ID, st); err != nil {
		return err
	}
	want := make([]byte, ping.PingSize)
	rand.Read(want)
	if _, err := st.Write(want); err != nil {
		return err
	}
	got := make([]byte, ping.PingSize)
	if _, err := io.ReadFull(st, got); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return errors.New("the echo differs")
	}
	return nil
}

// ProbeOthers probes, each on its own goroutine, the peer's connections
// other than c, closing those that fail: a peer that connects anew may
// have restarted, and the connections to its old process are dead, though
// nothing said so. It returns at once.
func ProbeOthers(ctx context.Context, h host.Host, c network.Conn) {
	live := livenessOf(h)
	for _, o := range h.Network().ConnsToPeer(c.RemotePeer()) {
		if o == c || o.IsClosed() {
			continue
		}
		go func() {
			if !live.probe(ctx, o) && ctx.Err() == nil {
				o.Close()
			}
		}()
	}
}
