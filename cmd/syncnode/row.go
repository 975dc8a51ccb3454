package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/syncnode/syncnode/internal/api"
)

// The row commands.

func rowCmd() *command {
	return &command{name: "row", sub: []*command{
		{name: "put", args: "GROUP KEY JSON | GROUP -f FILE", short: `write a row, or a batch from JSON lines ({"key": K, "value": V}; all or none); {"$blob": "REF"} in the JSON is a blob ref`, nargs: -1, json: true, flags: rowPut},
		{name: "get", args: "GROUP KEY", short: "print a row's value as JSON", nargs: 2, json: true, flags: rowGet},
		{name: "del", args: "GROUP KEY", short: "delete a row", nargs: 2, flags: rowDel},
		{name: "ls", args: "GROUP", short: "a group's rows, keys sorted", nargs: 1, json: true, flags: rowLs},
	}}
}

func rowPut(fs *flag.FlagSet) func(*cmd) error {
	file := fs.String("f", "", `a file of rows, one JSON object a line: {"key": K, "value": V} ("-": stdin), written as one batch: all or none`)
	return func(c *cmd) error {
		if *file != "" {
			if len(c.pos) != 1 {
				return fmt.Errorf("%w: with -f FILE, the group alone", errArgs)
			}
			return putRowsFrom(c, c.pos[0], *file)
		}
		if len(c.pos) != 3 {
			return fmt.Errorf("%w: GROUP KEY JSON, or GROUP and -f FILE", errArgs)
		}
		return c.with(func(cl *api.Client) error {
			row, err := cl.PutRow(c.ctx, api.RowRequest{Group: c.pos[0], Key: c.pos[1], Value: json.RawMessage(c.pos[2])})
			return show(c, row, err, func(api.Row) {})
		})
	}
}

func rowGet(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			row, err := cl.GetRow(c.ctx, c.pos[0], c.pos[1])
			return show(c, row, err, func(r api.Row) { fmt.Fprintln(c.stdout, string(r.Value)) })
		})
	}
}

func rowDel(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		return c.with(func(cl *api.Client) error {
			_, err := cl.DeleteRow(c.ctx, c.pos[0], c.pos[1])
			return err
		})
	}
}

func rowLs(fs *flag.FlagSet) func(*cmd) error {
	prefix := fs.String("prefix", "", "only keys with this prefix")
	start := fs.String("start", "", "with -limit: the first key of the page (the next page's is printed last)")
	limit := fs.Int("limit", 0, "at most this many rows (a page); 0: all")
	return func(c *cmd) error {
		if *limit > 0 {
			return c.with(func(cl *api.Client) error {
				p, err := cl.ListRowsFrom(c.ctx, c.pos[0], *prefix, *start, *limit)
				return show(c, p, err, func(p api.RowsPage) {
					rows := [][]string{{"KEY", "VALUE"}}
					for _, r := range p.Rows {
						rows = append(rows, []string{r.Key, string(r.Value)})
					}
					c.table(rows)
					if p.Next != "" {
						fmt.Fprintf(c.stderr, "more from -start %q\n", p.Next)
					}
				})
			})
		}
		return c.with(func(cl *api.Client) error {
			rs, err := cl.ListRows(c.ctx, c.pos[0], *prefix)
			return show(c, rs, err, func(rs []api.Row) {
				rows := [][]string{{"KEY", "VALUE"}}
				for _, r := range rs {
					rows = append(rows, []string{r.Key, string(r.Value)})
				}
				c.table(rows)
			})
		})
	}
}

// maxBatchLine bounds one line of a row batch: a key and a value of at
// most 256 KiB, as JSON.
const maxBatchLine = 2 << 20

// putRowsFrom writes the rows of a JSON-lines file as one batch.
func putRowsFrom(c *cmd, group, file string) error {
	var r io.Reader = c.stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	req := api.RowsRequest{Group: group}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxBatchLine)
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var row api.RowRequest
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&row); err != nil || row.Key == "" || len(row.Value) == 0 {
			return fmt.Errorf("%s, line %d: want {\"key\": K, \"value\": V}: %v (nothing written)", file, line, err)
		}
		req.Rows = append(req.Rows, row)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w (nothing written)", file, err)
	}
	if len(req.Rows) == 0 {
		return fmt.Errorf("%s: no row", file)
	}
	return c.with(func(cl *api.Client) error {
		rows, err := cl.PutRows(c.ctx, req)
		return show(c, rows, err, func(rows []api.Row) { fmt.Fprintf(c.stdout, "%d rows written in %s\n", len(rows), group) })
	})
}
