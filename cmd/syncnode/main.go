// Command syncnode runs and drives a syncnode device: "syncnode run" is
// the daemon; the other commands talk to it through its local control
// API. Run "syncnode help" for the list, "syncnode COMMAND -h" for one.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/control"
)

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

// command is a node of the command tree: a group has subcommands, a leaf
// has flags and runs. Help is generated from the tree and the flags, so
// it cannot forget one.
type command struct {
	name  string // as typed: "get"
	args  string // the positional arguments' synopsis: "REF"
	short string // one line for the command list
	// nargs is how many positional arguments the command takes (-1: any).
	nargs int
	// json adds the -json flag: print the daemon's answer as JSON.
	json bool
	// flags defines the command's flags on fs and returns the command's
	// body, which reads them.
	flags func(fs *flag.FlagSet) func(c *cmd) error
	sub   []*command
}

// cmd is one invocation: its positional arguments and outputs.
type cmd struct {
	ctx            context.Context
	data           string
	stdin          io.Reader
	stdout, stderr io.Writer
	asJSON         bool
	pos            []string
}

// root is the whole command tree.
func root() *command {
	return &command{name: "syncnode", sub: []*command{
		initCmd(), runCmd(), demoCmd(), simCmd(),
		blobCmd(), whyCmd(), groupCmd(), rowCmd(), watchCmd(),
		peersCmd(), statusCmd(), uiCmd(),
	}}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("syncnode", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", defaultDataDir(), "data directory: $SYNCNODE_DATA if set, else ~/.syncnode")
	top := root()
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, top.help(nil, fs))
		return nil
	} else if err != nil {
		return fmt.Errorf("%v\n\n%s", err, top.help(nil, fs))
	}
	args = fs.Args()
	if len(args) > 0 && args[0] == "help" {
		path, c := top.find(args[1:])
		fmt.Fprint(stdout, c.help(path, fs))
		return nil
	}
	c := &cmd{ctx: ctx, data: *data, stdin: stdin, stdout: stdout, stderr: stderr}
	return top.exec(c, nil, args, fs)
}

// find walks names down the tree as far as they go.
func (k *command) find(names []string) ([]string, *command) {
	var path []string
	for _, n := range names {
		next := k.child(n)
		if next == nil {
			break
		}
		path, k = append(path, n), next
	}
	return path, k
}

func (k *command) child(name string) *command {
	for _, s := range k.sub {
		if s.name == name {
			return s
		}
	}
	return nil
}

// exec runs the command args name below k; path is k's own.
func (k *command) exec(c *cmd, path, args []string, global *flag.FlagSet) error {
	if k.sub != nil {
		if len(args) == 0 {
			return fmt.Errorf("%s: missing command\n\n%s", k.title(path), k.help(path, global))
		}
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			fmt.Fprint(c.stdout, k.help(path, global))
			return nil
		}
		if args[0] == "help" { // syncnode sg help [invite]
			more, h := k.find(args[1:])
			fmt.Fprint(c.stdout, h.help(append(path, more...), global))
			return nil
		}
		next := k.child(args[0])
		if next == nil {
			return fmt.Errorf("%s: unknown command %q\n\n%s", k.title(path), args[0], k.help(path, global))
		}
		return next.exec(c, append(path, args[0]), args[1:], global)
	}
	fs, body := k.flagSet(path)
	pos, err := parseAnywhere(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(c.stdout, k.help(path, global))
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w\n\n%s", k.title(path), err, k.help(path, global))
	}
	if k.nargs >= 0 && len(pos) != k.nargs {
		want := "no arguments"
		if k.nargs > 0 {
			want = k.args
		}
		return fmt.Errorf("%s: want %s, got %d arguments\n\n%s", k.title(path), want, len(pos), k.help(path, global))
	}
	c.pos = pos
	if f := fs.Lookup("json"); f != nil {
		c.asJSON = f.Value.(flag.Getter).Get().(bool)
	}
	err = body(c)
	if errors.Is(err, errArgs) {
		return fmt.Errorf("%s: %v\n\n%s", k.title(path), err, k.help(path, global))
	}
	return err
}

// errArgs marks a command's refusal of its arguments: the usage follows.
var errArgs = errors.New("arguments")

// flagSet returns a leaf's flags and body.
func (k *command) flagSet(path []string) (*flag.FlagSet, func(*cmd) error) {
	fs := flag.NewFlagSet(k.title(path), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if k.json {
		fs.Bool("json", false, "print the answer as JSON")
	}
	body := func(*cmd) error { return nil }
	if k.flags != nil {
		body = k.flags(fs)
	}
	return fs, body
}

// parseAnywhere parses flags placed before, between or after the
// positional arguments, which it returns.
func parseAnywhere(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

func (k *command) title(path []string) string {
	return strings.Join(append([]string{"syncnode"}, path...), " ")
}

// help is k's usage: its synopsis and flags, or its commands.
func (k *command) help(path []string, global *flag.FlagSet) string {
	var b strings.Builder
	if k.sub == nil {
		fmt.Fprintf(&b, "Usage: %s [flags] %s\n\n%s\n", k.title(path), k.args, k.short)
		fs, _ := k.flagSet(path)
		if n := countFlags(fs); n > 0 {
			b.WriteString("\nFlags:\n")
			fs.SetOutput(&b)
			fs.PrintDefaults()
		}
		return b.String()
	}
	if len(path) == 0 {
		b.WriteString("syncnode: a peer-to-peer sync node.\n\n")
	}
	fmt.Fprintf(&b, "Usage: %s COMMAND [flags] [arguments]\n\nCommands:\n", k.title(path))
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	var list func(k *command, prefix []string)
	list = func(k *command, prefix []string) {
		for _, s := range k.sub {
			p := append(slices.Clone(prefix), s.name)
			if s.sub != nil {
				list(s, p)
				continue
			}
			fmt.Fprintf(tw, "  %s %s\t%s\n", strings.Join(p, " "), s.args, s.short)
		}
	}
	list(k, nil)
	tw.Flush()
	fmt.Fprintf(&b, "\nRun \"%s COMMAND -h\" for a command's flags.\n", k.title(path))
	if len(path) == 0 {
		b.WriteString("\nGlobal flags (before the command):\n")
		global.SetOutput(&b)
		global.PrintDefaults()
	}
	return b.String()
}

func countFlags(fs *flag.FlagSet) int {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n
}

func (c *cmd) client() (*api.Client, error) { return control.Dial(c.data) }

// refAndClient returns the blob ref of a one-argument command and a
// client of the daemon.
func (c *cmd) refAndClient() (syncnode.BlobRef, *api.Client, error) {
	ref, err := syncnode.ParseBlobRef(c.pos[0])
	if err != nil {
		return syncnode.BlobRef{}, nil, err
	}
	cl, err := c.client()
	return ref, cl, err
}

// show prints v, the answer of a call that returned err, as JSON when
// -json is set or text is nil, else through text.
func show[T any](c *cmd, v T, err error, text func(T)) error {
	if err != nil {
		return err
	}
	if c.asJSON || text == nil {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(v)
	return nil
}

// with runs fn with a client of the daemon.
func (c *cmd) with(fn func(cl *api.Client) error) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	return fn(cl)
}

func (c *cmd) table(rows [][]string) {
	tw := tabwriter.NewWriter(c.stdout, 2, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// nameOr returns a device's name for a listing, "-" for none.
func nameOr(name string) string {
	if name == "" {
		return "-"
	}
	return name
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
