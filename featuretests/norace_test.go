//go:build !race

package featuretests

const raceEnabled = false
