package syncgroup

import (
	"errors"
	"fmt"
	"time"
)

// Timestamp is a hybrid logical clock reading: physical nanoseconds, and a
// counter that orders events within one nanosecond reading.
type Timestamp struct {
	Wall    int64  `msgpack:"w"`
	Logical uint32 `msgpack:"l"`
}

// Compare orders timestamps: -1, 0 or +1.
func (a Timestamp) Compare(b Timestamp) int {
	switch {
	case a.Wall < b.Wall:
		return -1
	case a.Wall > b.Wall:
		return 1
	case a.Logical < b.Logical:
		return -1
	case a.Logical > b.Logical:
		return 1
	}
	return 0
}

// String formats the timestamp for logs.
func (a Timestamp) String() string {
	return fmt.Sprintf("%s+%d", time.Unix(0, a.Wall).UTC().Format(time.RFC3339Nano), a.Logical)
}

// ErrClockSkew reports a remote timestamp too far ahead of the local clock.
var ErrClockSkew = errors.New("syncgroup: remote clock too far ahead")

// HLC is a hybrid logical clock. It reads no clock itself: callers pass the
// physical time. The zero HLC accepts no skew; set MaxSkew.
type HLC struct {
	last Timestamp
	// MaxSkew is how far ahead of local time a remote timestamp may be.
	MaxSkew time.Duration
}

// Now returns a timestamp greater than every one this clock returned or
// observed, as close to phys as that allows.
func (c *HLC) Now(phys time.Time) Timestamp {
	p := phys.UnixNano()
	if p > c.last.Wall {
		c.last = Timestamp{Wall: p}
	} else {
		c.last.Logical++
	}
	return c.last
}

// Observe folds in a remote timestamp so later local ones order after it.
// A timestamp more than MaxSkew ahead of phys is refused.
func (c *HLC) Observe(remote Timestamp, phys time.Time) error {
	if remote.Wall > phys.UnixNano()+int64(c.MaxSkew) {
		return fmt.Errorf("%w: %v is %v ahead", ErrClockSkew, remote, time.Duration(remote.Wall-phys.UnixNano()))
	}
	if remote.Compare(c.last) > 0 {
		c.last = remote
	}
	return nil
}
