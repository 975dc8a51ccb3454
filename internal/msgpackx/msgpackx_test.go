package msgpackx

import (
	"errors"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

type sample struct {
	A []struct {
		X int
		Y []string
	}
	M map[string][]byte
	F float64
	E []int8
	T bool
	N any
}

func TestCheckAcceptsWhatMsgpackWrites(t *testing.T) {
	v := sample{M: map[string][]byte{"k": make([]byte, 300), "big": make([]byte, 70000)}, F: 1.5, E: []int8{-1, -100, 5}, T: true}
	v.A = append(v.A, struct {
		X int
		Y []string
	}{X: -1 << 40, Y: []string{"a", string(make([]byte, 40)), string(make([]byte, 300))}})
	for range 20 {
		v.E = append(v.E, 1)
	}
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(b); err != nil {
		t.Fatalf("Check rejected valid msgpack: %v", err)
	}
	var back sample
	if err := Unmarshal(b, &back); err != nil || len(back.A) != 1 || len(back.M["big"]) != 70000 {
		t.Fatalf("Unmarshal: %v", err)
	}
	ints := []any{0, 127, 128, 255, 256, 65535, 65536, 1 << 33, -1, -33, -129, -40000, -1 << 33, float32(1), "", nil}
	for _, x := range ints {
		b, _ := msgpack.Marshal(x)
		if err := Check(b); err != nil {
			t.Errorf("Check(%v): %v", x, err)
		}
	}
}

func TestCheckRejectsLies(t *testing.T) {
	cases := map[string][]byte{
		"empty":            nil,
		"huge array":       {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01},
		"huge map":         {0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01, 0x01},
		"long string":      {0xdb, 0x00, 0x10, 0x00, 0x00, 'a'},
		"truncated bin":    {0xc4, 0x05, 1, 2},
		"truncated length": {0xdc, 0x01},
		"reserved":         {0xc1},
		"trailing":         {0x01, 0x02},
		"missing element":  {0x92, 0x01},
		"deep":             append(make([]byte, 0), repeat(0x91, MaxDepth+1)...),
	}
	for name, b := range cases {
		if err := Check(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func repeat(c byte, n int) []byte {
	b := make([]byte, n+1)
	for i := range n {
		b[i] = c
	}
	b[n] = 0x01
	return b
}

func FuzzCheck(f *testing.F) {
	b, _ := msgpack.Marshal(sample{F: 2})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		if Check(b) != nil {
			return
		}
		// Whatever Check accepts, msgpack decodes without a panic and
		// with allocations bounded by the input.
		var v any
		Unmarshal(b, &v)
		var s sample
		Unmarshal(b, &s)
	})
}

func TestWalkFindsExtensions(t *testing.T) {
	v := map[string]any{"a": []any{1, "x", &extVal{7}}, "b": &extVal{9}}
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := Walk(b, func(typ int8, p []byte) {
		if typ == 5 {
			got = append(got, p...)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0]+got[1] != 16 {
		t.Fatalf("ext payloads %v, want 7 and 9", got)
	}
}

// extVal encodes as a 1-byte extension of type 5.
type extVal struct{ v byte }

func (e *extVal) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeExtHeader(5, 1); err != nil {
		return err
	}
	_, err := enc.Writer().Write([]byte{e.v})
	return err
}
