// Package featuretests proves multi-node syncnode scenarios through the
// public Go API, on real libp2p hosts on loopback.
package featuretests
