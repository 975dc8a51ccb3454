package syncgroup

import (
	"bytes"
	stded25519 "crypto/ed25519"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	voied25519 "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
)

// signedRows returns a group and n rows its creator wrote, signed, as a
// member receives them.
func signedRows(t testing.TB, n int) (*Group, []Row) {
	adminKey, _ := key(t)
	g, err := Create("photos", []string{"photos/"}, true, adminKey, syncnode.Normal, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	var rows []Row
	for i := range n {
		v, _ := msgpack.Marshal(map[string]any{"title": fmt.Sprintf("photo %d", i), "n": i})
		r, err := g.Put(fmt.Sprintf("photos/%06d", i), v, t0.Add(time.Duration(i)*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	return g, rows
}

func TestEveryAlteredFieldBreaksTheSignature(t *testing.T) {
	g, rows := signedRows(t, 1)
	r := rows[0]
	if err := VerifyRow(g.Spec().ID, r); err != nil {
		t.Fatal(err)
	}
	_, other := key(t)
	for name, alter := range map[string]func(*Row){
		"key":       func(r *Row) { r.Key += "x" },
		"value":     func(r *Row) { r.Value = append([]byte{}, r.Value...); r.Value[len(r.Value)-1] ^= 1 },
		"timestamp": func(r *Row) { r.TS.Wall++ },
		"logical":   func(r *Row) { r.TS.Logical++ },
		"writer":    func(r *Row) { r.Writer = other },
		"seq":       func(r *Row) { r.Seq++ },
		"deleted":   func(r *Row) { r.Deleted = !r.Deleted },
		"signature": func(r *Row) { r.Sig = append([]byte{}, r.Sig...); r.Sig[3] ^= 1 },
		"no sig":    func(r *Row) { r.Sig = nil },
	} {
		x := r
		alter(&x)
		if err := VerifyRow(g.Spec().ID, x); !errors.Is(err, ErrBadSignature) {
			t.Errorf("altered %s: %v, want ErrBadSignature", name, err)
		}
	}
	if err := VerifyRow("someone/else", r); !errors.Is(err, ErrBadSignature) {
		t.Errorf("replayed into another group: %v", err)
	}
}

// FuzzVerifyRow decodes arbitrary bytes as a row and verifies it: it may
// fail, never panic, and only the writer's own signature verifies.
func FuzzVerifyRow(f *testing.F) {
	g, rows := signedRows(f, 1)
	good, _ := msgpack.Marshal(rows[0])
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Row
		if msgpack.Unmarshal(b, &r) != nil {
			return
		}
		if VerifyRow(g.Spec().ID, r) == nil && (r.Writer != rows[0].Writer || r.Key != rows[0].Key || string(r.Value) != string(rows[0].Value)) {
			t.Fatalf("a row the writer never signed verified: %+v", r)
		}
	})
}

// BenchmarkApplySigned applies rows from a member with their signatures
// verified and, in the same run, the same rows with verification skipped,
// and reports rows per second of each and their ratio.
func BenchmarkApplySigned(b *testing.B) {
	const n = 2000
	src, rows := signedRows(b, n)
	_ = src
	memberKey, member := key(b)
	apply := func(verify bool) time.Duration {
		g, _ := NewGroup(src.Spec(), member, time.Minute)
		g.SetKey(memberKey)
		for _, r := range missing(nil, src.Rows(), g.Rows().VV(), []string{MembershipPrefix}) {
			g.Apply(r, t0)
		}
		start := time.Now()
		for _, r := range rows {
			var err error
			if verify {
				_, err = g.Apply(r, t0.Add(time.Hour))
			} else {
				_, err = g.applyVerified(r, t0.Add(time.Hour))
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	var signedT, plainT time.Duration
	for b.Loop() {
		plainT += apply(false)
		signedT += apply(true)
	}
	rps := func(d time.Duration) float64 { return float64(n*b.N) / d.Seconds() }
	b.ReportMetric(rps(signedT), "signed-rows/s")
	b.ReportMetric(rps(plainT), "unsigned-rows/s")
	b.ReportMetric(plainT.Seconds()/signedT.Seconds(), "signed/unsigned")
}

// TestVerifyRowsAgreesWithVerifyRow: rows checked in batches are refused
// exactly where checking them one by one refuses them, wherever a bad
// row falls in a batch (first, last, across batches, every one of them),
// so every replica accepts the same rows however it checks them.
func TestVerifyRowsAgreesWithVerifyRow(t *testing.T) {
	g, rows := signedRows(t, 3*verifyBatch+5)
	_, other := key(t)
	spoil := []func(*Row){
		func(r *Row) { r.Sig = append([]byte{}, r.Sig...); r.Sig[7] ^= 1 },
		func(r *Row) { r.Sig = nil },
		func(r *Row) { r.Writer = other },
		func(r *Row) { r.Value = append(append([]byte{}, r.Value...), 0) },
		func(r *Row) { r.Sig = make([]byte, 64) },
		func(r *Row) { r.Sig = r.Sig[:63] },
	}
	for name, bad := range map[string][]int{
		"none": nil, "first": {0}, "last of a batch": {verifyBatch - 1}, "first of the next": {verifyBatch},
		"the very last": {len(rows) - 1}, "several": {3, 70, 71, 150, len(rows) - 2},
	} {
		got := append([]Row(nil), rows...)
		for k, i := range bad {
			spoil[k%len(spoil)](&got[i])
		}
		errs := VerifyRows(g.Spec().ID, got)
		for i, r := range got {
			alone := VerifyRow(g.Spec().ID, r)
			if (errs[i] == nil) != (alone == nil) || (alone != nil && !errors.Is(errs[i], ErrBadSignature)) {
				t.Errorf("%s: row %d in a batch: %v; alone: %v", name, i, errs[i], alone)
			}
		}
	}
	all := append([]Row(nil), rows[:verifyBatch]...)
	for i := range all {
		spoil[i%len(spoil)](&all[i])
	}
	for i, err := range VerifyRows(g.Spec().ID, all) {
		if !errors.Is(err, ErrBadSignature) {
			t.Errorf("every row spoilt: row %d: %v", i, err)
		}
	}
	if errs := VerifyRows(g.Spec().ID, nil); len(errs) != 0 {
		t.Errorf("no rows: %v", errs)
	}
}

// TestVerifyRowsManyWriters: a batch of rows by several writers, each
// writer's key expanded once, agrees with checking every row alone,
// forged rows and a writer whose key is no curve point included.
func TestVerifyRowsManyWriters(t *testing.T) {
	g, rows := signedRows(t, 2*verifyBatch+17)
	id := g.Spec().ID
	var writers []crypto.PrivKey
	for range 3 {
		k, _ := key(t)
		writers = append(writers, k)
	}
	for i := range rows {
		if i%4 == 0 {
			continue // the creator's own
		}
		k := writers[i%3]
		rows[i].Writer, _ = peer.IDFromPrivateKey(k)
		rows[i].Sig = nil
		if err := SignRow(k, id, &rows[i]); err != nil {
			t.Fatal(err)
		}
	}
	// A peer ID can embed 32 bytes that are no point on the curve.
	var offCurve peer.ID
	for b := byte(1); offCurve == ""; b++ {
		raw := bytes.Repeat([]byte{b}, 32)
		if _, err := voied25519.NewExpandedPublicKey(raw); err == nil {
			continue
		}
		pub, err := crypto.UnmarshalEd25519PublicKey(raw)
		if err != nil {
			t.Fatal(err)
		}
		offCurve, _ = peer.IDFromPublicKey(pub)
	}
	rows[5].Writer = offCurve
	rows[9].Sig = append([]byte{}, rows[9].Sig...)
	rows[9].Sig[3] ^= 1
	rows[verifyBatch+3].Writer = rows[verifyBatch+4].Writer // signed by another writer
	rows[len(rows)-1].Sig = append([]byte{}, rows[len(rows)-1].Sig...)
	rows[len(rows)-1].Sig[40] ^= 1
	bad := 0
	for i, err := range VerifyRows(id, rows) {
		alone := VerifyRow(id, rows[i])
		if (err == nil) != (alone == nil) || (alone != nil && !errors.Is(err, ErrBadSignature)) {
			t.Errorf("row %d in a batch: %v; alone: %v", i, err, alone)
		}
		if err != nil {
			bad++
		}
	}
	if bad != 4 {
		t.Errorf("%d rows refused, want the 4 spoilt", bad)
	}
}

// BenchmarkVerifyRows checks 2,000 signed rows in batches on every core
// and, in the same run, one by one with the standard library's Ed25519
// on one core (the baseline), and reports rows per second of each and
// their ratio, and the rates when one row in 64 is forged and when every
// row is.
func BenchmarkVerifyRows(b *testing.B) {
	const n = 2000
	g, rows := signedRows(b, n)
	id := g.Spec().ID
	var batchT, stdT time.Duration
	for b.Loop() {
		start := time.Now()
		for i, err := range VerifyRows(id, rows) {
			if err != nil {
				b.Fatal(i, err)
			}
		}
		batchT += time.Since(start)
		start = time.Now()
		for _, r := range rows {
			pub, msg, err := signed(id, r)
			if err != nil {
				b.Fatal(err)
			}
			raw, _ := ed25519Raw(pub)
			if !stded25519.Verify(stded25519.PublicKey(raw), msg, r.Sig) {
				b.Fatal("bad signature")
			}
		}
		stdT += time.Since(start)
	}
	// A hostile member's rows: one forged in 64.
	forged := append([]Row(nil), rows...)
	// A forged row here signs other bytes than it carries: every point
	// decodes, so no check can end early.
	forge := func(r *Row) { r.Value = append(append([]byte{}, r.Value...), 0) }
	for i := 0; i < n; i += 64 {
		forge(&forged[i])
	}
	// And every row forged.
	allForged := append([]Row(nil), rows...)
	for i := range allForged {
		forge(&allForged[i])
	}
	rate := func(rows []Row) float64 {
		start := time.Now()
		for range b.N {
			VerifyRows(id, rows)
		}
		return float64(n*b.N) / time.Since(start).Seconds()
	}
	rps := func(d time.Duration) float64 { return float64(n*b.N) / d.Seconds() }
	b.ReportMetric(rate(forged), "one-forged-in-64-rows/s")
	b.ReportMetric(rate(allForged), "all-forged-rows/s")
	b.ReportMetric(rps(batchT), "batched-rows/s")
	b.ReportMetric(rps(stdT), "stdlib-rows/s")
	b.ReportMetric(stdT.Seconds()/batchT.Seconds(), "batched/stdlib")
}
