package featuretests

import (
	"sync"
	"testing"
	"time"
)

// runSeeds runs run for seeds first, first+1, … (n of them), workers at a
// time, starting none once budget has passed since start, and hands each
// outcome to done on the test's goroutine.
func runSeeds[R any](t *testing.T, first uint64, n, workers int, start time.Time, budget time.Duration,
	run func(seed uint64) (R, error), done func(seed uint64, rep R, err error)) {
	type result struct {
		seed uint64
		rep  R
		err  error
	}
	next, results := make(chan uint64), make(chan result)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for seed := range next {
				rep, err := run(seed)
				results <- result{seed, rep, err}
			}
		})
	}
	go func() {
		defer close(next)
		for seed := first; seed < first+uint64(n); seed++ {
			if time.Since(start) > budget {
				return
			}
			select {
			case next <- seed:
			case <-t.Context().Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	for r := range results {
		done(r.seed, r.rep, r.err)
	}
}
