package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/writeback"
	"github.com/syncnode/syncnode/node"
)

// The blob commands, and why.

func blobCmd() *command {
	return &command{name: "blob", sub: []*command{
		{name: "put", args: "FILE|DIR|-...", short: "store files as blobs in one request, print their refs; -group writes a row per file", nargs: -1, json: true, flags: blobPut},
		{name: "get", args: "REF...", short: "fetch blobs if needed, write one to a file (default stdout) or several into a directory", nargs: -1, flags: blobGet},
		{name: "cat", args: "REF", short: "write a blob, or a range of it, to stdout", nargs: 1, flags: blobCat},
		{name: "stat", args: "REF", short: "a held blob's size, this node's shares of it and whether it is pinned", nargs: 1, json: true, flags: blobStat},
		{name: "ls", short: "the blobs held here", nargs: 0, json: true, flags: blobLs},
		{name: "rm", args: "REF", short: "remove a blob (refused, saying why, while shares or a pin hold it)", nargs: 1, flags: blobRm},
		{name: "pin", args: "REF", short: "keep a blob here whatever the budget, fetching it first if needed", nargs: 1, json: true, flags: blobPin},
		{name: "unpin", args: "REF", short: "drop this node's pin of a blob: the budget may evict it again", nargs: 1, json: true, flags: blobUnpin},
	}}
}

func whyCmd() *command {
	return &command{name: "why", args: "REF", short: "why a blob is (not) here: holders, attempts, next try", nargs: 1, json: true,
		flags: func(*flag.FlagSet) func(*cmd) error {
			return func(c *cmd) error {
				return c.with(func(cl *api.Client) error {
					w, err := cl.Why(c.ctx, c.pos[0])
					return show(c, w, err, func(w api.Why) { printWhy(c.stdout, w) })
				})
			}
		}}
}

func blobPut(fs *flag.FlagSet) func(*cmd) error {
	recursive := fs.Bool("r", false, "store the files under each directory given, keyed by their paths below it")
	group := fs.String("group", "", "write one row per file in this group: its path under -prefix, naming the blob, its size and modification time (one batch, after every blob is stored)")
	prefix := fs.String("prefix", "", "with -group: the key prefix of the rows (end it in / for a folder)")
	return func(c *cmd) error {
		if len(c.pos) == 0 {
			return fmt.Errorf("%w: name at least one file, a directory with -r, or - for stdin", errArgs)
		}
		if len(c.pos) > 1 || *recursive || *group != "" {
			if slices.Contains(c.pos, "-") {
				return fmt.Errorf("%w: - (stdin) goes alone", errArgs)
			}
			files, total, err := gatherFiles(c.pos, *recursive)
			if err != nil {
				return err
			}
			return putMany(c, files, total, api.PutBlobsOptions{Group: *group, Prefix: *prefix})
		}
		var r io.Reader = c.stdin
		if c.pos[0] != "-" {
			f, err := os.Open(c.pos[0])
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err == nil && fi.IsDir() {
				return fmt.Errorf("%s is a directory (-r stores the files under it)", c.pos[0])
			}
			if err == nil && fi.Size() >= progressMin {
				bar := newBar(c.stderr, fi.Size(), "storing")
				defer bar.Finish()
				pr := progressbar.NewReader(f, bar)
				r = &pr
			} else {
				r = f
			}
		}
		return c.with(func(cl *api.Client) error {
			b, err := cl.PutBlob(c.ctx, r)
			return show(c, b, err, func(b api.BlobInfo) { fmt.Fprintln(c.stdout, b.Ref) })
		})
	}
}

func blobGet(fs *flag.FlagSet) func(*cmd) error {
	out := fs.String("o", "", "output file (default stdout)")
	urgency := fs.Int("urgency", node.UrgencyHigh, "fetch urgency: higher runs first when fetches queue")
	wait := fs.Duration("wait", time.Minute, "how long to wait for a holder that cannot be reached now (gone, restarting) to come back; 0 fails at once")
	dir := fs.String("d", "", "with several refs: the directory to write them into, each as a file named by its ref")
	return func(c *cmd) error {
		switch {
		case len(c.pos) == 0:
			return fmt.Errorf("%w: name at least one ref", errArgs)
		case len(c.pos) > 1 || *dir != "":
			if *dir == "" {
				return fmt.Errorf("%w: several refs go into a directory: -d DIR", errArgs)
			}
			return getMany(c, c.pos, *dir, api.FetchOptions{Urgency: *urgency, Wait: *wait})
		}
		ref, cl, err := c.refAndClient()
		if err != nil {
			return err
		}
		p := newFetchProgress(c.stderr)
		err = cl.FetchBlob(c.ctx, ref.String(), api.FetchOptions{Urgency: *urgency, Wait: *wait}, p.event)
		p.end(err)
		if err != nil {
			return err
		}
		if *out == "" {
			return cl.ReadBlob(c.ctx, ref.String(), 0, -1, c.stdout)
		}
		return writeAtomically(*out, func(w io.Writer) error { return cl.ReadBlob(c.ctx, ref.String(), 0, -1, w) })
	}
}

