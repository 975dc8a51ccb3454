package syncgroup

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/zeebo/blake3"

	"github.com/syncnode/syncnode"
)

// ErrBadSignature reports a row whose signature is missing or is not its
// writer's over what it says.
var ErrBadSignature = errors.New("syncgroup: row not signed by its writer")

// rowDomain separates row signatures from every other use of a key.
const rowDomain = "syncnode/row/v1"

// VerifyRows verifies rows of group g on every core, and returns each
// row's VerifyRow error (nil where it verifies).
func VerifyRows(g syncnode.GroupID, rows []Row) []error {
	errs := make([]error, len(rows))
	workers := min(runtime.GOMAXPROCS(0), (len(rows)+15)/16)
	if workers <= 1 {
		for i, r := range rows {
			errs[i] = VerifyRow(g, r)
		}
		return errs
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(rows); i = int(next.Add(1) - 1) {
				errs[i] = VerifyRow(g, rows[i])
			}
		}()
	}
	wg.Wait()
	return errs
}

// writerKey returns r's writer's public key: from its peer ID, or from
// r.PubKey, which must hash to the peer ID.
func writerKey(r Row) (crypto.PubKey, error) {
	if pub, err := r.Writer.ExtractPublicKey(); err == nil {
		return pub, nil
	}
	if len(r.PubKey) == 0 || len(r.PubKey) > MaxSig {
		return nil, errors.New("no public key for a writer whose ID does not embed one")
	}
	pub, err := crypto.UnmarshalPublicKey(r.PubKey)
	if err != nil {
		return nil, err
	}
	if id, err := peer.IDFromPublicKey(pub); err != nil || id != r.Writer {
		return nil, errors.New("the public key given is not the writer's")
	}
	return pub, nil
}

// MaxSig bounds a row signature's length (Ed25519's is 64 bytes).
const MaxSig = 512

// signedRow is what a row's signature covers: the group, the key, the
// value's BLAKE3 hash, the timestamp, the writer, its sequence number and
// the tombstone flag, under a domain string.
type signedRow struct {
	_msgpack  struct{} `msgpack:",as_array"`
	Domain    string
	Group     syncnode.GroupID
	Key       string
	ValueHash [32]byte
	Wall      int64
	Logical   uint32
	Writer    peer.ID
	Seq       uint64
	Deleted   bool
}

func rowBytes(g syncnode.GroupID, r Row) ([]byte, error) {
	return msgpack.Marshal(signedRow{Domain: rowDomain, Group: g, Key: r.Key, ValueHash: blake3.Sum256(r.Value),
		Wall: r.TS.Wall, Logical: r.TS.Logical, Writer: r.Writer, Seq: r.Seq, Deleted: r.Deleted})
}

// SignRow signs r, written by the holder of key in group g, in place.
func SignRow(key crypto.PrivKey, g syncnode.GroupID, r *Row) error {
	b, err := rowBytes(g, *r)
	if err != nil {
		return err
	}
	sig, err := key.Sign(b)
	if err != nil {
		return fmt.Errorf("syncgroup: sign row %q: %w", r.Key, err)
	}
	r.Sig = sig
	if _, err := r.Writer.ExtractPublicKey(); err != nil {
		if r.PubKey, err = crypto.MarshalPublicKey(key.GetPublic()); err != nil {
			return err
		}
	}
	return nil
}

// VerifyRow checks that r carries its writer's signature over what it says
// in group g. The writer's public key comes from its peer ID, which must
// embed it (Ed25519 keys, which syncnode uses, do).
func VerifyRow(g syncnode.GroupID, r Row) error {
	if len(r.Sig) == 0 || len(r.Sig) > MaxSig {
		return fmt.Errorf("%w: %q by %s carries no signature", ErrBadSignature, r.Key, r.Writer)
	}
	pub, err := writerKey(r)
	if err != nil {
		return fmt.Errorf("%w: %q: writer %s: %v", ErrBadSignature, r.Key, r.Writer, err)
	}
	b, err := rowBytes(g, r)
	if err != nil {
		return err
	}
	if ok, err := pub.Verify(b, r.Sig); err != nil || !ok {
		return fmt.Errorf("%w: %q by %s", ErrBadSignature, r.Key, r.Writer)
	}
	return nil
}
