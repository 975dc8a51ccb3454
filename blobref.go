package syncnode

import (
	"encoding/hex"
	"fmt"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/vmihailenco/msgpack/v5"
)

// HashSize is the size in bytes of a BLAKE3-256 digest.
const HashSize = 32

// BlobRef names a blob by content: the BLAKE3-256 hash of its bytes. Its text
// form is the CIDv1 (raw codec, BLAKE3 multihash) of that hash, so the same
// value is a DHT key and any BLAKE3 tool verifies the blob. The zero BlobRef
// is invalid. BlobRef is comparable and may be used as a map key.
type BlobRef struct {
	h [HashSize]byte
}

// RefFromHash returns the BlobRef for a BLAKE3-256 digest.
func RefFromHash(h [HashSize]byte) BlobRef { return BlobRef{h: h} }

// Hash returns the BLAKE3-256 digest the ref names.
func (r BlobRef) Hash() [HashSize]byte { return r.h }

// IsZero reports whether r is the zero (invalid) BlobRef.
func (r BlobRef) IsZero() bool { return r == BlobRef{} }

// Hex returns the digest in lower-case hex, as b3sum prints it.
func (r BlobRef) Hex() string { return hex.EncodeToString(r.h[:]) }

// CID returns the CIDv1 (raw codec) of the ref's BLAKE3 multihash.
func (r BlobRef) CID() cid.Cid {
	m, err := mh.Encode(r.h[:], mh.BLAKE3)
	if err != nil { // only on an unknown code or a wrong length: neither can happen
		panic(err)
	}
	return cid.NewCidV1(cid.Raw, m)
}

// String returns the CID text form ("bafkr4i...").
func (r BlobRef) String() string { return r.CID().String() }

// MarshalText implements encoding.TextMarshaler.
func (r BlobRef) MarshalText() ([]byte, error) {
	if r.IsZero() {
		return nil, fmt.Errorf("%w: zero ref", ErrBadBlobRef)
	}
	return []byte(r.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *BlobRef) UnmarshalText(b []byte) error {
	v, err := ParseBlobRef(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// ParseBlobRef parses the CID text form of a blob ref. It accepts any
// multibase encoding, and also 64 hex digits (the form b3sum prints).
func ParseBlobRef(s string) (BlobRef, error) {
	if len(s) == 2*HashSize {
		var h [HashSize]byte
		if _, err := hex.Decode(h[:], []byte(s)); err == nil {
			return RefFromBytes(h[:])
		}
	}
	if s == "" {
		return BlobRef{}, fmt.Errorf("%w: empty string", ErrBadBlobRef)
	}
	c, err := cid.Decode(s)
	if err != nil {
		return BlobRef{}, fmt.Errorf("%w: %q is not a CID: %v", ErrBadBlobRef, s, err)
	}
	return RefFromCID(c)
}

// RefFromCID converts a CID to a BlobRef; the CID must be version 1, raw
// codec, with a 32-byte BLAKE3 multihash.
func RefFromCID(c cid.Cid) (BlobRef, error) {
	if c.Version() != 1 {
		return BlobRef{}, fmt.Errorf("%w: CID version %d, want 1", ErrBadBlobRef, c.Version())
	}
	if c.Type() != cid.Raw {
		return BlobRef{}, fmt.Errorf("%w: CID codec 0x%x, want raw (0x55)", ErrBadBlobRef, c.Type())
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return BlobRef{}, fmt.Errorf("%w: %v", ErrBadBlobRef, err)
	}
	if d.Code != mh.BLAKE3 {
		return BlobRef{}, fmt.Errorf("%w: multihash %s, want blake3", ErrBadBlobRef, d.Name)
	}
	if len(d.Digest) != HashSize {
		return BlobRef{}, fmt.Errorf("%w: blake3 digest of %d bytes, want %d", ErrBadBlobRef, len(d.Digest), HashSize)
	}
	var r BlobRef
	copy(r.h[:], d.Digest)
	if r.IsZero() {
		return BlobRef{}, fmt.Errorf("%w: zero digest", ErrBadBlobRef)
	}
	return r, nil
}

// Bytes returns the binary form: the 32-byte digest.
func (r BlobRef) Bytes() []byte { return append([]byte(nil), r.h[:]...) }

// RefFromBytes converts a 32-byte digest to a BlobRef.
func RefFromBytes(b []byte) (BlobRef, error) {
	if len(b) != HashSize {
		return BlobRef{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadBlobRef, len(b), HashSize)
	}
	var r BlobRef
	copy(r.h[:], b)
	if r.IsZero() {
		return BlobRef{}, fmt.Errorf("%w: zero digest", ErrBadBlobRef)
	}
	return r, nil
}

// MsgpackExt is the msgpack extension type that carries a blob ref: a
// 32-byte payload, the BLAKE3 digest. Because refs are a distinct type on
// the wire, the refs inside any value are found by walking it, without
// knowing its schema.
const MsgpackExt int8 = 0x42

// EncodeMsgpack writes the ref as msgpack extension MsgpackExt, and the
// zero ref as nil, so a struct with an unset ref round-trips.
func (r BlobRef) EncodeMsgpack(enc *msgpack.Encoder) error {
	if r.IsZero() {
		return enc.EncodeNil()
	}
	if err := enc.EncodeExtHeader(MsgpackExt, HashSize); err != nil {
		return err
	}
	_, err := enc.Writer().Write(r.h[:])
	return err
}

// DecodeMsgpack reads a ref written by EncodeMsgpack.
func (r *BlobRef) DecodeMsgpack(dec *msgpack.Decoder) error {
	if c, err := dec.PeekCode(); err == nil && c == 0xc0 { // nil: the zero ref
		*r = BlobRef{}
		return dec.DecodeNil()
	}
	id, n, err := dec.DecodeExtHeader()
	if err != nil {
		return fmt.Errorf("%w: blob ref: %v", ErrCorruptRecord, err)
	}
	if id != MsgpackExt || n != HashSize {
		return fmt.Errorf("%w: extension %d of %d bytes, want %d of %d", ErrBadBlobRef, id, n, MsgpackExt, HashSize)
	}
	var b [HashSize]byte
	if err := dec.ReadFull(b[:]); err != nil {
		return fmt.Errorf("%w: blob ref: %v", ErrCorruptRecord, err)
	}
	v, err := RefFromBytes(b[:])
	if err != nil {
		return err
	}
	*r = v
	return nil
}
