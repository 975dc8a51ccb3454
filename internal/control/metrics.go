package control

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/syncnode/syncnode/node"
)

// collector reads a node's counters at each scrape.
type collector struct {
	n *node.Node

	queue, attempts, failures, bytesIn, bytesOut, verify, evictions, blobs, blobBytes, demoted,
	referenced, atRisk, copies, damaged, scrubbed, restoring, storeUp, refused,
	collected, collectedCopies, unreferenced, admins, pinned *prometheus.Desc
}

func newCollector(n *node.Node) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("syncnode_"+name, help, labels, nil)
	}
	return &collector{n: n,
		queue:           d("fetch_queue_length", "Blobs queued in the server fetcher."),
		attempts:        d("fetch_attempts_total", "Server fetcher attempts."),
		failures:        d("fetch_failures_total", "Server fetcher attempts that failed."),
		bytesIn:         d("blob_bytes_in_total", "Blob bytes received from peers."),
		bytesOut:        d("blob_bytes_out_total", "Blob bytes served to peers."),
		verify:          d("verify_failures_total", "Holders dropped for sending bytes that did not verify."),
		evictions:       d("evictions_total", "Blobs evicted over the size budget."),
		blobs:           d("blobs", "Blobs held."),
		blobBytes:       d("blob_bytes", "Bytes of blobs held."),
		pinned:          d("blobs_pinned", "Blobs the user pinned here, kept whatever the budget."),
		demoted:         d("peers_demoted", "Holders left out of fetches for lying, stalling, truncating or resetting."),
		referenced:      d("group_blobs_referenced", "Blobs referenced in a syncgroup.", "group"),
		atRisk:          d("group_blobs_at_risk", "Referenced blobs with fewer verified server copies known than the group wants.", "group"),
		copies:          d("group_copies_wanted", "Verified server copies of each blob the group wants before devices evict theirs.", "group"),
		admins:          d("group_admins", "Admins of the syncgroup, as its chain of changes stands here.", "group"),
		damaged:         d("blobs_damaged_total", "Stored copies found damaged on disk (deleted and restored from a peer)."),
		scrubbed:        d("scrub_bytes_total", "Bytes of held blobs re-verified by the scrubber."),
		restoring:       d("blobs_restoring", "Blobs whose copy is being restored from a peer."),
		refused:         d("rows_refused_total", "Rows refused because their writer was over its budget."),
		collected:       d("blobs_collected_total", "Blobs collected in a group: no live row referenced them for the grace, and the group's shares here dissolved."),
		collectedCopies: d("collected_copies_deleted_total", "Copies deleted because their blobs were collected and nothing else kept them."),
		unreferenced:    d("blobs_unreferenced", "Blobs (per group) no live row references, whose grace runs: collected when it ends unless a row names them again."),
		storeUp:         d("blob_store_up", "1 if the blob store's last request succeeded, 0 if it failed (an object store down or refusing the credentials).", "store"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queue, c.attempts, c.failures, c.bytesIn, c.bytesOut, c.verify,
		c.evictions, c.blobs, c.blobBytes, c.demoted, c.referenced, c.atRisk, c.copies, c.damaged, c.scrubbed, c.restoring, c.storeUp, c.refused,
		c.collected, c.collectedCopies, c.unreferenced, c.admins, c.pinned} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.n.Stats()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(c.queue, float64(s.FetchQueue))
	counter(c.attempts, s.FetchAttempts)
	counter(c.failures, s.FetchFailures)
	counter(c.bytesIn, s.BytesIn)
	counter(c.bytesOut, s.BytesOut)
	counter(c.verify, s.VerifyFailures)
	counter(c.evictions, s.Evictions)
	gauge(c.blobs, float64(s.Blobs))
	gauge(c.blobBytes, float64(s.BlobBytes))
	gauge(c.pinned, float64(s.Pinned))
	gauge(c.demoted, float64(len(s.Demoted)))
	counter(c.damaged, s.Damaged)
	counter(c.scrubbed, s.Scrubbed)
	gauge(c.restoring, float64(s.Restoring))
	counter(c.collected, s.Collected)
	counter(c.collectedCopies, s.CollectedCopies)
	gauge(c.unreferenced, float64(s.Unreferenced))
	var refused int64
	for _, n := range s.RowsRefused {
		refused += n
	}
	counter(c.refused, refused)
	store, serr := c.n.StoreInfo()
	up := 1.0
	if serr != nil {
		up = 0
	}
	gauge(c.storeUp, up, store)
	dur, err := c.n.Durability()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.atRisk, err)
		return
	}
	for _, g := range dur {
		gauge(c.referenced, float64(g.Referenced), string(g.Group))
		gauge(c.atRisk, float64(g.AtRisk), string(g.Group))
		gauge(c.copies, float64(g.Copies), string(g.Group))
	}
	for _, spec := range c.n.Groups() {
		gauge(c.admins, float64(len(spec.Admins)), string(spec.ID))
	}
}

// metricsHandler serves n's metrics from a registry of its own.
func metricsHandler(n *node.Node) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(n), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
