// Package syncgroup owns syncgroups: their specs, membership and ACLs, each
// member's priority, and the data-sync state (version vectors and the row
// log) that members exchange.
package syncgroup
