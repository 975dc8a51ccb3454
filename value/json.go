package value

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
)

// The keys that mark the JSON form of what JSON has no type for. An object
// holding any of them must be exactly one of these forms:
//
//	{"$blob": "REF"}                 a blob ref, in its text form
//	{"$bytes": "BASE64"}             a msgpack binary string
//	{"$ext": TYPE, "$data": "BASE64"} any other msgpack extension
const (
	blobKey  = "$blob"
	bytesKey = "$bytes"
	extKey   = "$ext"
	dataKey  = "$data"
)

// FromJSON converts one JSON value to the msgpack value a row holds.
//
// Objects become maps and arrays arrays, nested at most MaxDepth deep. A
// number without a fraction or exponent becomes an integer (int64, or
// uint64 above the int64 range; beyond uint64, a float64); any other
// number becomes a float64. The reserved objects {"$blob": "REF"},
// {"$bytes": "BASE64"} and {"$ext": TYPE, "$data": "BASE64"} become a blob
// ref, a binary string and an extension; an object that holds one of those
// keys any other way is an error. Map keys are written in sorted order, so
// equal JSON values give equal bytes.
//
// Errors wrap ErrMalformed: a syntax error names its byte offset, line and
// column; any other names the path to the offending value, as $.a[2].
func FromJSON(b []byte) ([]byte, error) {
	// json.Unmarshal checks the whole input first, trailing data included,
	// and reports a syntax error with its offset.
	var raw json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, jsonError(b, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, jsonError(raw, err)
	}
	var c jsonConv
	conv, err := c.value(v, 1)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := newEncoder(&buf)
	if err := enc.Encode(conv); err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	return buf.Bytes(), nil
}

// jsonError says where JSON input b went wrong.
func jsonError(b []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case len(bytes.TrimLeft(b, " \t\r\n")) == 0:
		return fmt.Errorf("%w: JSON: no value", ErrMalformed)
	case errors.As(err, &syn):
		at := int(syn.Offset)
		if !strings.HasPrefix(syn.Error(), "unexpected end") {
			at-- // Offset counts the offending byte
		}
		return fmt.Errorf("%w: JSON at %s: %v", ErrMalformed, where(b, at), err)
	case errors.As(err, &typ):
		return fmt.Errorf("%w: JSON at %s: %v", ErrMalformed, where(b, int(typ.Offset)), err)
	}
	return fmt.Errorf("%w: JSON: %v", ErrMalformed, err)
}

// where describes offset at in b as "byte N (line L, column C)", counting
// bytes from 0 and lines and columns (in characters) from 1.
func where(b []byte, at int) string {
	at = max(0, min(at, len(b)))
	line := 1 + bytes.Count(b[:at], []byte{'\n'})
	start := bytes.LastIndexByte(b[:at], '\n') + 1
	col := 1 + utf8.RuneCount(b[start:at])
	return fmt.Sprintf("byte %d (line %d, column %d)", at, line, col)
}

// jsonConv converts decoded JSON (as encoding/json builds it, numbers as
// json.Number) to what the msgpack encoder writes. It keeps the path to
// the value it is at, for errors.
type jsonConv struct {
	path []string
}

func (c *jsonConv) errorf(format string, a ...any) error {
	return fmt.Errorf("%w: JSON at $%s: %s", ErrMalformed, strings.Join(c.path, ""), fmt.Sprintf(format, a...))
}

func (c *jsonConv) value(v any, depth int) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if special, ok, err := c.reserved(x); ok || err != nil {
			return special, err
		}
		if depth > MaxDepth {
			return nil, c.errorf("maps and arrays nested deeper than %d", MaxDepth)
		}
		out := make(map[string]any, len(x))
		// Sorted keys: the first error is the same on every run.
		for _, k := range slices.Sorted(maps.Keys(x)) {
			c.path = append(c.path, pathKey(k))
			e, err := c.value(x[k], depth+1)
			c.path = c.path[:len(c.path)-1]
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		return out, nil
	case []any:
		if depth > MaxDepth {
			return nil, c.errorf("maps and arrays nested deeper than %d", MaxDepth)
		}
		out := make([]any, len(x))
		for i, e := range x {
			c.path = append(c.path, "["+strconv.Itoa(i)+"]")
			e, err := c.value(e, depth+1)
			c.path = c.path[:len(c.path)-1]
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	case json.Number:
		return c.number(string(x))
	}
	return v, nil // string, bool or nil
}

