package syncgroup

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/syncnode/syncnode/internal/testkit"
)

// TestKeyIndexAgreesWithASortedMap sets random keys, in random order and
// in runs of ascending keys, and checks lookups, ascending walks from any
// key, the count and the runs' invariants against a map after each batch.
func TestKeyIndexAgreesWithASortedMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var x keyIndex
	want := map[string]uint64{}
	check := func() {
		t.Helper()
		keys := make([]string, 0, len(want))
		for k := range want {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if x.Len() != len(keys) {
			t.Fatalf("Len %d, want %d", x.Len(), len(keys))
		}
		for i, r := range x.runs {
			if len(r) == 0 || len(r) > runMax {
				t.Fatalf("run %d of %d items", i, len(r))
			}
			if i > 0 && x.runs[i-1][len(x.runs[i-1])-1].key >= r[0].key {
				t.Fatalf("runs %d and %d out of order", i-1, i)
			}
		}
		for _, start := range []string{"", "k", keys[rng.IntN(len(keys))], keys[len(keys)-1] + "!", "zz"} {
			from, _ := slices.BinarySearch(keys, start)
			var got []string
			x.AscendFrom(start, func(it item) bool {
				if it.e.seq != want[it.key] {
					t.Fatalf("%s: seq %d, want %d", it.key, it.e.seq, want[it.key])
				}
				got = append(got, it.key)
				return len(got) < 50
			})
			if exp := keys[from:min(len(keys), from+50)]; !slices.Equal(got, exp) {
				t.Fatalf("from %q: %v, want %v", start, got, exp)
			}
		}
		for range 200 {
			k := fmt.Sprintf("k%05d", rng.IntN(20000))
			it, ok := x.Get(k)
			if w, has := want[k]; ok != has || ok && it.e.seq != w {
				t.Fatalf("Get %s: %v %d, want %v %d", k, ok, it.e.seq, has, w)
			}
		}
	}
	set := func(k string) {
		v := rng.Uint64()
		want[k] = v
		x.Set(item{key: k, e: entry{seq: v}})
	}
	for round := range 40 {
		if round%2 == 0 {
			for range 500 {
				set(fmt.Sprintf("k%05d", rng.IntN(20000)))
			}
		} else {
			base := rng.IntN(19000)
			for i := range 700 {
				set(fmt.Sprintf("k%05d", base+i))
			}
		}
		check()
	}
}

// TestKeyIndexFilledInOrderIsDense: keys set in ascending order, as an
// open loads them, cost at most 80 bytes each besides the key's bytes.
func TestKeyIndexFilledInOrderIsDense(t *testing.T) {
	const n = 200_000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("photos/%07d", i)
	}
	var x keyIndex
	per := float64(testkit.HeapGrowth(func() {
		for _, k := range keys {
			x.Set(item{key: k})
		}
	})) / n
	t.Logf("%.1f bytes a key besides the key's own", per)
	if per > 80 {
		t.Fatalf("%.0f bytes a key, want at most 80", per)
	}
	if !strings.HasPrefix(keys[0], "photos/") || x.Len() != n {
		t.Fatal(x.Len())
	}
	runtime.KeepAlive(&x)
}
