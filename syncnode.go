// Package syncnode holds the value types shared by every syncnode package:
// blob references, syncgroup IDs, device types and sync priorities, and the
// sentinel errors callers test with errors.Is. It imports nothing of ours.
package syncnode

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors shared across packages. Callers wrap them with %w and test
// them with errors.Is.
var (
	// ErrNotFound reports that a blob, record or entry does not exist.
	ErrNotFound = errors.New("syncnode: not found")
	// ErrBadBlobRef reports a blob reference that cannot be parsed.
	ErrBadBlobRef = errors.New("syncnode: malformed blob ref")
	// ErrHashMismatch reports bytes whose hash does not match their blob ref.
	ErrHashMismatch = errors.New("syncnode: bytes do not match blob ref")
	// ErrCorruptRecord reports a stored or received record that cannot be decoded.
	ErrCorruptRecord = errors.New("syncnode: corrupt record")
)

// GroupID names a syncgroup. It is opaque to everything but the syncgroup
// package.
type GroupID string

// DevType is the role a member declares in a syncgroup. Normal is the zero
// value.
type DevType uint8

// Device types, in the order the wire and disk forms use.
const (
	// Normal is an ordinary device: a laptop or a phone.
	Normal DevType = iota
	// Server is an always-on device that pulls and keeps every blob of its
	// syncgroups.
	Server
	// Leaf is a device that should not keep blobs: a camera or a sensor.
	Leaf
)

// String returns the lower-case name of the device type.
func (d DevType) String() string {
	switch d {
	case Normal:
		return "normal"
	case Server:
		return "server"
	case Leaf:
		return "leaf"
	}
	return fmt.Sprintf("devtype(%d)", uint8(d))
}

// ParseDevType parses "normal", "server" or "leaf".
func ParseDevType(s string) (DevType, error) {
	switch s {
	case "normal":
		return Normal, nil
	case "server":
		return Server, nil
	case "leaf":
		return Leaf, nil
	}
	return 0, fmt.Errorf("syncnode: unknown device type %q (want normal, server or leaf)", s)
}

// Priority is a device's standing in one syncgroup when deciding who should
// keep a blob. Higher priorities receive ownership shares from lower ones.
type Priority struct {
	// DevType is the device's declared role in the group.
	DevType DevType `msgpack:"t"`
	// Distance is the mean number of hops from this device to a server.
	Distance float64 `msgpack:"d"`
	// ServerTime is when data from a server last reached this device.
	ServerTime time.Time `msgpack:"s"`
}
