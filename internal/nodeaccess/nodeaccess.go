// Package nodeaccess hands the project's test harnesses what a node keeps
// from everyone else: its share ledger and its libp2p host, with which
// they inject faults (offers made behind the node's back, streams and
// peerstore entries of their own, partitions).
//
// A harness sets node.Config.Access to a new Access and Open fills it.
// The package is internal, so no application can name the type, set the
// field or reach the ledger: Grant, Offer and Settle called from outside
// could break the ownership invariants.
package nodeaccess

import (
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/syncnode/syncnode/ownership"
)

// Access is one open node's ledger and host.
type Access struct {
	Ledger *ownership.Ledger
	Host   host.Host
}
