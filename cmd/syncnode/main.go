// Command syncnode runs and drives a syncnode device: "syncnode run" is
// the daemon; the other subcommands talk to it through its local control
// API. Run "syncnode help" for the list.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/control"
	"github.com/syncnode/syncnode/internal/demo"
	"github.com/syncnode/syncnode/internal/sim"
	"github.com/syncnode/syncnode/node"
)

const usage = `syncnode: a peer-to-peer sync node.

Usage: syncnode [-data DIR] COMMAND

  init [-listen MULTIADDR]           create the data directory, identity, config, control token
  run [-v]                           run the daemon (the commands below talk to it)
  demo                               run a three-node demonstration on loopback
  sim [-devices N] [-leaves N] [-servers N] [-blobs N] [-crashes N] [-partitions N] [-seed S]
                                     churn simulation: crashes, partitions, evictions; reports blobs lost (must be 0)

  blob put FILE|-                    store a blob, print its ref
  blob get REF [-o FILE]             fetch a blob if needed, write it to FILE (default stdout)
  blob cat REF [-offset N] [-length N]
  blob stat REF [--json]
  blob ls [--json]
  blob rm REF                        remove a blob (refused while it holds shares)
  why REF [--json]                   why a blob is (not) here: holders, attempts, next try

  sg create NAME -prefix P [-prefix P]... [-private] [-type normal|server|leaf]
  sg invite GROUP PEER [-type normal|server|leaf] [-ttl 24h]    print an invitation
  sg join INVITATION                 join with an invitation from an admin
  sg leave GROUP
  sg ls [--json]
  sg members GROUP [--json]

  row put GROUP KEY JSON             {"$blob": "REF"} in the JSON is a blob ref
  row get GROUP KEY
  row del GROUP KEY
  row ls GROUP [-prefix P] [--json]

  peers [--json]
  status [--json]
  ui                                 print the address of the status page (open it in a browser)

The data directory defaults to $SYNCNODE_DATA, else ~/.syncnode.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "syncnode:", err)
		os.Exit(1)
	}
}

func defaultDataDir() string {
	if d := os.Getenv("SYNCNODE_DATA"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".syncnode"
	}
	return filepath.Join(home, ".syncnode")
}

// cmd is one invocation: its flags, positional arguments and outputs.
type cmd struct {
	ctx            context.Context
	data           string
	stdin          io.Reader
	stdout, stderr io.Writer
	fs             *flag.FlagSet
	asJSON         *bool
	pos            []string
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("syncnode", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", defaultDataDir(), "data directory")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%v\n\n%s", err, usage)
	}
	args = fs.Args()
	if len(args) == 0 {
		return errors.New("no command\n\n" + usage)
	}
	name, args := args[0], args[1:]
	if name == "blob" || name == "sg" || name == "row" {
		if len(args) == 0 {
			return fmt.Errorf("%s: missing subcommand\n\n%s", name, usage)
		}
		name, args = name+" "+args[0], args[1:]
	}
	c := &cmd{ctx: ctx, data: *data, stdin: stdin, stdout: stdout, stderr: stderr,
		fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	c.fs.SetOutput(io.Discard)
	c.asJSON = c.fs.Bool("json", false, "print JSON")
	h, ok := commands[name]
	if !ok {
		if name == "help" || name == "-h" || name == "--help" {
			fmt.Fprint(stdout, usage)
			return nil
		}
		return fmt.Errorf("unknown command %q\n\n%s", name, usage)
	}
	return h(c, args)
}

// parse parses flags anywhere among args and checks the positional count.
func (c *cmd) parse(args []string, npos int, what string) error {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			return fmt.Errorf("%s: %w", c.fs.Name(), err)
		}
		args = c.fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if npos >= 0 && len(pos) != npos {
		return fmt.Errorf("%s: want %s", c.fs.Name(), what)
	}
	c.pos = pos
	return nil
}

func (c *cmd) client() (*control.Client, error) { return control.NewClient(c.data) }

// refAndClient parses a command whose one argument is a blob ref and
// returns the ref and a client of the daemon.
func (c *cmd) refAndClient(args []string) (syncnode.BlobRef, *control.Client, error) {
	if err := c.parse(args, 1, "one blob ref"); err != nil {
		return syncnode.BlobRef{}, nil, err
	}
	ref, err := syncnode.ParseBlobRef(c.pos[0])
	if err != nil {
		return syncnode.BlobRef{}, nil, err
	}
	cl, err := c.client()
	return ref, cl, err
}

// call makes one API call and prints its JSON answer, or hands it to text.
func call[T any](c *cmd, method, path string, in any, text func(T)) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	var out T
	if err := cl.Do(c.ctx, method, path, in, &out); err != nil {
		return err
	}
	if *c.asJSON || text == nil {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	text(out)
	return nil
}

func (c *cmd) table(rows [][]string) {
	tw := tabwriter.NewWriter(c.stdout, 2, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

var commands = map[string]func(*cmd, []string) error{
	"init": func(c *cmd, args []string) error {
		var listen stringList
		c.fs.Var(&listen, "listen", "libp2p listen multiaddr (repeatable)")
		if err := c.parse(args, 0, "no arguments"); err != nil {
			return err
		}
		cfg, err := control.Init(c.data, listen)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "initialised %s\n  listen %s\n  api    %s\nstart it with: syncnode -data %s run\n", c.data, strings.Join(cfg.Listen, " "), cfg.API, c.data)
		return nil
	},
	"run": func(c *cmd, args []string) error {
		verbose := c.fs.Bool("v", false, "log debug lines")
		if err := c.parse(args, 0, "no arguments"); err != nil {
			return err
		}
		level := slog.LevelInfo
		if *verbose {
			level = slog.LevelDebug
		}
		log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
		return control.Run(c.ctx, c.data, log, nil)
	},
	"demo": func(c *cmd, args []string) error { return demo.RunTemp(c.ctx, c.stdout) },
	"sim": func(c *cmd, args []string) error {
		cfg := sim.Config{Seed: uint64(time.Now().UnixNano())}
		c.fs.IntVar(&cfg.Devices, "devices", 12, "normal devices")
		c.fs.IntVar(&cfg.Leaves, "leaves", 4, "leaf devices")
		c.fs.IntVar(&cfg.Servers, "servers", 4, "servers")
		c.fs.IntVar(&cfg.Blobs, "blobs", 200, "rows with a new blob to write")
		c.fs.IntVar(&cfg.BlobSize, "size", 256<<10, "bytes per blob")
		c.fs.Int64Var(&cfg.Budget, "budget", 1<<20, "blob budget of each device and leaf, bytes")
		c.fs.IntVar(&cfg.Crashes, "crashes", 20, "nodes stopped and restarted during the run")
		c.fs.IntVar(&cfg.Partitions, "partitions", 4, "times the mesh is cut in two and healed during the run")
		c.fs.DurationVar(&cfg.Settle, "settle", 2*time.Minute, "how long to wait for server copies after the last write")
		c.fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed")
		cpuprofile := c.fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
		if err := c.parse(args, 0, "no arguments"); err != nil {
			return err
		}
		if *cpuprofile != "" {
			f, err := os.Create(*cpuprofile)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		dir, err := os.MkdirTemp("", "syncnode-sim-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.Dir = dir
		fmt.Fprintf(c.stdout, "churn simulation, seed %d\n", cfg.Seed)
		rep, err := sim.Run(c.ctx, cfg, c.stdout)
		fmt.Fprintln(c.stdout, rep)
		return err
	},
	"blob put": func(c *cmd, args []string) error {
		if err := c.parse(args, 1, "one file (or - for stdin)"); err != nil {
			return err
		}
		var r io.Reader = c.stdin
		if c.pos[0] != "-" {
			f, err := os.Open(c.pos[0])
			if err != nil {
				return err
			}
			defer f.Close()
			if fi, err := f.Stat(); err == nil && fi.Size() >= progressMin {
				bar := newBar(c.stderr, fi.Size(), "storing")
				defer bar.Finish()
				pr := progressbar.NewReader(f, bar)
				r = &pr
			} else {
				r = f
			}
		}
		return call(c, "POST", "/blobs", r, func(b control.BlobInfo) { fmt.Fprintln(c.stdout, b.Ref) })
	},
	"blob get": func(c *cmd, args []string) error {
		out := c.fs.String("o", "", "output file (default stdout)")
		prio := c.fs.Int("priority", node.PriorityHigh, "fetch priority")
		ref, cl, err := c.refAndClient(args)
		if err != nil {
			return err
		}
		var bar *progressbar.ProgressBar
		var failed error
		err = control.Stream(c.ctx, cl, "POST", fmt.Sprintf("/blobs/%s/fetch?priority=%d", ref, *prio), func(ev control.FetchEvent) {
			switch {
			case ev.Error != "":
				failed = errors.New(ev.Error)
			case ev.Total >= progressMin && bar == nil && ev.State == node.Fetching.String():
				bar = newBar(c.stderr, ev.Total, "fetching")
			}
			if bar != nil {
				bar.Set64(ev.Received)
			}
		})
		if bar != nil {
			bar.Finish()
		}
		if err == nil {
			err = failed
		}
		if err != nil {
			return err
		}
		if *out == "" {
			return cl.Do(c.ctx, "GET", "/blobs/"+ref.String(), nil, c.stdout)
		}
		return writeAtomically(*out, func(w io.Writer) error {
			return cl.Do(c.ctx, "GET", "/blobs/"+ref.String(), nil, w)
		})
	},
	"blob cat": func(c *cmd, args []string) error {
		offset := c.fs.Int64("offset", 0, "first byte")
		length := c.fs.Int64("length", -1, "bytes (default: to the end)")
		ref, cl, err := c.refAndClient(args)
		if err != nil {
			return err
		}
		q := url.Values{"offset": {fmt.Sprint(*offset)}}
		if *length >= 0 {
			q.Set("length", fmt.Sprint(*length))
		}
		return cl.Do(c.ctx, "GET", "/blobs/"+ref.String()+"?"+q.Encode(), nil, c.stdout)
	},
	"blob stat": func(c *cmd, args []string) error {
		if err := c.parse(args, 1, "one blob ref"); err != nil {
			return err
		}
		return call(c, "GET", "/blobs/"+url.PathEscape(c.pos[0])+"/stat", nil, func(b control.BlobInfo) {
			fmt.Fprintf(c.stdout, "ref     %s\nblake3  %s\nsize    %d\nshares  %v\n", b.Ref, b.Hex, b.Size, b.Shares)
		})
	},
	"blob ls": func(c *cmd, args []string) error {
		if err := c.parse(args, 0, "no arguments"); err != nil {
			return err
		}
		return call(c, "GET", "/blobs", nil, func(bs []control.BlobInfo) {
			rows := [][]string{{"REF", "SIZE", "SHARES"}}
			for _, b := range bs {
				rows = append(rows, []string{b.Ref, fmt.Sprint(b.Size), fmt.Sprint(b.Shares)})
			}
			c.table(rows)
		})
	},
	"blob rm": func(c *cmd, args []string) error {
		if err := c.parse(args, 1, "one blob ref"); err != nil {
			return err
		}
		return call[map[string]string](c, "DELETE", "/blobs/"+url.PathEscape(c.pos[0]), nil, func(map[string]string) {})
	},
	"why": func(c *cmd, args []string) error {
		if err := c.parse(args, 1, "one blob ref"); err != nil {
			return err
		}
		return call(c, "GET", "/why/"+url.PathEscape(c.pos[0]), nil, func(w node.Why) { printWhy(c.stdout, w) })
	},
	"sg create": func(c *cmd, args []string) error {
		var prefixes stringList
		c.fs.Var(&prefixes, "prefix", "key prefix the group syncs (repeatable)")
		private := c.fs.Bool("private", false, "only members may learn of the group")
		dev := c.fs.String("type", "normal", "this device's type in the group")
		if err := c.parse(args, 1, "a group name"); err != nil {
			return err
		}
		req := control.CreateRequest{Name: c.pos[0], Prefixes: prefixes, Private: *private, DevType: *dev}
		return call(c, "POST", "/groups", req, func(g control.Group) { fmt.Fprintln(c.stdout, g.ID) })
	},
	"sg invite": func(c *cmd, args []string) error {
		dev := c.fs.String("type", "normal", "the joiner's device type")
		ttl := c.fs.String("ttl", "24h", "how long the invitation is valid")
		if err := c.parse(args, 2, "a group and the joiner's peer ID"); err != nil {
			return err
		}
		req := control.InviteRequest{Group: c.pos[0], Peer: c.pos[1], DevType: *dev, TTL: *ttl}
		return call(c, "POST", "/groups/invite", req, func(inv control.Invitation) {
			b, _ := json.Marshal(inv)
			fmt.Fprintln(c.stdout, base64.RawURLEncoding.EncodeToString(b))
		})
	},
	"sg join": func(c *cmd, args []string) error {
		if err := c.parse(args, 1, "an invitation"); err != nil {
			return err
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(c.pos[0]))
		if err != nil {
			return fmt.Errorf("sg join: the invitation is not what sg invite printed: %w", err)
		}
		var inv control.Invitation
		if err := json.Unmarshal(raw, &inv); err != nil {
			return fmt.Errorf("sg join: the invitation is not what sg invite printed: %w", err)
		}
		return call(c, "POST", "/groups/join", inv, func(g control.Group) { fmt.Fprintln(c.stdout, "joined", g.ID) })
	},
	"sg leave": func(c *cmd, args []string) error {
		if err := c.parse(args, 1, "a group"); err != nil {
			return err
		}
		return call[map[string]string](c, "POST", "/groups/leave", control.GroupRequest{Group: c.pos[0]}, func(map[string]string) {})
	},
	"sg ls": func(c *cmd, args []string) error {
		if err := c.parse(args, 0, "no arguments"); err != nil {
			return err
		}
		return call(c, "GET", "/groups", nil, func(gs []control.Group) {
			rows := [][]string{{"GROUP", "PREFIXES", "PRIVATE"}}
			for _, g := range gs {
				rows = append(rows, []string{g.ID, strings.Join(g.Prefixes, ","), fmt.Sprint(g.Private)})
			}
			c.table(rows)
		})
	},
	"sg members": func(c *cmd, args []string) error {
		if err := c.parse(args, 1, "a group"); err != nil {
			return err
		}
		return call(c, "GET", "/groups/members?group="+url.QueryEscape(c.pos[0]), nil, func(ms []control.Member) {
			rows := [][]string{{"PEER", "TYPE", "ADDRS"}}
			for _, m := range ms {
				rows = append(rows, []string{m.Peer, m.DevType, strings.Join(m.Addrs, " ")})
			}
			c.table(rows)
		})
	},
	"row put": func(c *cmd, args []string) error {
		if err := c.parse(args, 3, "a group, a key and a JSON value"); err != nil {
			return err
		}
		req := control.RowRequest{Group: c.pos[0], Key: c.pos[1], Value: json.RawMessage(c.pos[2])}
		return call(c, "POST", "/rows", req, func(control.Row) {})
	},
	"row get": func(c *cmd, args []string) error {
		if err := c.parse(args, 2, "a group and a key"); err != nil {
			return err
		}
		q := url.Values{"group": {c.pos[0]}, "key": {c.pos[1]}}
		return call(c, "GET", "/rows?"+q.Encode(), nil, func(rs []control.Row) { fmt.Fprintln(c.stdout, string(rs[0].Value)) })
	},
	"row del": func(c *cmd, args []string) error {
		if err := c.parse(args, 2, "a group and a key"); err != nil {
			return err
		}
		q := url.Values{"group": {c.pos[0]}, "key": {c.pos[1]}}
		return call[map[string]string](c, "DELETE", "/rows?"+q.Encode(), nil, func(map[string]string) {})
	},
	"row ls": func(c *cmd, args []string) error {
		prefix := c.fs.String("prefix", "", "only keys with this prefix")
		if err := c.parse(args, 1, "a group"); err != nil {
			return err
		}
		q := url.Values{"group": {c.pos[0]}, "prefix": {*prefix}}
		return call(c, "GET", "/rows?"+q.Encode(), nil, func(rs []control.Row) {
			rows := [][]string{{"KEY", "VALUE"}}
			for _, r := range rs {
				rows = append(rows, []string{r.Key, string(r.Value)})
			}
			c.table(rows)
		})
	},
	"peers": func(c *cmd, args []string) error {
		if err := c.parse(args, 0, "no arguments"); err != nil {
			return err
		}
		return call(c, "GET", "/peers", nil, func(ps []control.Peer) {
			rows := [][]string{{"PEER", "ADDRS"}}
			for _, p := range ps {
				rows = append(rows, []string{p.ID, strings.Join(p.Addrs, " ")})
			}
			c.table(rows)
		})
	},
	"ui": func(c *cmd, args []string) error {
		if err := c.parse(args, 0, "no arguments"); err != nil {
			return err
		}
		u, err := control.PageURL(c.data)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, u)
		return nil
	},
	"status": func(c *cmd, args []string) error {
		if err := c.parse(args, 0, "no arguments"); err != nil {
			return err
		}
		return call(c, "GET", "/status", nil, func(s control.Status) {
			c.table([][]string{
				{"id", s.ID}, {"addrs", strings.Join(s.Addrs, " ")}, {"groups", fmt.Sprint(s.Groups)},
				{"peers", fmt.Sprint(s.Peers)}, {"blobs", fmt.Sprintf("%d (%d bytes)", s.Blobs, s.BlobBytes)},
				{"fetch queue", fmt.Sprint(s.FetchQueue)}, {"uploads", fmt.Sprintf("%d running, %d bytes sent", s.Uploads, s.BytesOut)},
				{"received", fmt.Sprintf("%d bytes", s.BytesIn)},
			})
			fmt.Fprintln(c.stdout)
			rows := [][]string{{"GROUP", "BLOBS", "AT RISK (no verified server copy)"}}
			for _, d := range s.Durability {
				rows = append(rows, []string{d.Group, fmt.Sprint(d.Referenced), fmt.Sprint(d.AtRisk)})
			}
			c.table(rows)
		})
	},
}

// progressMin is the smallest blob that gets a progress bar.
const progressMin = 4 << 20

func newBar(w io.Writer, total int64, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total, progressbar.OptionSetWriter(w), progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription(what), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish())
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
	err = fill(f)
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

func printWhy(w io.Writer, y node.Why) {
	fmt.Fprintf(w, "blob      %s\n", y.Ref)
	switch {
	case y.Held:
		fmt.Fprintf(w, "held      yes, %d bytes, verified when stored, on every read and by the scrubber\n", y.Size)
	case y.Restoring:
		fmt.Fprintf(w, "held      no: the copy here was lost or damaged and is being restored from a peer\n")
	default:
		fmt.Fprintf(w, "held      no\n")
	}
	fmt.Fprintf(w, "shares    %v\n", y.Shares)
	fmt.Fprintf(w, "groups    %v (server here: %v)\n", y.Groups, y.ServerIn)
	for i, l := range y.Locations {
		kind := "device"
		if l.Server {
			kind = "server"
		} else if l.Proxy {
			kind = "proxy"
		}
		fmt.Fprintf(w, "holder %d  %s (%s, seen %s) %s\n", i+1, l.Peer, kind, l.WhenSeen.Format(time.RFC3339), strings.Join(l.Addrs, " "))
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
	if y.Handoff != "" {
		fmt.Fprintf(w, "hand-off  %s: %s\n", y.HandoffAt.Format(time.RFC3339), y.Handoff)
	}
}
