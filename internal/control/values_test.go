package control

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
	"github.com/syncnode/syncnode/syncgroup"
)

func TestJSONValuesRoundTripBlobRefs(t *testing.T) {
	ref := syncnode.RefFromHash([32]byte{1, 2, 3})
	in := `{"title":"beach","n":3,"x":1.5,"tags":["a",{"$blob":"` + ref.String() + `"}],"img":{"$blob":"` + ref.String() + `"}}`
	mp, err := FromJSON([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	refs, err := syncgroup.FindRefs(mp)
	if err != nil || len(refs) != 1 || refs[0] != ref {
		t.Fatalf("refs in the msgpack: %v %v", refs, err)
	}
	out, err := ToJSON(mp)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	json.Unmarshal([]byte(in), &a)
	json.Unmarshal(out, &b)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Fatalf("round trip:\n%s\n%s", ja, jb)
	}
	for _, bad := range []string{`{`, `1 2`, `{"$blob":"notaref"}`, `{"$blob":12}`, `{"$blob":null}`, `{"a":{"$blob":["x"]}}`, `{"$blob":"` + ref.String() + `","x":1}`} {
		if _, err := FromJSON([]byte(bad)); err == nil {
			t.Errorf("FromJSON(%q) succeeded", bad)
		}
	}
}

// FuzzToJSON feeds arbitrary bytes that pass the msgpack structure check
// (as every stored row value does) to the JSON conversion: errors are
// fine, panics and hangs are not.
func FuzzToJSON(f *testing.F) {
	mp, _ := FromJSON([]byte(`{"a":[1,2,{"$blob":"` + syncnode.RefFromHash([32]byte{9}).String() + `"}],"b":"x"}`))
	f.Add(mp)
	f.Add([]byte{0xc7, 0x20, 0x42})
	f.Fuzz(func(t *testing.T, b []byte) {
		if msgpackx.Check(b) != nil {
			return
		}
		ToJSON(b)
	})
}

// FuzzFromJSON checks that any JSON the CLI may send converts or fails
// cleanly, and that what converts is a valid row value.
func FuzzFromJSON(f *testing.F) {
	f.Add([]byte(`{"$blob":"bafkr4ian2ztdvrkbzgsurh56ing5646i4xzafp4wuq7wav6jjyxfot7k7y"}`))
	f.Add([]byte(`[1, 2.5, "x", null, true, {"k": {}}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		mp, err := FromJSON(b)
		if err != nil {
			return
		}
		if err := msgpackx.Check(mp); err != nil {
			t.Fatalf("FromJSON(%q) made invalid msgpack: %v", b, err)
		}
		if _, err := ToJSON(mp); err != nil {
			t.Fatalf("ToJSON of FromJSON(%q): %v", b, err)
		}
	})
}
