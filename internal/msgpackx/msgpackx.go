// Package msgpackx decodes msgpack from untrusted bytes safely: it checks the
// encoding's structure first, so no length a peer or a corrupt file claims
// can make the decoder allocate more than the input could hold.
//
// msgpack v5 (v5.4.1) sizes a decoded slice of structs by the array length
// in the input, without the limit its other paths apply: a 30-byte message
// claiming four billion elements asks for gigabytes. Check refuses any
// array, map, string or binary whose claimed length exceeds the bytes left.
package msgpackx

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxDepth bounds nesting: Check accepts arrays and maps nested at most
// MaxDepth-1 deep, and an empty one a level deeper.
const MaxDepth = 32

// ErrMalformed reports bytes that are not one well-formed msgpack value.
var ErrMalformed = errors.New("msgpack: malformed")

// Unmarshal checks b with Check, then decodes it into v. A panic inside the
// msgpack decoder (v5.4.1 panics, for one, when a struct's interface field
// appears twice in one map) is returned as an error wrapping ErrMalformed.
func Unmarshal(b []byte, v any) (err error) {
	if err := Check(b); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decoder panic: %v", ErrMalformed, r)
		}
	}()
	return msgpack.Unmarshal(b, v)
}

// Check verifies that b holds exactly one msgpack value, nested no deeper
// than MaxDepth allows, whose every length fits in the bytes that follow it.
func Check(b []byte) error { return Walk(b, nil) }

// Walk checks b as Check does and calls ext, if not nil, with the type and
// payload of every extension value in it, in order. The payload aliases b.
func Walk(b []byte, ext func(typ int8, payload []byte)) error {
	stack := []int{1} // values still to read at each open level
	p := 0
	for len(stack) > 0 {
		top := len(stack) - 1
		if stack[top] == 0 {
			stack = stack[:top]
			continue
		}
		stack[top]--
		if p >= len(b) {
			return fmt.Errorf("%w: truncated at byte %d", ErrMalformed, p)
		}
		at := p
		c := b[p]
		p++
		skip, items, lenBytes, err := firstByte(c, at)
		if err != nil {
			return err
		}
		if lenBytes > 0 {
			n, err := readLength(b, p, lenBytes)
			if err != nil {
				return err
			}
			p += lenBytes
			switch c {
			case 0xdc, 0xdd:
				items = int(n)
			case 0xde, 0xdf:
				items = 2 * int(n)
			default:
				skip += int(n)
			}
		}
		if skip > len(b)-p {
			return fmt.Errorf("%w: %d-byte value at byte %d runs past the end", ErrMalformed, skip, p)
		}
		if ext != nil && (c >= 0xc7 && c <= 0xc9 || c >= 0xd4 && c <= 0xd8) {
			ext(int8(b[p]), b[p+1:p+skip])
		}
		p += skip
		if items > 0 {
			if items > len(b)-p { // every value takes at least one byte
				return fmt.Errorf("%w: %d values claimed at byte %d, %d bytes left", ErrMalformed, items, p, len(b)-p)
			}
			if len(stack) >= MaxDepth {
				return fmt.Errorf("%w: nested deeper than %d at byte %d", ErrMalformed, MaxDepth-1, at)
			}
			stack = append(stack, items)
		}
	}
	if p != len(b) {
		return fmt.Errorf("%w: %d trailing bytes from byte %d", ErrMalformed, len(b)-p, p)
	}
	return nil
}

// firstByte says what a value whose first byte is c, at offset at, holds
// before any length field: skip bytes of payload, items child values (an
// array's elements, a map's keys and values), and a length field of
// lenBytes bytes following c. The reserved byte 0xc1 is an error.
func firstByte(c byte, at int) (skip, items, lenBytes int, err error) {
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
	case c >= 0x80 && c <= 0x8f:
		items = 2 * int(c&0x0f)
	case c >= 0x90 && c <= 0x9f:
		items = int(c & 0x0f)
	case c >= 0xa0 && c <= 0xbf:
		skip = int(c & 0x1f)
	case c == 0xc1:
		return 0, 0, 0, fmt.Errorf("%w: reserved byte 0xc1 at %d", ErrMalformed, at)
	case c == 0xc4 || c == 0xd9:
		lenBytes = 1
	case c == 0xc5 || c == 0xda:
		lenBytes = 2
	case c == 0xc6 || c == 0xdb:
		lenBytes = 4
	case c == 0xc7:
		lenBytes, skip = 1, 1 // ext: length, then a type byte
	case c == 0xc8:
		lenBytes, skip = 2, 1
	case c == 0xc9:
		lenBytes, skip = 4, 1
	case c == 0xca:
		skip = 4
	case c == 0xcb:
		skip = 8
	case c == 0xcc || c == 0xd0:
		skip = 1
	case c == 0xcd || c == 0xd1:
		skip = 2
	case c == 0xce || c == 0xd2:
		skip = 4
	case c == 0xcf || c == 0xd3:
		skip = 8
	case c >= 0xd4 && c <= 0xd8: // fixext 1, 2, 4, 8, 16 and a type byte
		skip = 1 + 1<<(c-0xd4)
	case c == 0xdc, c == 0xde:
		lenBytes = 2
	case c == 0xdd, c == 0xdf:
		lenBytes = 4
	}
	return skip, items, lenBytes, nil
}

// readLength reads the big-endian length field of lenBytes bytes (1, 2 or
// 4) at b[p:] and refuses a length greater than the whole input.
func readLength(b []byte, p, lenBytes int) (uint64, error) {
	if len(b)-p < lenBytes {
		return 0, fmt.Errorf("%w: truncated length at byte %d", ErrMalformed, p)
	}
	var n uint64
	switch lenBytes {
	case 1:
		n = uint64(b[p])
	case 2:
		n = uint64(binary.BigEndian.Uint16(b[p:]))
	case 4:
		n = uint64(binary.BigEndian.Uint32(b[p:]))
	}
	if n > uint64(len(b)) {
		return 0, fmt.Errorf("%w: length %d at byte %d exceeds the %d-byte input", ErrMalformed, n, p+lenBytes, len(b))
	}
	return n, nil
}
