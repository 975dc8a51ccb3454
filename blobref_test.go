package syncnode

import (
	"errors"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/zeebo/blake3"
)

func TestBlobRefRoundTrip(t *testing.T) {
	sum := blake3.Sum256([]byte("hello"))
	r := RefFromHash(sum)
	s := r.String()
	if !strings.HasPrefix(s, "bafkr4i") {
		t.Fatalf("CID text %q: want the raw-codec blake3 prefix bafkr4i", s)
	}
	got, err := ParseBlobRef(s)
	if err != nil || got != r {
		t.Fatalf("ParseBlobRef(%q) = %v, %v; want %v", s, got, err, r)
	}
	// b3sum's hex form parses to the same ref.
	got, err = ParseBlobRef(r.Hex())
	if err != nil || got != r {
		t.Fatalf("ParseBlobRef(hex) = %v, %v", got, err)
	}
	b, err := msgpack.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back BlobRef
	if err := msgpack.Unmarshal(b, &back); err != nil || back != r {
		t.Fatalf("msgpack round trip = %v, %v", back, err)
	}
	type holder struct{ R BlobRef }
	b, _ = msgpack.Marshal(holder{})
	var h holder
	if err := msgpack.Unmarshal(b, &h); err != nil || !h.R.IsZero() {
		t.Fatalf("zero ref round trip = %v, %v", h.R, err)
	}
}

func TestBlobRefKnownVector(t *testing.T) {
	// BLAKE3 of the empty input, as b3sum prints it.
	const empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
	r := RefFromHash(blake3.Sum256(nil))
	if r.Hex() != empty {
		t.Fatalf("hex = %s, want %s", r.Hex(), empty)
	}
}

func TestParseBlobRefRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"not a cid",
		"bafkr4i",
		"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",              // CIDv0 (sha2-256, dag-pb)
		"bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", // dag-pb codec
		"bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", // raw, but sha2-256
		strings.Repeat("0", 64),                                       // zero digest
	} {
		if _, err := ParseBlobRef(s); !errors.Is(err, ErrBadBlobRef) {
			t.Errorf("ParseBlobRef(%q) error = %v, want ErrBadBlobRef", s, err)
		}
	}
	var r BlobRef
	if err := msgpack.Unmarshal([]byte{0xc7, 0x03, 0x42, 1, 2, 3}, &r); !errors.Is(err, ErrBadBlobRef) {
		t.Errorf("short msgpack ref: %v", err)
	}
	if err := msgpack.Unmarshal([]byte{0xc7}, &r); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("truncated msgpack ref: %v", err)
	}
}

func FuzzParseBlobRef(f *testing.F) {
	f.Add(RefFromHash(blake3.Sum256([]byte("x"))).String())
	f.Add("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseBlobRef(s)
		if err != nil {
			return
		}
		back, err := ParseBlobRef(r.String())
		if err != nil || back != r {
			t.Fatalf("re-parse of %q: %v %v", r, back, err)
		}
	})
}

func TestDevType(t *testing.T) {
	var d DevType
	if d != Normal {
		t.Fatal("zero DevType is not Normal")
	}
	for _, d := range []DevType{Normal, Server, Leaf} {
		p, err := ParseDevType(d.String())
		if err != nil || p != d {
			t.Fatalf("ParseDevType(%q) = %v, %v", d, p, err)
		}
	}
	if _, err := ParseDevType("phone"); err == nil {
		t.Fatal("ParseDevType accepted phone")
	}
}
