package value

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/syncnode/syncnode"
)

// Marshal encodes v as a row value.
//
// Structs become maps keyed by field name. A field's name is taken from its
// `msgpack:"..."` tag, or, if it has none, from its `json:"..."` tag, so
// structs tagged for JSON are reused as they are; a field with neither is
// keyed by its Go name, matched exactly (not case-insensitively, as
// encoding/json matches). The tag options msgpack knows apply, omitempty
// among them; "-" leaves a field out. A syncnode.BlobRef is written as the
// blob-ref extension, where Refs finds it (the zero BlobRef as nil).
// Integers take the fewest bytes that hold them, and the entries of every
// map are written in key order, so equal Go values give equal bytes.
//
// The result passes Check; a value nested deeper than MaxDepth is an error.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := newEncoder(&buf).Encode(v); err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	b := buf.Bytes()
	if err := Check(b); err != nil {
		return nil, fmt.Errorf("value: Marshal(%T): %w", v, err)
	}
	return canonical(b)
}

func newEncoder(w io.Writer) *msgpack.Encoder {
	enc := msgpack.NewEncoder(w)
	enc.SetCustomStructTag("json")
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
	return enc
}

// Unmarshal decodes row value b into v, which must be a non-nil pointer.
// Struct fields are matched by the names Marshal writes (msgpack tag, else
// json tag, else Go name). A blob ref decodes into a syncnode.BlobRef, nil
// into the zero BlobRef.
//
// If v is an *any, a *map[string]any or a *[]any, Unmarshal builds the
// value itself: maps as map[string]any (their keys must be strings),
// arrays as []any, blob refs as syncnode.BlobRef, binary strings as
// []byte, integers as int64 (uint64 above the int64 range), floats as
// float64, and other extensions as msgpack decodes them (a timestamp as a
// time.Time). An interface-typed field or element deeper inside another
// type is decoded by msgpack, which holds integers there as int64 or
// uint64 and floats as float64 but cannot put a blob ref there: give such
// fields the type syncnode.BlobRef.
//
// b is checked as Check does first; those errors wrap ErrMalformed. An
// error from a value that does not fit v says how many bytes were decoded
// before it.
func Unmarshal(b []byte, v any) (err error) {
	if err := Check(b); err != nil {
		return err
	}
	r := bytes.NewReader(b)
	defer func() {
		// msgpack v5.4.1 panics on some well-formed input (a struct's
		// interface field twice in one map, for one).
		if x := recover(); x != nil {
			err = fmt.Errorf("%w: decoding failed after %d bytes: decoder panic: %v", ErrMalformed, len(b)-r.Len(), x)
		}
	}()
	switch p := v.(type) {
	case *any:
		if p != nil {
			return fill(b, p, "")
		}
	case *map[string]any:
		if p != nil {
			return fill(b, p, "a map")
		}
	case *[]any:
		if p != nil {
			return fill(b, p, "a slice")
		}
	}
	dec := msgpack.NewDecoder(r)
	dec.SetCustomStructTag("json")
	dec.UseLooseInterfaceDecoding(true)
	if err := dec.Decode(v); err != nil {
		n := len(b) - r.Len()
		if strings.Contains(err.Error(), fmt.Sprintf("unknown ext id=%d", syncnode.MsgpackExt)) {
			return fmt.Errorf("value: decoding failed after %d bytes: a blob ref decodes only into a syncnode.BlobRef, not into an interface field: %w", n, err)
		}
		return fmt.Errorf("value: decoding failed after %d bytes: %w", n, err)
	}
	return nil
}

// fill sets *p to checked value b as Unmarshal builds it for an any;
// what names T for the error when the value is of another kind.
func fill[T any](b []byte, p *T, what string) error {
	x, err := newReader(b, false).value()
	if err != nil {
		return err
	}
	if x == nil {
		var zero T
		*p = zero
		return nil
	}
	t, ok := x.(T)
	if !ok {
		return fmt.Errorf("value: %s does not decode into %s", kind(b[0]), what)
	}
	*p = t
	return nil
}