func blobCat(fs *flag.FlagSet) func(*cmd) error {
	offset := fs.Int64("offset", 0, "first byte")
	length := fs.Int64("length", -1, "bytes (default: to the end)")
	return func(c *cmd) error {
		ref, cl, err := c.refAndClient()
		if err != nil {
			return err
		}
		return cl.ReadBlob(c.ctx, ref.String(), *offset, *length, c.stdout)
	}
}

func blobStat(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			b, err := cl.StatBlob(c.ctx, c.pos[0])
			return show(c, b, err, func(b api.BlobInfo) {
				c.table([][]string{{"ref", b.Ref}, {"blake3", b.Hex}, {"size", fmt.Sprint(b.Size)}, {"shares", sharesText(b.Shares)},
					{"pinned", yesNo(b.Pinned)}})
			})
		})
	}
}

func blobLs(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			bs, err := cl.ListBlobs(c.ctx)
			return show(c, bs, err, func(bs []api.BlobInfo) {
				rows := [][]string{{"REF", "SIZE", "SHARES", "PINNED"}}
				for _, b := range bs {
					rows = append(rows, []string{b.Ref, fmt.Sprint(b.Size), sharesText(b.Shares), yesNo(b.Pinned)})
				}
				c.table(rows)
			})
		})
	}
}

func blobRm(fs *flag.FlagSet) func(*cmd) error {
	force := fs.Bool("force", false, "remove a blob this node pinned, dropping the pin (shares still refuse)")
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			return cl.RemoveBlobWith(c.ctx, c.pos[0], api.RemoveOptions{Force: *force})
		})
	}
}

func blobPin(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			p, err := cl.PinBlob(c.ctx, c.pos[0])
			return show(c, p, err, func(p api.Pin) {
				if p.WasPinned {
					fmt.Fprintln(c.stdout, "pinned already", p.Ref)
					return
				}
				fmt.Fprintln(c.stdout, "pinned", p.Ref)
			})
		})
	}
}

func blobUnpin(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			p, err := cl.UnpinBlob(c.ctx, c.pos[0])
			return show(c, p, err, func(p api.Pin) {
				if !p.WasPinned {
					fmt.Fprintln(c.stdout, "not pinned", p.Ref)
					return
				}
				fmt.Fprintln(c.stdout, "unpinned", p.Ref)
			})
		})
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// sharesText prints shares by group as "GROUP N, GROUP N", groups sorted;
// "none" when there are none.
func sharesText(sh map[syncnode.GroupID]int) string {
	if len(sh) == 0 {
		return "none"
	}
	gs := make([]string, 0, len(sh))
	for g := range sh {
		gs = append(gs, string(g))
	}
	slices.Sort(gs)
	for i, g := range gs {
		gs[i] = fmt.Sprintf("%s %d", g, sh[syncnode.GroupID(g)])
	}
	return strings.Join(gs, ", ")
}

// progressMin is the fewest bytes a transfer must have to move for a
// progress bar.
const progressMin = 4 << 20

func newBar(w io.Writer, total int64, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total, progressbar.OptionSetWriter(w), progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription(what), progressbar.OptionThrottle(100*time.Millisecond))
}

// fetchProgress draws a fetch's progress from its status lines, which
// come at most every 100 ms: a fast fetch jumps between two of them, so
// the bar's own rate (bytes over the time between two updates) would be
// false. The rate shown is the bytes received over the time since the
// command asked, and the bar ends at 100 % with a line giving both.
type fetchProgress struct {
	w     io.Writer
	bar   *progressbar.ProgressBar
	start time.Time
	last  int64
	moved bool // a fetch ran: the blob was not held already
	// waiting is set while the fetch waits for a holder: said once.
	waiting bool
}

func newFetchProgress(w io.Writer) *fetchProgress { return &fetchProgress{w: w, start: time.Now()} }

func (p *fetchProgress) event(ev api.FetchEvent) {
	if ev.State == node.Locating.String() || ev.State == node.Fetching.String() {
		p.moved = true
	}
	if ev.State == node.Waiting.String() {
		if !p.waiting && ev.Until != nil {
			fmt.Fprintf(p.w, "waiting for a holder to come back (up to %v, until %s): %s\n",
				time.Until(*ev.Until).Round(time.Second), ev.Until.Local().Format(time.TimeOnly), ev.Error)
		}
		p.waiting = true
		return
	}
	// A fetch quicker than the daemon's first progress line still ends
	// with its bar and summary.
	if p.bar == nil && p.moved && ev.State != node.Failed.String() && ev.Total >= progressMin {
		p.bar = progressbar.NewOptions64(ev.Total, progressbar.OptionSetWriter(p.w),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetDescription("fetching"))
	}
	if p.bar == nil || ev.Received < p.last {
		return
	}
	p.last = min(ev.Received, ev.Total)
	p.bar.Describe(fmt.Sprintf("fetching %.1f MB/s", p.rate()))
	p.bar.Set64(p.last)
}

