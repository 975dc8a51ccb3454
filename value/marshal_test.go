package value_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
	"github.com/syncnode/syncnode/syncgroup"
	"github.com/syncnode/syncnode/value"
)

type photo struct {
	Title   string                      `json:"title"`
	Image   syncnode.BlobRef            `json:"image"`
	Thumbs  []syncnode.BlobRef          `json:"thumbs,omitempty"`
	Sizes   map[string]syncnode.BlobRef `json:"sizes"`
	Unset   syncnode.BlobRef            `json:"unset"`
	Both    string                      `msgpack:"m" json:"j"`
	Secret  string                      `json:"-"`
	Plain   int
	Ratio   float64 `json:"ratio"`
	Raw     []byte  `json:"raw"`
	Skipped string  `json:"skipped,omitempty"`
}

func samplePhoto() photo {
	return photo{
		Title:  "beach",
		Image:  ref1,
		Thumbs: []syncnode.BlobRef{ref2, ref1},
		Sizes:  map[string]syncnode.BlobRef{"small": ref2, "large": ref1},
		Both:   "tagged twice",
		Secret: "never written",
		Plain:  -7,
		Ratio:  1.5,
		Raw:    []byte{0, 1, 255},
	}
}

func TestMarshalStructWithRefs(t *testing.T) {
	in := samplePhoto()
	b, err := value.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := value.Check(b); err != nil {
		t.Fatal(err)
	}
	out, err := value.ToJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"Plain":-7,"image":{"$blob":"` + ref1.String() + `"},"m":"tagged twice","ratio":1.5,"raw":{"$bytes":"AAH/"},` +
		`"sizes":{"large":{"$blob":"` + ref1.String() + `"},"small":{"$blob":"` + ref2.String() + `"}},` +
		`"thumbs":[{"$blob":"` + ref2.String() + `"},{"$blob":"` + ref1.String() + `"}],"title":"beach","unset":null}`
	if string(out) != want {
		t.Fatalf("ToJSON(Marshal(photo)):\n%s\nwant\n%s", out, want)
	}
	var back photo
	if err := value.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	in.Secret = ""
	if back.Title != in.Title || back.Image != in.Image || len(back.Thumbs) != 2 || back.Thumbs[0] != ref2 || back.Thumbs[1] != ref1 ||
		len(back.Sizes) != 2 || back.Sizes["small"] != ref2 || back.Sizes["large"] != ref1 || !back.Unset.IsZero() ||
		back.Both != in.Both || back.Secret != "" || back.Plain != -7 || back.Ratio != 1.5 || !bytes.Equal(back.Raw, in.Raw) {
		t.Fatalf("Unmarshal(Marshal(v)) = %+v, want %+v", back, in)
	}
	// Refs, and the walk every node runs on a row, find them all.
	refs, err := value.Refs(b)
	if err != nil || len(refs) != 2 || refs[0] != ref1 || refs[1] != ref2 {
		t.Fatalf("Refs = %v, %v", refs, err)
	}
	found, err := syncgroup.FindRefs(b)
	if err != nil || len(found) != 2 || found[0] != ref1 || found[1] != ref2 {
		t.Fatalf("syncgroup.FindRefs = %v, %v", found, err)
	}
	// The JSON form reads back to the same bytes.
	again, err := value.FromJSON(out)
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("FromJSON(ToJSON(Marshal(v))) = %x, %v\nwant %x", again, err, b)
	}
}

func TestMarshalSliceAndMapOfRefs(t *testing.T) {
	refs := []syncnode.BlobRef{ref1, ref2, ref1}
	b, err := value.Marshal(refs)
	if err != nil {
		t.Fatal(err)
	}
	var back []syncnode.BlobRef
	if err := value.Unmarshal(b, &back); err != nil || len(back) != 3 || back[0] != ref1 || back[1] != ref2 || back[2] != ref1 {
		t.Fatalf("[]BlobRef round trip: %v, %v", back, err)
	}
	if found, err := value.Refs(b); err != nil || len(found) != 2 {
		t.Fatalf("Refs of a []BlobRef: %v, %v (want 2 distinct)", found, err)
	}

	m := map[string]any{"cover": ref2, "pages": []any{ref1, "text", 3}, "n": 2}
	b, err = value.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var into map[string]any
	if err := value.Unmarshal(b, &into); err != nil {
		t.Fatal(err)
	}
	pages, _ := into["pages"].([]any)
	if into["cover"] != ref2 || len(pages) != 3 || pages[0] != ref1 || pages[1] != "text" || pages[2] != int64(3) || into["n"] != int64(2) {
		t.Fatalf("map[string]any round trip: %#v", into)
	}
	var anyv any
	if err := value.Unmarshal(b, &anyv); err != nil {
		t.Fatal(err)
	}
	if am, _ := anyv.(map[string]any); am["cover"] != ref2 {
		t.Fatalf("any round trip: %#v", anyv)
	}
	found, err := value.Refs(b)
	if err != nil || len(found) != 2 || found[0] != ref2 || found[1] != ref1 {
		t.Fatalf("Refs of a map: %v, %v", found, err)
	}
}

func TestUnmarshalIntoAny(t *testing.T) {
	when := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	b, err := value.Marshal(map[string]any{
		"small": 5, "big": uint64(math.MaxUint64), "neg": -300, "f32": float32(0.5), "f": 2.5,
		"s": "x", "raw": []byte{1}, "nil": nil, "ok": true, "when": when,
	})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := value.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["small"] != int64(5) || m["big"] != uint64(math.MaxUint64) || m["neg"] != int64(-300) || m["f32"] != 0.5 || m["f"] != 2.5 ||
		m["s"] != "x" || !bytes.Equal(m["raw"].([]byte), []byte{1}) || m["nil"] != nil || m["ok"] != true {
		t.Fatalf("Unmarshal into map[string]any: %#v", m)
	}
	if got, ok := m["when"].(time.Time); !ok || !got.Equal(when) {
		t.Fatalf("timestamp: %#v", m["when"])
	}
	// Keys that are not strings have no map[string]any form.
	b, _ = value.Marshal(map[int]string{1: "a"})
	var a any
	if err := value.Unmarshal(b, &a); err == nil || !strings.Contains(err.Error(), "at byte 1: map key is an integer, not a string") {
		t.Fatalf("int keys into any: %v", err)
	}
	var into []any
	if err := value.Unmarshal(b, &into); err == nil {
		t.Fatal("a map decoded into a []any")
	}
	var intMap map[int]string
	if err := value.Unmarshal(b, &intMap); err != nil || intMap[1] != "a" {
		t.Fatalf("typed map: %v %v", intMap, err)
	}
}

func TestTagRule(t *testing.T) {
	type tagged struct {
		MsgpackWins string `msgpack:"mp" json:"js"`
		JSONName    string `json:"json_name"`
		OmitEmpty   string `json:"gone,omitempty"`
		Dash        string `json:"-"`
		MsgpackDash string `msgpack:"-" json:"kept"`
		GoName      string
	}
	b, err := value.Marshal(tagged{"a", "b", "", "d", "e", "f"})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := value.ToJSON(b)
	if want := `{"GoName":"f","json_name":"b","mp":"a"}`; string(out) != want {
		t.Fatalf("tags: %s, want %s", out, want)
	}
	// Names match exactly: a "goname" key is not GoName.
	b, _ = value.FromJSON([]byte(`{"goname":"x","json_name":"y","mp":"z","js":"no"}`))
	var back tagged
	if err := value.Unmarshal(b, &back); err != nil || back.GoName != "" || back.JSONName != "y" || back.MsgpackWins != "z" {
		t.Fatalf("decode by tag: %+v %v", back, err)
	}
}

func TestMarshalIsDeterministic(t *testing.T) {
	m := map[string]int{}
	refs := map[string]syncnode.BlobRef{}
	ints := map[int]string{}
	for i := range 40 {
		k := strings.Repeat("k", i%7) + string(rune('a'+i))
		m[k] = i
		refs[k] = syncnode.RefFromHash([32]byte{byte(i + 1)})
		ints[i*37-500] = k
	}
	for _, v := range []any{m, refs, ints, map[string]any{"m": m, "r": refs}} {
		first, err := value.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		for range 20 {
			if b, _ := value.Marshal(v); !bytes.Equal(b, first) {
				t.Fatalf("Marshal(%T) differs between calls", v)
			}
		}
	}
	// String keys sort as FromJSON sorts them.
	b, _ := value.Marshal(m)
	j, _ := value.ToJSON(b)
	again, err := value.FromJSON(j)
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("Marshal and FromJSON order keys differently:\n%x\n%x", b, again)
	}
}

func TestMarshalErrors(t *testing.T) {
	if _, err := value.Marshal(make(chan int)); err == nil || !strings.HasPrefix(err.Error(), "value: ") {
		t.Fatalf("Marshal(chan): %v", err)
	}
	var deep any = 1
	for range value.MaxDepth + 1 {
		deep = []any{deep}
	}
	if _, err := value.Marshal(deep); !errors.Is(err, value.ErrMalformed) || !strings.Contains(err.Error(), "nested deeper than 31") {
		t.Fatalf("Marshal of a value nested too deep: %v", err)
	}
}

func TestUnmarshalErrors(t *testing.T) {
	var p photo
	err := value.Unmarshal([]byte(`{"title":"beach"}`), &p)
	if !errors.Is(err, value.ErrMalformed) || !strings.Contains(err.Error(), "value looks like JSON; convert it with value.FromJSON") {
		t.Fatalf("Unmarshal of JSON bytes: %v", err)
	}
	// Well-formed, but a string where a number belongs.
	b, _ := value.FromJSON([]byte(`{"title":"beach","Plain":"seven"}`))
	err = value.Unmarshal(b, &p)
	if err == nil || errors.Is(err, value.ErrMalformed) || !strings.Contains(err.Error(), "value: decoding failed after 8 bytes: ") {
		t.Fatalf("Unmarshal of a mismatched value: %v", err)
	}
	// A ref cannot land in an interface field msgpack fills.
	var loose struct{ Extra any }
	b, _ = value.Marshal(map[string]any{"Extra": ref1})
	err = value.Unmarshal(b, &loose)
	if err == nil || !strings.Contains(err.Error(), "a blob ref decodes only into a syncnode.BlobRef") {
		t.Fatalf("ref into an interface field: %v", err)
	}
	if err := value.Unmarshal(b, loose); err == nil {
		t.Fatal("Unmarshal into a non-pointer succeeded")
	}
}

func TestMaxDepthIsTheNodesLimit(t *testing.T) {
	if value.MaxDepth != msgpackx.MaxDepth-1 {
		t.Fatalf("value.MaxDepth %d, but nodes accept nesting %d deep", value.MaxDepth, msgpackx.MaxDepth-1)
	}
}

func TestCheck(t *testing.T) {
	good, _ := value.Marshal(samplePhoto())
	if err := value.Check(good); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{nil, {0xc1}, append(good, 0), good[:len(good)-1], []byte(`["a"]`)} {
		if err := value.Check(bad); !errors.Is(err, value.ErrMalformed) {
			t.Errorf("Check(%x) = %v, want ErrMalformed", bad, err)
		}
	}
	// A single JSON digit is also a msgpack integer: nothing to hint at.
	if err := value.Check([]byte("7")); err != nil {
		t.Fatalf("Check(7): %v", err)
	}
	short := []byte{0xd5, 0x42, 1, 2} // a ref extension of 2 bytes
	if err := value.Check(short); !errors.Is(err, value.ErrMalformed) || !errors.Is(err, syncnode.ErrBadBlobRef) ||
		!strings.Contains(err.Error(), "blob ref at byte 2") {
		t.Fatalf("Check of a short ref: %v", err)
	}
}

func TestRefsOfBadValues(t *testing.T) {
	if refs, err := value.Refs([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}); refs != nil || !errors.Is(err, value.ErrMalformed) {
		t.Fatalf("Refs of garbage: %v, %v", refs, err)
	}
	_, err := value.Refs([]byte(`{"a":1}`))
	if !strings.Contains(err.Error(), "value looks like JSON") {
		t.Fatalf("Refs of JSON: %v", err)
	}
	// A bad ref does not hide the good ones.
	v := append([]byte{0x92, 0xd5, 0x42, 1, 2, 0xc7, 0x20, 0x42}, ref1.Bytes()...)
	refs, err := value.Refs(v)
	if len(refs) != 1 || refs[0] != ref1 || !errors.Is(err, syncnode.ErrBadBlobRef) || errors.Is(err, value.ErrMalformed) {
		t.Fatalf("Refs with one bad ref: %v, %v", refs, err)
	}
	if none, err := value.Refs([]byte{0x90}); none != nil || err != nil {
		t.Fatalf("Refs of []: %v %v", none, err)
	}
}
