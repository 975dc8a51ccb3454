package api

import "time"

// PageState is what the status page shows: the node's status and
// durability, its syncgroups with their members, the server fetcher's
// queue with each blob's journal, and the blobs held.
type PageState struct {
	// History is the transfer rates and fetch queue length, a sample every
	// 10 s for the last hour, oldest first.
	History []Sample     `json:"history"`
	Status  Status       `json:"status"`
	Groups  []PageGroup  `json:"groups"`
	Queue   []QueueEntry `json:"queue"`
	// Blobs lists up to pageBlobs held blobs.
	Blobs []BlobInfo `json:"blobs"`
	Time  time.Time  `json:"time"`
}

// PageGroup is a syncgroup and its members.
type PageGroup struct {
	Group
	Members []Member `json:"members"`
}

// QueueEntry is one blob in the server fetcher's hands and its journal.
type QueueEntry struct {
	Ref         string     `json:"ref"`
	State       string     `json:"state"` // "fetching" or "queued"
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	LastAttempt *time.Time `json:"last_attempt,omitempty"`
	LastErr     string     `json:"last_error,omitempty"`
	Tried       []string   `json:"tried,omitempty"`
	Holders     []string   `json:"holders,omitempty"`
}

// Sample is one point of the status page's graph.
type Sample struct {
	Time time.Time `json:"time"`
	// InRate and OutRate are the blob bytes per second received and sent
	// since the sample before.
	InRate  float64 `json:"in_rate"`
	OutRate float64 `json:"out_rate"`
	// Queue is the server fetcher's queue length.
	Queue int `json:"queue"`
}
