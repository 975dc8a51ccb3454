package shares

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

// DefaultAskWait is how long a hand-off may take by default: the member
// asked may have to fetch the blob first.
const DefaultAskWait = 5 * time.Minute

// DefaultEscrowWait is how long, by default, a transfer waits in escrow
// for an acceptor that does not answer: long enough for a restart or a
// short outage, short enough that a device whose taker died is not
// pinned for good and a new server can take the shares.
const DefaultEscrowWait = time.Hour

// ErrConfig reports a Config that cannot work.
var ErrConfig = errors.New("shares: invalid config")

// Config configures a share service. Its zero value is the documented
// defaults: New gives every zero field its default, and Validate rejects
// what cannot work.
type Config struct {
	// IOTimeout bounds each request's frames, and each request that takes
	// no hand-off (default 20 s).
	IOTimeout time.Duration
	// AskWait bounds a hand-off, at both ends (default DefaultAskWait).
	AskWait time.Duration
	// EscrowWait is how long shares stay in escrow for an acceptor that
	// does not answer before Recover ends the transfer without it
	// (default DefaultEscrowWait).
	EscrowWait time.Duration
	// Asked, if not nil, takes the shares a member asks this node to
	// take; nil refuses every such request.
	Asked AskedFunc
	// Settled, if not nil, is told of every transfer this node settled as
	// the holder.
	Settled SettledFunc
	// Challenged, if not nil, is told of every member that asked to take
	// this node's shares of a blob: it does so only holding the blob, so
	// its request is its word that it does (a claim, as a signpost's).
	Challenged func(from peer.ID, ref syncnode.BlobRef, g syncnode.GroupID)
}

// Validate reports a field that cannot work: a negative duration.
func (c Config) Validate() error {
	if c.IOTimeout < 0 || c.AskWait < 0 || c.EscrowWait < 0 {
		return fmt.Errorf("%w: durations must not be negative: IOTimeout %v, AskWait %v, EscrowWait %v",
			ErrConfig, c.IOTimeout, c.AskWait, c.EscrowWait)
	}
	return nil
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.IOTimeout == 0 {
		c.IOTimeout = 20 * time.Second
	}
	if c.AskWait == 0 {
		c.AskWait = DefaultAskWait
	}
	if c.EscrowWait == 0 {
		c.EscrowWait = DefaultEscrowWait
	}
	return c
}
