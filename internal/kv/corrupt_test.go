package kv

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
)

// TestCorruptRecordIsAnError flips every bit of an encoded record in turn,
// and then a byte of a record inside badger's files on disk: each must
// read back as an error wrapping ErrCorruptRecord, never as other data.
func TestCorruptRecordIsAnError(t *testing.T) {
	good, err := Encode(KindGroup, rec{41, "shares of the last copy"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(good) * 8 {
		b := bytes.Clone(good)
		b[i/8] ^= 1 << (i % 8)
		var v rec
		if err := Decode(KindGroup, b, &v); !errors.Is(err, syncnode.ErrCorruptRecord) {
			t.Fatalf("bit %d flipped: decoded %+v, err %v; want ErrCorruptRecord", i, v, err)
		}
	}

	// On disk: a value above badger's value threshold lives in the value
	// log, whose entries badger does not verify on read.
	dir := t.TempDir()
	db, err := Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	big := rec{7, strings.Repeat("blob-ref ", 100<<10/9)}
	key := Key(Rows, []byte("g\x00photos/beach"))
	if err := db.Update(func(txn *badger.Txn) error { return Set(txn, key, KindRow, big) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	vlogs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	flipped := false
	for _, p := range vlogs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte("blob-ref blob-ref")); i >= 0 {
			b[i+5000] ^= 0x20 // one letter changes case
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			flipped = true
		}
	}
	if !flipped {
		t.Fatal("the record was not found in the value log")
	}
	db, err = Open(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got rec
	err = db.View(func(txn *badger.Txn) error { return Get(txn, key, KindRow, &got) })
	if !errors.Is(err, syncnode.ErrCorruptRecord) {
		t.Fatalf("damaged record read back: err %v, same data %v; want ErrCorruptRecord", err, got == big)
	}
}
