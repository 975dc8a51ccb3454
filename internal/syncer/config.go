package syncer

import (
	"errors"
	"fmt"
	"time"
)

// Config configures a Syncer. Its zero value is the documented defaults:
// New gives every zero field its default, and Validate rejects what cannot
// work.
type Config struct {
	// Interval between periodic rounds (default 30 s).
	Interval time.Duration
	// RoundPeers is how many members each group's periodic rounds pick,
	// at random, one of them a server when the group has one (default 2).
	RoundPeers int
	// Fanout is how many connected members a new row is pushed to by each
	// member that relays it (default DefaultFanout).
	Fanout int
	// IOTimeout bounds each frame read or write (default 20 s).
	IOTimeout time.Duration
	// Store persists the replicas; nil keeps them in memory only.
	Store Store

	// trustRows skips signature checks: only for the benchmark that
	// measures what they cost.
	trustRows bool
}

// ErrConfig reports a Config that cannot work.
var ErrConfig = errors.New("syncer: invalid config")

// Validate reports a field that cannot work: a negative duration or count.
func (c Config) Validate() error {
	if c.Interval < 0 || c.IOTimeout < 0 || c.RoundPeers < 0 || c.Fanout < 0 {
		return fmt.Errorf("%w: Interval %v, IOTimeout %v, RoundPeers %d, Fanout %d: none may be negative",
			ErrConfig, c.Interval, c.IOTimeout, c.RoundPeers, c.Fanout)
	}
	return nil
}

// withDefaults returns c with every zero field set to its default (the
// writer budget's are set where it is used, field by field).
func (c Config) withDefaults() Config {
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	if c.IOTimeout == 0 {
		c.IOTimeout = 20 * time.Second
	}
	if c.RoundPeers == 0 {
		c.RoundPeers = 2
	}
	if c.Fanout == 0 {
		c.Fanout = DefaultFanout
	}
	return c
}