// reserved converts an object that uses a reserved key; ok is false for
// an ordinary object.
func (c *jsonConv) reserved(x map[string]any) (v any, ok bool, err error) {
	_, isBlob := x[blobKey]
	_, isBytes := x[bytesKey]
	_, isExt := x[extKey]
	switch {
	case isBlob:
		s, isString := x[blobKey].(string)
		if !isString || len(x) != 1 {
			return nil, true, c.errorf(`%q must be the only key of its object and hold a blob ref string, as {%q: "REF"}`, blobKey, blobKey)
		}
		ref, err := syncnode.ParseBlobRef(s)
		if err != nil {
			return nil, true, fmt.Errorf("%w: JSON at $%s: %w", ErrMalformed, strings.Join(c.path, ""), err)
		}
		return ref, true, nil
	case isBytes:
		s, isString := x[bytesKey].(string)
		if !isString || len(x) != 1 {
			return nil, true, c.errorf(`%q must be the only key of its object and hold base64, as {%q: "AQID"}`, bytesKey, bytesKey)
		}
		p, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, true, c.errorf("%q holds bad base64: %v", bytesKey, err)
		}
		return p, true, nil
	case isExt:
		n, isNumber := x[extKey].(json.Number)
		s, isString := x[dataKey].(string)
		if !isNumber || !isString || len(x) != 2 {
			return nil, true, c.errorf(`%q must sit with %q alone in its object, as {%q: 5, %q: "BASE64"}`, extKey, dataKey, extKey, dataKey)
		}
		typ, err := strconv.ParseInt(string(n), 10, 8)
		if err != nil {
			return nil, true, c.errorf("%q is %s, not an extension type from -128 to 127", extKey, n)
		}
		if int8(typ) == syncnode.MsgpackExt {
			return nil, true, c.errorf("extension %d is a blob ref: write it as {%q: \"REF\"}", typ, blobKey)
		}
		p, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, true, c.errorf("%q holds bad base64: %v", dataKey, err)
		}
		return ext{typ: int8(typ), data: p}, true, nil
	}
	return nil, false, nil
}

// number converts a JSON number: an integer literal to int64 or uint64
// while it fits, anything else to float64.
func (c *jsonConv) number(s string) (any, error) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, c.errorf("number %s is out of range for a float64", s)
	}
	return f, nil
}

// pathKey renders an object key as a path step: .name when it is a plain
// identifier, ["..."] otherwise.
func pathKey(k string) string {
	plain := k != ""
	for i, r := range k {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			plain = false
			break
		}
	}
	if plain {
		return "." + k
	}
	return "[" + strconv.Quote(k) + "]"
}

// ext is a msgpack extension other than a blob ref.
type ext struct {
	typ  int8
	data []byte
}

// EncodeMsgpack writes the extension.
func (e ext) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeExtHeader(e.typ, len(e.data)); err != nil {
		return err
	}
	_, err := enc.Writer().Write(e.data)
	return err
}

// ToJSON converts a row's msgpack value to JSON: blob refs as
// {"$blob": "REF"}, binary strings as {"$bytes": "BASE64"} and other
// extensions as {"$ext": TYPE, "$data": "BASE64"}. A float is written with
// a fraction or an exponent (3.0, not 3), so FromJSON reads it back as a
// float; NaN and the infinities have no JSON form and are an error. Bytes
// of a string that are not UTF-8 become U+FFFD. Object keys come out
// sorted.
//
// A map key that is not a string becomes the text of its JSON form (a blob
// ref its ref text), which FromJSON reads back as a string: such a key,
// and a ref in it, does not survive the round trip. Any value FromJSON
// makes does: FromJSON(ToJSON(v)) gives v's bytes back.
//
// b is checked as Check does first; errors wrap ErrMalformed and name the
// byte offset.
func ToJSON(b []byte) (json.RawMessage, error) {
	if err := Check(b); err != nil {
		return nil, err
	}
	v, err := newReader(b, true).value()
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	return out, nil
}

// jsonFloat is a msgpack float on its way to JSON: bits is 32 or 64.
type jsonFloat struct {
	f    float64
	bits int
}

// MarshalJSON writes f as encoding/json does, adding ".0" to a float
// that would otherwise read back as an integer.
func (j jsonFloat) MarshalJSON() ([]byte, error) {
	// The choice of format follows encoding/json's floatEncoder.
	abs := math.Abs(j.f)
	format := byte('f')
	if abs != 0 && (j.bits == 64 && (abs < 1e-6 || abs >= 1e21) || j.bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21)) {
		format = 'e'
	}
	b := strconv.AppendFloat(nil, j.f, format, -1, j.bits)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	if !bytes.ContainsAny(b, ".e") {
		b = append(b, ".0"...)
	}
	return b, nil
}
