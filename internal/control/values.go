package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"

	"github.com/syncnode/syncnode"
)

// blobKey marks a blob ref in the JSON form of a row value: the object
// {"$blob": "<ref>"} is the msgpack blob-ref extension.
const blobKey = "$blob"

// ErrBadValue reports a row value whose JSON form cannot be stored.
var ErrBadValue = errors.New("control: bad row value")

// FromJSON converts a JSON value to the msgpack a row holds; an object
// {"$blob": "<ref>"} becomes a blob ref.
func FromJSON(b []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("value is not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("value has data after its end")
	}
	conv, err := fromJSON(v)
	if err != nil {
		return nil, err
	}
	return msgpack.Marshal(conv)
}

func fromJSON(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if b, ok := x[blobKey]; ok {
			// "$blob" is reserved: a blob ref, alone, as a string, or an
			// error — never silently a plain map that pins nothing.
			s, isString := b.(string)
			if !isString || len(x) != 1 {
				return nil, fmt.Errorf("%w: %q must be the only key of its object and hold a blob ref string, as {%q: \"REF\"}", ErrBadValue, blobKey, blobKey)
			}
			ref, err := syncnode.ParseBlobRef(s)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrBadValue, err)
			}
			return ref, nil
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := fromJSON(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := fromJSON(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		return x.Float64()
	}
	return v, nil
}

// ToJSON converts a row's msgpack value to JSON, blob refs as
// {"$blob": "<ref>"} and binary strings as {"$bytes": base64}.
func ToJSON(b []byte) (json.RawMessage, error) {
	d := msgpack.NewDecoder(bytes.NewReader(b))
	v, err := toAny(d, 0)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func toAny(d *msgpack.Decoder, depth int) (any, error) {
	if depth > 64 {
		return nil, fmt.Errorf("value nested too deep")
	}
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case msgpcode.IsExt(c):
		typ, n, err := d.DecodeExtHeader()
		if err != nil {
			return nil, err
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(d.Buffered(), p); err != nil {
			return nil, err
		}
		if typ == syncnode.MsgpackExt {
			ref, err := syncnode.RefFromBytes(p)
			if err != nil {
				return nil, err
			}
			return map[string]string{blobKey: ref.String()}, nil
		}
		return map[string]any{"$ext": typ, "$data": p}, nil
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		out := make(map[string]any, n)
		for range n {
			k, err := toAny(d, depth+1)
			if err != nil {
				return nil, err
			}
			v, err := toAny(d, depth+1)
			if err != nil {
				return nil, err
			}
			out[keyString(k)] = v
		}
		return out, nil
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		out := make([]any, 0, max(n, 0))
		for range n {
			v, err := toAny(d, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case c == msgpcode.Bin8 || c == msgpcode.Bin16 || c == msgpcode.Bin32:
		b, err := d.DecodeBytes()
		return map[string]any{"$bytes": b}, err
	}
	return d.DecodeInterfaceLoose()
}

func keyString(k any) string {
	if s, ok := k.(string); ok {
		return s
	}
	return strings.TrimSpace(fmt.Sprint(k))
}