// rate is the average in MB/s since the command asked.
func (p *fetchProgress) rate() float64 {
	return float64(p.last) / max(time.Since(p.start).Seconds(), 1e-3) / 1e6
}

func (p *fetchProgress) end(err error) {
	if p.bar == nil {
		return
	}
	if err != nil {
		p.bar.Exit()
		fmt.Fprintf(p.w, "\nfetch stopped at %d of %d bytes\n", p.last, p.bar.GetMax64())
		return
	}
	p.last = p.bar.GetMax64()
	p.bar.Describe(fmt.Sprintf("fetched %.1f MB/s", p.rate()))
	p.bar.Finish()
	fmt.Fprintf(p.w, "\nfetched %d bytes in %.2f s (%.1f MB/s)\n", p.last, time.Since(p.start).Seconds(), p.rate())
}

// writeAtomically writes path through fill: into a temporary file beside
// it, synced and renamed over path only when fill succeeds, so a failed
// or interrupted read never truncates or half-writes an existing file.
func writeAtomically(path string, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".part-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // gone already after the rename
	err = fill(&writeback.Writer{F: f})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func printWhy(w io.Writer, y api.Why) {
	fmt.Fprintf(w, "blob      %s\n", y.Ref)
	switch {
	case y.Held:
		fmt.Fprintf(w, "held      yes, %d bytes, verified when stored, on every read and by the scrubber\n", y.Size)
	}
	if y.Store != "" {
		fmt.Fprintf(w, "store     %s\n", storeText(y.Store, y.StoreErr))
	}
	switch {
	case y.Held:
	case y.Restoring:
		fmt.Fprintf(w, "held      no: the copy here was lost or damaged and is being restored from a peer\n")
	default:
		fmt.Fprintf(w, "held      no\n")
	}
	fmt.Fprintf(w, "shares    %s\n", sharesText(y.Shares))
	if y.Pinned {
		fmt.Fprintf(w, "pinned    yes, since %s: kept here whatever the budget (syncnode blob unpin %s)\n", y.PinnedAt.Format(time.RFC3339), y.Ref)
	}
	groups := y.Groups
	server := "no"
	if y.ServerIn {
		server = "yes"
	}
	fmt.Fprintf(w, "groups    %s (server here: %s)\n", strings.Join(groups, ", "), server)
	for _, c := range y.Copies {
		fmt.Fprintf(w, "copies    %d of %d verified server copies wanted in %s\n", c.Known, c.Want, c.Group)
	}
	for _, u := range y.Unreferenced {
		if !u.Collected.IsZero() {
			fmt.Fprintf(w, "collected %s in %s: no live row referenced it for the grace; its shares there dissolved\n", u.Collected.Format(time.RFC3339), u.Group)
			continue
		}
		fmt.Fprintf(w, "unref'd   in %s since %s: no live row references it; collected from %s unless a row names it again\n",
			u.Group, u.Since.Format(time.RFC3339), u.Due.Format(time.RFC3339))
	}
	for i, l := range y.Locations {
		kind := "device"
		if l.Server {
			kind = "server"
		} else if l.Proxy {
			kind = "proxy"
		}
		fmt.Fprintf(w, "holder %d  %s %s (%s, seen %s) %s\n", i+1, nameOr(l.Name), l.Peer, kind, l.WhenSeen.Format(time.RFC3339), strings.Join(l.Addrs, " "))
	}
	switch {
	case y.Running:
		fmt.Fprintf(w, "fetcher   fetching now (%d failed attempts before)\n", y.Attempts)
	case y.Queued:
		fmt.Fprintf(w, "fetcher   queued; %d failed attempts; next try %s (in %s)\n", y.Attempts,
			y.NextAttempt.Format(time.RFC3339), time.Until(y.NextAttempt).Round(time.Second))
	case !y.Held && !y.ServerIn:
		fmt.Fprintf(w, "fetcher   not queued: this node is a server in none of the blob's groups; fetch it with: syncnode blob get %s\n", y.Ref)
	default:
		fmt.Fprintf(w, "fetcher   not queued\n")
	}
	if !y.LastAttempt.IsZero() {
		fmt.Fprintf(w, "last try  %s", y.LastAttempt.Format(time.RFC3339))
		if y.LastErr != "" {
			fmt.Fprintf(w, ": %s", y.LastErr)
		}
		fmt.Fprintln(w)
		if len(y.Tried) > 0 {
			fmt.Fprintf(w, "asked     %s\n", strings.Join(y.Tried, " "))
		}
	}
	if y.Route != "" {
		fmt.Fprintf(w, "route     %s: %s\n", y.RouteAt.Format(time.RFC3339), y.Route)
	}
	if y.Handoff != "" {
		fmt.Fprintf(w, "hand-off  %s: %s\n", y.HandoffAt.Format(time.RFC3339), y.Handoff)
	}
}

// storeText names a blob store, with its last failure.
func storeText(store, failure string) string {
	if failure == "" {
		return store
	}
	return store + " — FAILING: " + failure
}
