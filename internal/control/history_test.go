package control

import (
	"testing"
	"time"
)

// The graph's samples are rates over the time between readings, oldest
// first, the last hour's worth at most.
func TestHistoryRatesAndLength(t *testing.T) {
	var h history
	t0 := time.Unix(1_800_000_000, 0)
	h.add(t0, counters{in: 1000, out: 0, queue: 3})
	if len(h.list()) != 0 {
		t.Fatal("a first reading made a sample: it has no rate yet")
	}
	h.add(t0.Add(10*time.Second), counters{in: 11000, out: 500, queue: 5})
	s := h.list()
	if len(s) != 1 || s[0].InRate != 1000 || s[0].OutRate != 50 || s[0].Queue != 5 {
		t.Fatalf("samples %+v", s)
	}
	for i := range 2 * historyLen {
		h.add(t0.Add(time.Duration(i+2)*10*time.Second), counters{in: 11000, out: 500, queue: i})
	}
	s = h.list()
	if len(s) != historyLen || s[len(s)-1].Queue != 2*historyLen-1 || !s[0].Time.Before(s[1].Time) {
		t.Fatalf("%d samples, last %+v", len(s), s[len(s)-1])
	}
}
