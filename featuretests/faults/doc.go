// Package faults is syncnode's fault suite: real node processes killed
// with SIGKILL mid-transfer, peers that lie, truncate, stall or reset,
// a thousand concurrent fetch streams against one node, and partitions
// that heal. Every test checks that no wrong or partial blob is ever
// visible, that no referenced blob is lost and that ownership share totals
// are conserved.
//
// "go test ./featuretests/faults" runs the short form (as CI does);
// "go test ./featuretests/faults -faults.long -timeout 60m -v" runs the long
// form and prints the figures.
package faults
