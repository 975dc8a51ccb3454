package main

import (
	"encoding/json"
	"flag"
	"fmt"

	"github.com/syncnode/syncnode/internal/api"
)

func watchCmd() *command {
	return &command{name: "watch", args: "GROUP", nargs: 1, json: true, flags: watch,
		short: "follow a group's changes: rows, members, blobs, shares (-json: NDJSON with resume markers)"}
}

func watch(fs *flag.FlagSet) func(*cmd) error {
	prefix := fs.String("prefix", "", "only rows with keys under this prefix (member, blob and share events always)")
	from := fs.String("from", "", "resume after the event that carried this marker (default: replay the current state first)")
	now := fs.Bool("now", false, "only changes from now on: no replay")
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			last := ""
			enc := json.NewEncoder(c.stdout)
			err := cl.Watch(c.ctx, c.pos[0], api.WatchOptions{From: *from, Prefix: *prefix, Now: *now}, func(e api.Event) error {
				last = e.Marker
				if c.asJSON {
					return enc.Encode(e)
				}
				_, err := fmt.Fprintln(c.stdout, eventLine(e))
				return err
			})
			if last != "" && !c.asJSON {
				fmt.Fprintf(c.stderr, "resume with: syncnode watch %s -from %s\n", c.pos[0], last)
			}
			return err
		})
	}
}

// eventLine is one event as the watch command prints it.
func eventLine(e api.Event) string {
	who := e.Peer
	if e.Name != "" {
		who = e.Name + " (" + short(e.Peer) + ")"
	} else if who != "" {
		who = short(who)
	}
	if e.Local {
		who = "here"
	}
	at := e.Time.Local().Format("15:04:05.000")
	switch e.Kind {
	case "row.put":
		return fmt.Sprintf("%s %-14s %s = %s  by %s", at, e.Kind, e.Key, e.Value, who)
	case "row.deleted":
		return fmt.Sprintf("%s %-14s %s  by %s", at, e.Kind, e.Key, who)
	case "caught-up":
		return fmt.Sprintf("%s %s (what follows are changes)", at, e.Kind)
	case "shares.in", "shares.out":
		return fmt.Sprintf("%s %-14s %s  %d shares  %s", at, e.Kind, e.Ref, e.Shares, who)
	case "blob.held", "blob.fetched", "blob.dropped", "blob.server":
		return fmt.Sprintf("%s %-14s %s  %d bytes  %s", at, e.Kind, e.Ref, e.Size, who)
	}
	return fmt.Sprintf("%s %-14s %s", at, e.Kind, who)
}

// short abbreviates a peer ID for a line of text.
func short(id string) string {
	if len(id) > 12 {
		return "…" + id[len(id)-8:]
	}
	return id
}