// kind names the msgpack type whose first byte is c.
func kind(c byte) string {
	switch {
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		return "a map"
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		return "an array"
	case msgpcode.IsString(c):
		return "a string"
	case msgpcode.IsBin(c):
		return "a binary string"
	case msgpcode.IsExt(c):
		return "an extension"
	case c == msgpcode.Float || c == msgpcode.Double:
		return "a float"
	case c == msgpcode.True || c == msgpcode.False:
		return "a bool"
	}
	return "an integer"
}

// reader decodes a checked value into a tree of Go values: the JSON form
// for ToJSON (asJSON), or the form Unmarshal gives an any.
type reader struct {
	b      []byte
	r      *bytes.Reader
	d      *msgpack.Decoder
	asJSON bool
}

func newReader(b []byte, asJSON bool) *reader {
	r := bytes.NewReader(b)
	return &reader{b: b, r: r, d: msgpack.NewDecoder(r), asJSON: asJSON}
}

// pos is the offset of the next byte to decode: the decoder reads straight
// from the bytes.Reader, with no buffer of its own.
func (rd *reader) pos() int { return len(rd.b) - rd.r.Len() }

func (rd *reader) fail(at int, err error) error {
	return fmt.Errorf("value: at byte %d: %w", at, err)
}

func (rd *reader) value() (any, error) {
	at := rd.pos()
	c, err := rd.d.PeekCode()
	if err != nil {
		return nil, rd.fail(at, err)
	}
	switch {
	case msgpcode.IsExt(c):
		return rd.ext(at, c)
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		return rd.mapValue(at)
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := rd.d.DecodeArrayLen()
		if err != nil {
			return nil, rd.fail(at, err)
		}
		out := make([]any, 0, n) // Check bounded n by the input's length
		for range n {
			e, err := rd.value()
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	case msgpcode.IsBin(c):
		p, err := rd.d.DecodeBytes()
		if err != nil {
			return nil, rd.fail(at, err)
		}
		if rd.asJSON {
			return map[string]any{bytesKey: p}, nil
		}
		return p, nil
	case c == msgpcode.Float || c == msgpcode.Double:
		f, err := rd.d.DecodeFloat64()
		if err != nil {
			return nil, rd.fail(at, err)
		}
		if !rd.asJSON {
			return f, nil
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%w: at byte %d: float %v has no JSON form", ErrMalformed, at, f)
		}
		if c == msgpcode.Float {
			return jsonFloat{f: f, bits: 32}, nil
		}
		return jsonFloat{f: f, bits: 64}, nil
	}
	v, err := rd.d.DecodeInterfaceLoose() // nil, bool, integer or string
	if err != nil {
		return nil, rd.fail(at, err)
	}
	switch x := v.(type) {
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), nil
		}
	case string:
		if rd.asJSON {
			return validUTF8(x), nil
		}
	}
	return v, nil
}

// validUTF8 replaces each byte of s that is not UTF-8 with U+FFFD, as
// encoding/json would, but before it: json writes such a byte as the
// escape \ufffd and a real U+FFFD as itself, so the JSON of a string would
// change on its way through FromJSON and back.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// ext decodes the extension starting at byte at, whose first byte is c.
func (rd *reader) ext(at int, c byte) (any, error) {
	var typ int8
	switch c {
	case msgpcode.Ext8:
		typ = int8(rd.b[at+2])
	case msgpcode.Ext16:
		typ = int8(rd.b[at+3])
	case msgpcode.Ext32:
		typ = int8(rd.b[at+5])
	default: // fixext
		typ = int8(rd.b[at+1])
	}
	if typ != syncnode.MsgpackExt && !rd.asJSON {
		v, err := rd.d.DecodeInterface()
		if err != nil {
			return nil, rd.fail(at, err)
		}
		return v, nil
	}
	_, n, err := rd.d.DecodeExtHeader()
	if err != nil {
		return nil, rd.fail(at, err)
	}
	p := make([]byte, n) // Check bounded n by the input's length
	if err := rd.d.ReadFull(p); err != nil {
		return nil, rd.fail(at, err)
	}
	if typ != syncnode.MsgpackExt {
		return map[string]any{extKey: typ, dataKey: p}, nil
	}
	ref, err := syncnode.RefFromBytes(p)
	if err != nil {
		return nil, fmt.Errorf("%w: blob ref at byte %d: %w", ErrMalformed, at, err)
	}
	if rd.asJSON {
		return map[string]string{blobKey: ref.String()}, nil
	}
	return ref, nil
}

