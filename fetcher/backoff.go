package fetcher

import (
	"errors"
	"fmt"
	"time"
)

// Config sets the fetcher's and the scan's parameters. DefaultConfig gives
// the documented defaults.
type Config struct {
	// Concurrency is the most fetches run at once (default 16: a fetch of
	// a small blob spends most of its time waiting on the network and the
	// disk, and with 4 the queue, not the work, set a server's latency).
	Concurrency int
	// BaseDelay and Jitter make the first retry delay, BaseDelay plus a
	// random part of Jitter (defaults 500 ms and 500 ms).
	BaseDelay, Jitter time.Duration
	// MaxShift caps the doubling of the delay: after n failed attempts the
	// delay is (BaseDelay + rand[0, Jitter)) << min(n, MaxShift) (default
	// 20: about 1 s after the first failure, about 6–12 days at the cap).
	MaxShift int
	// FirstScan is the delay before the first scan (default 10 s).
	FirstScan time.Duration
	// ScanInterval and ScanFactor make the delay between scans:
	// ScanInterval + ScanFactor × the last scan's duration (defaults 300 s
	// and 4).
	ScanInterval time.Duration
	ScanFactor   int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Concurrency:  16,
		BaseDelay:    500 * time.Millisecond,
		Jitter:       500 * time.Millisecond,
		MaxShift:     20,
		FirstScan:    10 * time.Second,
		ScanInterval: 300 * time.Second,
		ScanFactor:   4,
	}
}

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("fetcher: invalid config")

// Validate checks that every parameter is usable.
func (c Config) Validate() error {
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("%w: Concurrency %d < 1", ErrConfig, c.Concurrency)
	case c.BaseDelay <= 0 || c.Jitter < 0:
		return fmt.Errorf("%w: BaseDelay %v, Jitter %v", ErrConfig, c.BaseDelay, c.Jitter)
	case c.MaxShift < 0 || c.MaxShift > 30:
		return fmt.Errorf("%w: MaxShift %d outside 0..30", ErrConfig, c.MaxShift)
	case c.FirstScan < 0 || c.ScanInterval <= 0 || c.ScanFactor < 0:
		return fmt.Errorf("%w: scan delays %v, %v, ×%d", ErrConfig, c.FirstScan, c.ScanInterval, c.ScanFactor)
	}
	return nil
}

// Backoff returns the delay before the next attempt after attempts failed
// ones; u in [0, 1) picks the jitter.
func (c Config) Backoff(attempts int, u float64) time.Duration {
	d := c.BaseDelay + time.Duration(u*float64(c.Jitter))
	return d << min(max(attempts, 0), c.MaxShift)
}

// ScanDelay returns the wait before the next scan: FirstScan before the
// first, then ScanInterval + ScanFactor × the last scan's duration.
func (c Config) ScanDelay(first bool, last time.Duration) time.Duration {
	if first {
		return c.FirstScan
	}
	return c.ScanInterval + time.Duration(c.ScanFactor)*last
}
