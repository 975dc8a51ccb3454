package fetcher

import (
	"errors"
	"fmt"
	"time"
)

// Config sets the fetcher's and the scan's parameters. Its zero value is
// the documented defaults: New, RunScans, Backoff and ScanDelay give every
// zero field its default, and Validate rejects what cannot work.
type Config struct {
	// Concurrency is the most fetches run at once (default 16: a fetch of
	// a small blob spends most of its time waiting on the network and the
	// disk, and with 4 the queue, not the work, set a server's latency).
	Concurrency int
	// BaseDelay and Jitter make the first retry delay, BaseDelay plus a
	// random part of Jitter (defaults 500 ms and 500 ms; a negative
	// Jitter: none).
	BaseDelay, Jitter time.Duration
	// MaxShift caps the doubling of the delay: after n failed attempts the
	// delay is (BaseDelay + rand[0, Jitter)) << min(n, MaxShift) (default
	// 20: about 1 s after the first failure, about 6–12 days at the cap;
	// -1: no doubling).
	MaxShift int
	// FirstScan is the delay before the first scan (default 10 s; negative:
	// at once).
	FirstScan time.Duration
	// ScanInterval and ScanFactor make the delay between scans:
	// ScanInterval + ScanFactor × the last scan's duration (defaults 300 s
	// and 4; a ScanFactor of -1: the interval alone).
	ScanInterval time.Duration
	ScanFactor   int
}

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("fetcher: invalid config")

// Validate reports a parameter that cannot work: a negative count or
// base delay, or a MaxShift or ScanFactor outside what they allow.
func (c Config) Validate() error {
	switch {
	case c.Concurrency < 0:
		return fmt.Errorf("%w: Concurrency %d < 0", ErrConfig, c.Concurrency)
	case c.BaseDelay < 0:
		return fmt.Errorf("%w: BaseDelay %v", ErrConfig, c.BaseDelay)
	case c.MaxShift < -1 || c.MaxShift > 30:
		return fmt.Errorf("%w: MaxShift %d outside -1..30", ErrConfig, c.MaxShift)
	case c.ScanInterval < 0 || c.ScanFactor < -1:
		return fmt.Errorf("%w: scan delays %v, ×%d", ErrConfig, c.ScanInterval, c.ScanFactor)
	}
	return nil
}

// withDefaults returns c with every zero field set to its default, and
// the negative ones that mean none set to zero.
func (c Config) withDefaults() Config {
	set := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		} else if *v < 0 {
			*v = 0
		}
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		} else if *v < 0 {
			*v = 0
		}
	}
	setInt(&c.Concurrency, 16)
	set(&c.BaseDelay, 500*time.Millisecond)
	set(&c.Jitter, 500*time.Millisecond)
	setInt(&c.MaxShift, 20)
	set(&c.FirstScan, 10*time.Second)
	set(&c.ScanInterval, 300*time.Second)
	setInt(&c.ScanFactor, 4)
	return c
}

// Backoff returns the delay before the next attempt after attempts failed
// ones; u in [0, 1) picks the jitter.
func (c Config) Backoff(attempts int, u float64) time.Duration {
	c = c.withDefaults()
	d := c.BaseDelay + time.Duration(u*float64(c.Jitter))
	return d << min(max(attempts, 0), c.MaxShift)
}

// ScanDelay returns the wait before the next scan: FirstScan before the
// first, then ScanInterval + ScanFactor × the last scan's duration.
func (c Config) ScanDelay(first bool, last time.Duration) time.Duration {
	c = c.withDefaults()
	if first {
		return c.FirstScan
	}
	return c.ScanInterval + time.Duration(c.ScanFactor)*last
}
