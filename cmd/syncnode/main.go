// Command syncnode runs and drives a syncnode device. Run "syncnode help"
// for its subcommands.
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
	"strings"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/demo"
	"github.com/syncnode/syncnode/node"
)

const usage = `syncnode: a peer-to-peer sync node.

Usage:
  syncnode [-data DIR] blob put FILE|-         store a blob, print its ref
  syncnode [-data DIR] blob get REF [-o FILE]  write a blob to FILE (default stdout)
  syncnode [-data DIR] blob cat REF [-offset N] [-length N]
  syncnode [-data DIR] blob stat REF [-json]
  syncnode [-data DIR] blob ls [-json]
  syncnode [-data DIR] blob rm REF             remove a blob that holds no shares
  syncnode demo                                 run the demonstration

The data directory defaults to $SYNCNODE_DATA, else ~/.syncnode.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout); err != nil {
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

func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
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
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	case "demo":
		return demo.RunTemp(ctx, stdout)
	case "blob":
		if len(args) < 2 {
			return errors.New("blob: missing subcommand (put, get, cat, stat, ls, rm)")
		}
		n, err := node.Open(node.Config{DataDir: *data})
		if err != nil {
			return err
		}
		defer n.Close()
		return blobCmd(ctx, n, args[1], args[2:], stdin, stdout)
	}
	return fmt.Errorf("unknown command %q\n\n%s", args[0], usage)
}

func blobCmd(ctx context.Context, n *node.Node, sub string, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("blob "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	asJSON := fs.Bool("json", false, "print JSON")
	out := fs.String("o", "", "output file")
	offset := fs.Int64("offset", 0, "first byte to print")
	length := fs.Int64("length", -1, "bytes to print (default: to the end)")
	if err := fs.Parse(reorder(args)); err != nil {
		return fmt.Errorf("blob %s: %w", sub, err)
	}
	pos := fs.Args()
	needRef := func() (syncnode.BlobRef, error) {
		if len(pos) != 1 {
			return syncnode.BlobRef{}, fmt.Errorf("blob %s: want one blob ref", sub)
		}
		return syncnode.ParseBlobRef(pos[0])
	}
	switch sub {
	case "put":
		if len(pos) != 1 {
			return errors.New("blob put: want one file (or - for stdin)")
		}
		var r io.Reader = stdin
		if pos[0] != "-" {
			f, err := os.Open(pos[0])
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		info, err := n.PutBlob(ctx, r)
		if err != nil {
			return err
		}
		return printInfo(stdout, info, *asJSON, true)
	case "get", "cat":
		ref, err := needRef()
		if err != nil {
			return err
		}
		r, err := n.OpenBlob(ref)
		if err != nil {
			return err
		}
		defer r.Close()
		if *offset < 0 || *offset > r.Size() {
			return fmt.Errorf("blob %s: offset %d outside the blob's %d bytes", sub, *offset, r.Size())
		}
		end := r.Size()
		if *length >= 0 {
			end = min(end, *offset+*length)
		}
		w := stdout
		if *out != "" {
			f, err := os.Create(*out)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		_, err = io.Copy(w, io.NewSectionReader(r, *offset, end-*offset))
		return err
	case "stat":
		ref, err := needRef()
		if err != nil {
			return err
		}
		info, err := n.StatBlob(ref)
		if err != nil {
			return err
		}
		return printInfo(stdout, info, *asJSON, false)
	case "ls":
		var infos []blobstore.Info
		if err := n.ListBlobs(func(i blobstore.Info) error { infos = append(infos, i); return nil }); err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(jsonInfos(infos))
		}
		for _, i := range infos {
			fmt.Fprintf(stdout, "%s\t%d\n", i.Ref, i.Size)
		}
		return nil
	case "rm":
		ref, err := needRef()
		if err != nil {
			return err
		}
		return n.RemoveBlob(ref)
	}
	return fmt.Errorf("blob: unknown subcommand %q", sub)
}

// reorder moves flags before positional arguments, so "blob get REF -o F"
// parses as well as "blob get -o F REF".
func reorder(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && a != "-json" && a != "--json" && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

type infoJSON struct {
	Ref  string `json:"ref"`
	Hex  string `json:"blake3"`
	Size int64  `json:"size"`
}

func jsonInfos(in []blobstore.Info) []infoJSON {
	out := make([]infoJSON, 0, len(in))
	for _, i := range in {
		out = append(out, infoJSON{Ref: i.Ref.String(), Hex: i.Ref.Hex(), Size: i.Size})
	}
	return out
}

func printInfo(w io.Writer, info blobstore.Info, asJSON, refOnly bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(jsonInfos([]blobstore.Info{info})[0])
	}
	if refOnly {
		_, err := fmt.Fprintln(w, info.Ref)
		return err
	}
	_, err := fmt.Fprintf(w, "ref     %s\nblake3  %s\nsize    %d\n", info.Ref, info.Ref.Hex(), info.Size)
	return err
}