func (rd *reader) mapValue(at int) (any, error) {
	n, err := rd.d.DecodeMapLen()
	if err != nil {
		return nil, rd.fail(at, err)
	}
	out := make(map[string]any, n) // Check bounded n by the input's length
	for range n {
		kat := rd.pos()
		k, err := rd.value()
		if err != nil {
			return nil, err
		}
		key, ok := k.(string)
		if !ok {
			if !rd.asJSON {
				return nil, fmt.Errorf("value: at byte %d: map key is %s, not a string; decode into a typed map", kat, kind(rd.b[kat]))
			}
			key = jsonKey(k)
		}
		v, err := rd.value()
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
	return out, nil
}

// jsonKey renders a map key that is not a string, in its JSON form, as a
// JSON object key: a blob ref as its text, anything else as its JSON text.
func jsonKey(k any) string {
	if m, ok := k.(map[string]string); ok {
		if ref, ok := m[blobKey]; ok {
			return ref
		}
	}
	b, err := json.Marshal(k)
	if err != nil {
		return fmt.Sprint(k)
	}
	return string(b)
}

// canonical returns checked value b with the entries of every map sorted:
// string keys first, in byte order, then other keys by their encoding.
// msgpack sorts only some map types itself.
func canonical(b []byte) ([]byte, error) {
	c := b[0]
	isMap := msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32
	isArray := msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32
	if !isMap && !isArray {
		return b, nil
	}
	r := bytes.NewReader(b)
	d := msgpack.NewDecoder(r)
	pos := func() int { return len(b) - r.Len() }
	decodeLen := d.DecodeArrayLen
	if isMap {
		decodeLen = d.DecodeMapLen
	}
	n, err := decodeLen()
	if err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	next := func() ([]byte, error) {
		start := pos()
		if err := d.Skip(); err != nil {
			return nil, fmt.Errorf("value: at byte %d: %w", start, err)
		}
		return canonical(b[start:pos()])
	}
	out := append([]byte(nil), b[:pos()]...)
	if isArray {
		for range n {
			e, err := next()
			if err != nil {
				return nil, err
			}
			out = append(out, e...)
		}
		return out, nil
	}
	type entry struct{ k, v []byte }
	entries := make([]entry, n)
	for i := range entries {
		if entries[i].k, err = next(); err != nil {
			return nil, err
		}
		if entries[i].v, err = next(); err != nil {
			return nil, err
		}
	}
	slices.SortStableFunc(entries, func(a, b entry) int { return compareKeys(a.k, b.k) })
	for _, e := range entries {
		out = append(out, e.k...)
		out = append(out, e.v...)
	}
	return out, nil
}

// compareKeys orders encoded map keys: strings first, by their bytes, then
// the rest by their encoding.
func compareKeys(a, b []byte) int {
	sa, aok := str(a)
	sb, bok := str(b)
	switch {
	case aok && bok:
		return bytes.Compare(sa, sb)
	case aok:
		return -1
	case bok:
		return 1
	}
	return bytes.Compare(a, b)
}

// str returns the bytes of encoded string k, if it is one.
func str(k []byte) ([]byte, bool) {
	switch c := k[0]; {
	case c >= msgpcode.FixedStrLow && c <= msgpcode.FixedStrHigh:
		return k[1:], true
	case c == msgpcode.Str8:
		return k[2:], true
	case c == msgpcode.Str16:
		return k[3:], true
	case c == msgpcode.Str32:
		return k[5:], true
	}
	return nil, false
}
