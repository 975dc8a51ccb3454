package main

import (
	"encoding/json"
	"flag"
	"fmt"

	"github.com/syncnode/syncnode/internal/api"
)

// The row commands.

func rowCmd() *command {
	return &command{name: "row", sub: []*command{
		{name: "put", args: "GROUP KEY JSON", short: `write a row; {"$blob": "REF"} in the JSON is a blob ref`, nargs: 3, json: true, flags: rowPut},
		{name: "get", args: "GROUP KEY", short: "print a row's value as JSON", nargs: 2, json: true, flags: rowGet},
		{name: "del", args: "GROUP KEY", short: "delete a row", nargs: 2, flags: rowDel},
		{name: "ls", args: "GROUP", short: "a group's rows, keys sorted", nargs: 1, json: true, flags: rowLs},
	}}
}

func rowPut(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
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
	return func(c *cmd) error {
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
