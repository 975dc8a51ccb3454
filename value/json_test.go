package value_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/value"
)

var (
	ref1 = syncnode.RefFromHash([32]byte{1, 2, 3})
	ref2 = syncnode.RefFromHash([32]byte{9})
)

func TestJSONRoundTrip(t *testing.T) {
	r1, r2 := ref1.String(), ref2.String()
	for _, tc := range []struct{ name, in, out string }{
		{"object", `{"title":"beach","n":3}`, `{"n":3,"title":"beach"}`},
		{"white space", " \n{ \"a\" : [ 1 , 2 ] }\t", `{"a":[1,2]}`},
		{"scalars", `[null,true,false,"",0,-1]`, `[null,true,false,"",0,-1]`},
		{"empty", `[{},[]]`, `[{},[]]`},
		{"ref", `{"$blob":"` + r1 + `"}`, `{"$blob":"` + r1 + `"}`},
		{"ref as hex", `{"$blob":"` + ref1.Hex() + `"}`, `{"$blob":"` + r1 + `"}`},
		{"nested refs", `{"album":[{"img":{"$blob":"` + r1 + `"}},{"x":{"y":[{"$blob":"` + r2 + `"}]}}]}`,
			`{"album":[{"img":{"$blob":"` + r1 + `"}},{"x":{"y":[{"$blob":"` + r2 + `"}]}}]}`},
		{"binary", `{"raw":{"$bytes":"AAEC/w=="},"none":{"$bytes":""}}`, `{"none":{"$bytes":""},"raw":{"$bytes":"AAEC/w=="}}`},
		{"extension", `{"$ext":5,"$data":"AQI="}`, `{"$data":"AQI=","$ext":5}`},
		{"negative extension", `{"$data":"","$ext":-128}`, `{"$data":"","$ext":-128}`},
		{"$data alone is a key", `{"$data":1}`, `{"$data":1}`},
		{"int64 max", `9223372036854775807`, `9223372036854775807`},
		{"int64 min", `-9223372036854775808`, `-9223372036854775808`},
		{"above int64", `9223372036854775808`, `9223372036854775808`},
		{"uint64 max", `18446744073709551615`, `18446744073709551615`},
		{"beyond uint64 is a float", `100000000000000000000000`, `1e+23`},
		{"negative zero int", `-0`, `0`},
		{"float", `1.5`, `1.5`},
		{"integral float stays a float", `3.0`, `3.0`},
		{"exponent is a float", `2e3`, `2000.0`},
		{"tiny float", `1E-7`, `1e-7`},
		{"huge float", `1e300`, `1e+300`},
		{"negative zero float", `-0.0`, `-0.0`},
		{"tenth", `0.1`, `0.1`},
		{"unicode keys", `{"ключ":"значение","日本":"語","z😀":1,"a":2}`, `{"a":2,"z😀":1,"ключ":"значение","日本":"語"}`},
		{"escapes", `"a\"b\\c\n\u00e9\ud83d\ude00"`, `"a\"b\\c\né😀"`},
		{"html stays escaped", `"<a&b>"`, `"\u003ca\u0026b\u003e"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mp, err := value.FromJSON([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if err := value.Check(mp); err != nil {
				t.Fatalf("FromJSON wrote a value Check refuses: %v", err)
			}
			out, err := value.ToJSON(mp)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.out {
				t.Fatalf("ToJSON(FromJSON(%s)) = %s, want %s", tc.in, out, tc.out)
			}
			again, err := value.FromJSON(out)
			if err != nil || !bytes.Equal(again, mp) {
				t.Fatalf("FromJSON(ToJSON(v)) = %x, %v; v = %x", again, err, mp)
			}
		})
	}
}

func TestFromJSONBytes(t *testing.T) {
	for in, want := range map[string][]byte{
		`3`:                                 {0x03},
		`-1`:                                {0xff},
		`200`:                               {0xcc, 200},
		`1.5`:                               {0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0},
		`{"b":1,"a":2}`:                     {0x82, 0xa1, 'a', 0x02, 0xa1, 'b', 0x01},
		`{"$bytes":"AQI="}`:                 {0xc4, 0x02, 0x01, 0x02},
		`{"$ext":5,"$data":"AQ=="}`:         {0xd4, 0x05, 0x01},
		`{"$blob":"` + ref1.String() + `"}`: append([]byte{0xc7, 0x20, 0x42}, ref1.Bytes()...),
	} {
		got, err := value.FromJSON([]byte(in))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("FromJSON(%s) = %x, %v; want %x", in, got, err, want)
		}
	}
}

func TestFromJSONRefsAreFound(t *testing.T) {
	mp, err := value.FromJSON([]byte(`{"a":[{"$blob":"` + ref2.String() + `"},{"b":{"$blob":"` + ref1.String() + `"}}],"c":{"$blob":"` + ref2.String() + `"}}`))
	if err != nil {
		t.Fatal(err)
	}
	refs, err := value.Refs(mp)
	if err != nil || len(refs) != 2 || refs[0] != ref2 || refs[1] != ref1 {
		t.Fatalf("Refs = %v, %v", refs, err)
	}
}

// nest returns JSON arrays nested n deep around 1.
func nest(n int) string { return strings.Repeat("[", n) + "1" + strings.Repeat("]", n) }

func TestFromJSONErrors(t *testing.T) {
	r := ref1.String()
	for _, tc := range []struct {
		name, in, want string
		blobRef        bool // the error also wraps syncnode.ErrBadBlobRef
	}{
		{"no value", "", "value: malformed: JSON: no value", false},
		{"only space", " \n ", "JSON: no value", false},
		{"bad character", `{"a":}`, "JSON at byte 5 (line 1, column 6): invalid character '}' looking for beginning of value", false},
		{"second line", "{\n  \"a\": x}", "JSON at byte 9 (line 2, column 8): invalid character 'x'", false},
		{"columns count characters", `{"é": x}`, "JSON at byte 7 (line 1, column 7)", false},
		{"truncated", `[1,2`, "JSON at byte 4 (line 1, column 5): unexpected end of JSON input", false},
		{"data after the value", `1 2`, "JSON at byte 2 (line 1, column 3): invalid character '2' after top-level value", false},
		{"object then more", `{"a":1}}`, "JSON at byte 7 (line 1, column 8)", false},
		{"bad ref", `{"$blob":"notaref"}`, `JSON at $: syncnode: malformed blob ref: "notaref" is not a CID`, true},
		{"ref not a string", `{"a":{"$blob":["x"]}}`, `JSON at $.a: "$blob" must be the only key of its object and hold a blob ref string, as {"$blob": "REF"}`, false},
		{"ref null", `{"$blob":null}`, `JSON at $: "$blob" must be the only key`, false},
		{"ref with company", `{"a":[0,{"$blob":"` + r + `","x":1}]}`, `JSON at $.a[1]: "$blob" must be the only key`, false},
		{"bad base64", `{"weird key":{"$bytes":"!!"}}`, `JSON at $["weird key"]: "$bytes" holds bad base64`, false},
		{"bytes not alone", `{"$bytes":"","n":1}`, `JSON at $: "$bytes" must be the only key`, false},
		{"ext type out of range", `{"$ext":300,"$data":""}`, `JSON at $: "$ext" is 300, not an extension type from -128 to 127`, false},
		{"ext without data", `{"$ext":1}`, `JSON at $: "$ext" must sit with "$data" alone`, false},
		{"ext as a blob ref", `{"$ext":66,"$data":""}`, `JSON at $: extension 66 is a blob ref: write it as {"$blob": "REF"}`, false},
		{"number out of range", `{"n":[1e400]}`, `JSON at $.n[0]: number 1e400 is out of range for a float64`, false},
		{"too deep", nest(value.MaxDepth + 1), "JSON at $" + strings.Repeat("[0]", value.MaxDepth) + ": maps and arrays nested deeper than 31", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := value.FromJSON([]byte(tc.in))
			if !errors.Is(err, value.ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("FromJSON(%q) = %v, want ErrMalformed and %q", tc.in, err, tc.want)
			}
			if got := errors.Is(err, syncnode.ErrBadBlobRef); got != tc.blobRef {
				t.Fatalf("wraps ErrBadBlobRef: %v, want %v", got, tc.blobRef)
			}
		})
	}
	if _, err := value.FromJSON([]byte(nest(value.MaxDepth))); err != nil {
		t.Fatalf("JSON nested MaxDepth deep: %v", err)
	}
}

func TestToJSONErrors(t *testing.T) {
	badRef := append([]byte{0xc7, 0x20, 0x42}, make([]byte, 32)...) // the zero digest
	for _, tc := range []struct {
		name string
		in   []byte
		want string
		hint bool
	}{
		{"JSON object", []byte(`{"a":1}`), "value: malformed: msgpack: 6 trailing bytes from byte 1", true},
		{"JSON after space", []byte(" [1]"), "3 trailing bytes from byte 1", true},
		{"JSON string", []byte(`"x"`), "2 trailing bytes from byte 1", true},
		{"empty", nil, "msgpack: truncated at byte 0", false},
		{"truncated array", []byte{0x92, 0x91, 0x01}, "msgpack: truncated at byte 3", false},
		{"array longer than the input", []byte{0x93, 0x01}, "msgpack: 3 values claimed at byte 1, 1 bytes left", false},
		{"short string", []byte{0xa5, 'a'}, "msgpack: 5-byte value at byte 1 runs past the end", false},
		{"reserved byte", []byte{0x91, 0xc1}, "msgpack: reserved byte 0xc1 at 1", false},
		{"too deep", append(bytes.Repeat([]byte{0x91}, value.MaxDepth+1), 0x01), "msgpack: nested deeper than 31 at byte 31", false},
		{"zero ref", badRef, "blob ref at byte 3: syncnode: malformed blob ref: zero digest", false},
		{"NaN", []byte{0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1}, "at byte 0: float NaN has no JSON form", false},
		{"infinity in a map", []byte{0x81, 0xa1, 'f', 0xca, 0x7f, 0x80, 0, 0}, "at byte 3: float +Inf has no JSON form", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := value.ToJSON(tc.in)
			if !errors.Is(err, value.ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ToJSON(%x) = %v, want ErrMalformed and %q", tc.in, err, tc.want)
			}
			if got := strings.Contains(err.Error(), "value looks like JSON; convert it with value.FromJSON"); got != tc.hint {
				t.Fatalf("JSON hint in %q: %v, want %v", err, got, tc.hint)
			}
		})
	}
}

func TestToJSONOfOtherShapes(t *testing.T) {
	f32 := []byte{0xca, 0x3d, 0xcc, 0xcc, 0xcd} // float32 0.1
	intKeys := []byte{0x82, 0x01, 0xa1, 'a', 0xc3, 0xa1, 'b'}
	refKey := append(append([]byte{0x81, 0xc7, 0x20, 0x42}, ref1.Bytes()...), 0x01)
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{f32, `0.1`},
		{intKeys, `{"1":"a","true":"b"}`},
		{refKey, `{"` + ref1.String() + `":1}`},
		{[]byte{0xd6, 0xff, 0, 0, 0, 1}, `{"$data":"AAAAAQ==","$ext":-1}`}, // a timestamp
	} {
		out, err := value.ToJSON(tc.in)
		if err != nil || string(out) != tc.want {
			t.Errorf("ToJSON(%x) = %s, %v; want %s", tc.in, out, err, tc.want)
		}
		if !json.Valid(out) {
			t.Errorf("ToJSON(%x) is not JSON: %s", tc.in, out)
		}
	}
}
