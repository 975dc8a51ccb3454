// Package syncgroup owns syncgroups: their specs, membership and
// invitations, each member's device type, and the data-sync state (a
// hybrid logical clock, last-writer-wins rows and version vectors) that
// members exchange. It knows peers only by peer ID and holds no sockets.
package syncgroup
