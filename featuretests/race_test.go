//go:build race

package featuretests

const raceEnabled = true
