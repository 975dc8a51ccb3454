package handoff

import (
	"testing"
	"time"

	"github.com/syncnode/syncnode"
)

// The reclaim queue hands out each due blob, holds a failed one back for
// a delay that doubles from a second to a minute, and forgets one done.
func TestReclaimQueue(t *testing.T) {
	var q reclaimQueue
	now := time.Unix(1000, 0)
	if _, ok, wait, _ := q.due(now); ok || wait >= 0 {
		t.Fatalf("an empty queue: due %v, wait %s", ok, wait)
	}
	a := syncnode.RefFromHash([32]byte{1})
	q.add(a)
	q.add(a) // once only
	ref, ok, _, _ := q.due(now)
	if !ok || ref != a {
		t.Fatalf("the queued blob is not due: %v %v", ref, ok)
	}
	var delays []time.Duration
	for range 8 {
		q.done(a, true, now)
		_, ok, wait, _ := q.due(now)
		if ok {
			t.Fatal("a failed blob is due at once")
		}
		delays = append(delays, wait)
		now = now.Add(wait)
		if _, ok, _, _ := q.due(now); !ok {
			t.Fatalf("the failed blob is not due after its delay %s", wait)
		}
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	for i := range want {
		if delays[i] != want[i] {
			t.Fatalf("delays %v, want %v", delays, want)
		}
	}
	q.done(a, false, now)
	if _, ok, wait, _ := q.due(now); ok || wait >= 0 {
		t.Fatalf("a done blob is still queued: due %v, wait %s", ok, wait)
	}
}
