package value_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/value"
)

// FuzzFromJSON: any input converts or fails with ErrMalformed; what
// converts is a value Check accepts, its JSON form is valid JSON, and that
// JSON converts back to the same bytes.
func FuzzFromJSON(f *testing.F) {
	for _, s := range []string{
		`{"$blob":"bafkr4ian2ztdvrkbzgsurh56ing5646i4xzafp4wuq7wav6jjyxfot7k7y"}`,
		`[1, 2.5, "x", null, true, {"k": {}}]`,
		`{"raw":{"$bytes":"AAEC"},"e":{"$ext":-1,"$data":"AAAAAQ=="},"n":18446744073709551615}`,
		`{"f":[3.0,-0.0,1e-7,1e21,100000000000000000000000]}`,
		`{"ключ":"日本","\u0000":"\ud800"}`,
		nest(value.MaxDepth), nest(value.MaxDepth + 1),
		`{"a":{"$blob":1}}`, `{"$ext":66,"$data":""}`, "{\n\"a\": x}", `1 2`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		mp, err := value.FromJSON(b)
		if err != nil {
			if !errors.Is(err, value.ErrMalformed) {
				t.Fatalf("FromJSON(%q): %v, not ErrMalformed", b, err)
			}
			return
		}
		if err := value.Check(mp); err != nil {
			t.Fatalf("FromJSON(%q) made a value Check refuses: %v", b, err)
		}
		if _, err := value.Refs(mp); err != nil {
			t.Fatalf("Refs of FromJSON(%q): %v", b, err)
		}
		j, err := value.ToJSON(mp)
		if err != nil {
			t.Fatalf("ToJSON of FromJSON(%q): %v", b, err)
		}
		if !json.Valid(j) {
			t.Fatalf("ToJSON of FromJSON(%q) is not JSON: %s", b, j)
		}
		again, err := value.FromJSON(j)
		if err != nil || !bytes.Equal(again, mp) {
			t.Fatalf("FromJSON(ToJSON(v)) = %x, %v; v = %x (from %q via %s)", again, err, mp, b, j)
		}
	})
}

// FuzzToJSON: any bytes convert or fail (with ErrMalformed whenever Check
// refuses them), never panic; what converts is valid JSON whose JSON form
// is a fixed point of FromJSON then ToJSON, and which holds no new refs.
func FuzzToJSON(f *testing.F) {
	mp, _ := value.FromJSON([]byte(`{"a":[1,2,{"$blob":"` + syncnode.RefFromHash([32]byte{9}).String() + `"}],"b":"x"}`))
	f.Add(mp)
	f.Add([]byte{0xc7, 0x20, 0x42})
	f.Add([]byte{0x82, 0x01, 0xa1, 'a', 0xc3, 0xca, 0x3d, 0xcc, 0xcc, 0xcd}) // int and bool keys, a float32
	f.Add([]byte{0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1})                        // NaN
	f.Add([]byte(`{"a":1}`))
	if b, err := value.Marshal(samplePhoto()); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkErr := value.Check(b)
		var a any
		unmarshalErr := value.Unmarshal(b, &a)
		j, err := value.ToJSON(b)
		if checkErr != nil {
			if !errors.Is(err, value.ErrMalformed) || !errors.Is(unmarshalErr, value.ErrMalformed) {
				t.Fatalf("Check(%x) = %v, but ToJSON: %v, Unmarshal: %v", b, checkErr, err, unmarshalErr)
			}
			return
		}
		if err != nil {
			return // NaN or infinity
		}
		if !json.Valid(j) {
			t.Fatalf("ToJSON(%x) is not JSON: %s", b, j)
		}
		mp, err := value.FromJSON(j)
		if err != nil {
			t.Fatalf("FromJSON(ToJSON(%x)) = %v; JSON %s", b, err, j)
		}
		j2, err := value.ToJSON(mp)
		if err != nil || !bytes.Equal(j2, j) {
			t.Fatalf("ToJSON(FromJSON(j)) = %s, %v; j = %s (from %x)", j2, err, j, b)
		}
		// A ref used as a map key becomes a string key, so refs may be
		// lost on the way; none may appear.
		had, _ := value.Refs(b)
		got, err := value.Refs(mp)
		if err != nil {
			t.Fatalf("Refs(FromJSON(ToJSON(%x))): %v", b, err)
		}
		for _, r := range got {
			if !slices.Contains(had, r) {
				t.Fatalf("ref %v appeared in the JSON round trip of %x", r, b)
			}
		}
	})
}
