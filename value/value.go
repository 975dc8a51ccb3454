// Package value converts row values — the msgpack bytes a syncgroup row
// holds — to and from Go values and JSON, so an app never handles msgpack
// itself.
//
// A row value is one msgpack value with nothing after it, its maps and
// arrays nested at most MaxDepth deep. A blob ref inside it is the msgpack
// extension syncnode.MsgpackExt, so the refs in any value are found by
// walking it (Refs), without knowing its schema.
//
// Marshal and Unmarshal convert Go values; FromJSON and ToJSON convert
// JSON, where a blob ref is the object {"$blob": "REF"}. Every function
// that reads bytes checks them first; malformed input is refused with an
// error wrapping ErrMalformed that names the byte (or, for JSON, the byte,
// line and column, or the path) where it went wrong.
package value

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

// MaxDepth is the deepest that maps and arrays may nest in a value: a map
// holding an array of scalars is nested 2 deep. Every node refuses rows
// nested deeper.
const MaxDepth = 31

// ErrMalformed reports bytes that are not a value a row may hold, or JSON
// that does not describe one.
var ErrMalformed = errors.New("value: malformed")

// jsonHint is added to the error for bytes that fail the msgpack check but
// look like JSON: the likeliest mistake is passing JSON where msgpack is due.
const jsonHint = "value looks like JSON; convert it with value.FromJSON"

// Check reports whether b is a value a row may hold: exactly one msgpack
// value, nothing after it, nested at most MaxDepth deep, every length
// within the input, and every blob-ref extension a valid ref. The error
// wraps ErrMalformed (and syncnode.ErrBadBlobRef for a bad ref) and names
// the byte offset; if b looks like JSON it says so.
func Check(b []byte) error {
	var bad error
	err := msgpackx.Walk(b, func(typ int8, p []byte) {
		if typ != syncnode.MsgpackExt || bad != nil {
			return
		}
		if _, err := syncnode.RefFromBytes(p); err != nil {
			bad = fmt.Errorf("%w: blob ref at byte %d: %w", ErrMalformed, offset(b, p), err)
		}
	})
	if err != nil {
		return malformed(b, err)
	}
	return bad
}

// Refs returns the distinct blob refs inside value b, in the order they
// first appear. If b is not well-formed msgpack, Refs returns no refs and
// an error wrapping ErrMalformed. A blob-ref extension that holds no valid
// ref does not stop the walk: Refs returns the valid refs it found together
// with an error wrapping syncnode.ErrBadBlobRef for the first bad one.
func Refs(b []byte) ([]syncnode.BlobRef, error) {
	var refs []syncnode.BlobRef
	var bad error
	err := msgpackx.Walk(b, func(typ int8, p []byte) {
		if typ != syncnode.MsgpackExt {
			return
		}
		r, err := syncnode.RefFromBytes(p)
		if err != nil {
			if bad == nil {
				bad = fmt.Errorf("value: blob ref at byte %d: %w", offset(b, p), err)
			}
			return
		}
		if !slices.Contains(refs, r) {
			refs = append(refs, r)
		}
	})
	if err != nil {
		return nil, malformed(b, err)
	}
	return refs, bad
}

// offset returns where sub, a subslice of b, starts in b.
func offset(b, sub []byte) int { return cap(b) - cap(sub) }

// malformed rewrites an error from msgpackx.Walk as this package's, with
// the JSON hint when b looks like JSON.
func malformed(b []byte, err error) error {
	detail := strings.TrimPrefix(err.Error(), msgpackx.ErrMalformed.Error()+": ")
	if looksLikeJSON(b) {
		return fmt.Errorf("%w: msgpack: %s; %s", ErrMalformed, detail, jsonHint)
	}
	return fmt.Errorf("%w: msgpack: %s", ErrMalformed, detail)
}

// looksLikeJSON reports whether b's first byte past JSON white space opens
// a JSON object, array or string.
func looksLikeJSON(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && (b[0] == '{' || b[0] == '[' || b[0] == '"')
}
