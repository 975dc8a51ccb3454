package syncgroup

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/crypto"
	crypto_pb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/zeebo/blake3"

	"github.com/syncnode/syncnode"
)

// ErrBadSignature reports a row whose signature is missing or is not its
// writer's over what it says.
var ErrBadSignature = errors.New("syncgroup: row not signed by its writer")

// rowDomain separates row signatures from every other use of a key.
const rowDomain = "syncnode/row/v1"

// verifyOpts are the rules a row's Ed25519 signature is checked under,
// alone or in a batch: ZIP-215's, under which the two agree, so that every
// replica accepts the same rows however it checked them.
var verifyOpts = &ed25519.Options{Verify: ed25519.VerifyOptionsZIP_215}

// verifyBatch is how many signatures are checked in one batch. Past about
// a hundred, a batch takes the multiplication that grows slowest with its
// size; at 256 a row costs about a sixth of a check alone. A batch with a
// forged signature is halved until the halves pass (see checkSplit), so a
// lone forged row costs about two batches' work, not 256 checks alone;
// rows sent with many forged ones cost about what checking each alone
// does.
const verifyBatch = 256

// splitFloor is the size below which a failed batch's rows are checked one
// by one rather than halved again.
const splitFloor = 8

// VerifyRows verifies rows of group g, Ed25519 signatures in batches, on
// every core, and returns each row's VerifyRow error (nil where it
// verifies).
func VerifyRows(g syncnode.GroupID, rows []Row) []error {
	errs := make([]error, len(rows))
	chunks := (len(rows) + verifyBatch - 1) / verifyBatch
	workers := min(runtime.GOMAXPROCS(0), chunks)
	var wg sync.WaitGroup
	var next atomic.Int64
	var forged atomic.Bool // a batch of this call held a bad signature
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := int(next.Add(1) - 1); c < chunks; c = int(next.Add(1) - 1) {
				lo := c * verifyBatch
				hi := min(len(rows), lo+verifyBatch)
				verifyChunk(g, rows[lo:hi], errs[lo:hi], &forged)
			}
		}()
	}
	wg.Wait()
	return errs
}

// edCheck is one Ed25519 signature to check: the writer's expanded key,
// the bytes signed and the signature.
type edCheck struct {
	key      *ed25519.ExpandedPublicKey
	msg, sig []byte
}

// verifyChunk verifies rows, their Ed25519 signatures in one batch, into
// errs.
func verifyChunk(g syncnode.GroupID, rows []Row, errs []error, forged *atomic.Bool) {
	var checks []edCheck
	var at []int // the row of each check
	// A writer's key is expanded once a chunk, not once a row: most
	// chunks hold the rows of a few writers, and expanding a key (a
	// point decompressed and a table of its multiples built) costs about
	// as much as the rest of a row's check.
	expanded := map[peer.ID]*ed25519.ExpandedPublicKey{}
	for i, r := range rows {
		pub, msg, err := signed(g, r)
		if err != nil {
			errs[i] = err
			continue
		}
		raw, ok := ed25519Raw(pub)
		if !ok {
			if ok, err := pub.Verify(msg, r.Sig); err != nil || !ok {
				errs[i] = badSig(r)
			}
			continue
		}
		x, seen := expanded[r.Writer]
		if !seen {
			x, _ = ed25519.NewExpandedPublicKey(raw) // nil: not a point, so no signature is good
			expanded[r.Writer] = x
		}
		if x == nil {
			errs[i] = badSig(r)
			continue
		}
		checks = append(checks, edCheck{x, msg, r.Sig})
		at = append(at, i)
	}
	for j, ok := range checkSplit(checks, forged) {
		if !ok {
			errs[at[j]] = badSig(rows[at[j]])
		}
	}
}

// checkSplit checks every signature of checks and reports which hold: in
// one batch if they all do, else by halves (see halves), and one by one
// at splitFloor or fewer. Once a batch of the call has failed (forged),
// a failing batch is checked one by one at once: a sender of one forged
// row is likely to send more, and halving batches that each hold one
// would cost more than checking their rows alone.
func checkSplit(checks []edCheck, forged *atomic.Bool) []bool {
	if len(checks) <= splitFloor {
		return checkEach(checks)
	}
	if batchHolds(checks) {
		return allHold(len(checks))
	}
	if forged.Swap(true) {
		return checkEach(checks)
	}
	return halves(checks)
}

// halves checks checks, known to hold a bad signature, by halves: a half
// whose batch holds is done, a failing half is halved again. Where both
// halves fail the bad signatures are many, and every one is checked
// alone.
func halves(checks []edCheck) []bool {
	half := len(checks) / 2
	lo, hi := checks[:half], checks[half:] // hi is never the shorter
	if len(lo) <= splitFloor {
		return checkEach(checks)
	}
	loHolds, hiHolds := batchHolds(lo), batchHolds(hi)
	switch {
	case loHolds && hiHolds: // cannot be, the whole failing; trust neither
		return checkEach(checks)
	case loHolds:
		return append(allHold(len(lo)), halves(hi)...)
	case hiHolds:
		return append(halves(lo), allHold(len(hi))...)
	default:
		return checkEach(checks)
	}
}

// batchHolds reports whether every signature of checks holds, checked in
// one batch.
func batchHolds(checks []edCheck) bool {
	v := ed25519.NewBatchVerifierWithCapacity(len(checks))
	for _, c := range checks {
		v.AddExpandedWithOptions(c.key, c.msg, c.sig, verifyOpts)
	}
	return v.VerifyBatchOnly(nil)
}

// checkEach checks every signature of checks alone.
func checkEach(checks []edCheck) []bool {
	ok := make([]bool, len(checks))
	for i, c := range checks {
		ok[i] = ed25519.VerifyExpandedWithOptions(c.key, c.msg, c.sig, verifyOpts)
	}
	return ok
}

// allHold returns n reports that a signature holds.
func allHold(n int) []bool {
	ok := make([]bool, n)
	for i := range ok {
		ok[i] = true
	}
	return ok
}

// ed25519Raw returns pub's raw Ed25519 key, if it is one.
func ed25519Raw(pub crypto.PubKey) (ed25519.PublicKey, bool) {
	if pub.Type() != crypto_pb.KeyType_Ed25519 {
		return nil, false
	}
	raw, err := pub.Raw()
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, false
	}
	return raw, true
}

func badSig(r Row) error { return fmt.Errorf("%w: %q by %s", ErrBadSignature, r.Key, r.Writer) }

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
	pub, msg, err := signed(g, r)
	if err != nil {
		return err
	}
	if raw, ok := ed25519Raw(pub); ok {
		if !ed25519.VerifyWithOptions(raw, msg, r.Sig, verifyOpts) {
			return badSig(r)
		}
		return nil
	}
	if ok, err := pub.Verify(msg, r.Sig); err != nil || !ok {
		return badSig(r)
	}
	return nil
}

// signed returns the key r must be signed with and the bytes signed, or
// why r cannot carry a good signature.
func signed(g syncnode.GroupID, r Row) (crypto.PubKey, []byte, error) {
	if len(r.Sig) == 0 || len(r.Sig) > MaxSig {
		return nil, nil, fmt.Errorf("%w: %q by %s carries no signature", ErrBadSignature, r.Key, r.Writer)
	}
	pub, err := writerKey(r)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %q: writer %s: %v", ErrBadSignature, r.Key, r.Writer, err)
	}
	b, err := rowBytes(g, r)
	if err != nil {
		return nil, nil, err
	}
	return pub, b, nil
}
