package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"

	"github.com/syncnode/syncnode/internal/control"
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
		req := control.RowRequest{Group: c.pos[0], Key: c.pos[1], Value: json.RawMessage(c.pos[2])}
		return call(c, "POST", "/rows", req, func(control.Row) {})
	}
}

func rowGet(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		q := url.Values{"group": {c.pos[0]}, "key": {c.pos[1]}}
		return call(c, "GET", "/rows?"+q.Encode(), nil, func(rs []control.Row) { fmt.Fprintln(c.stdout, string(rs[0].Value)) })
	}
}

func rowDel(*flag.FlagSet) func(*cmd) error {
	return func(c *cmd) error {
		q := url.Values{"group": {c.pos[0]}, "key": {c.pos[1]}}
		return call[map[string]string](c, "DELETE", "/rows?"+q.Encode(), nil, func(map[string]string) {})
	}
}

func rowLs(fs *flag.FlagSet) func(*cmd) error {
	prefix := fs.String("prefix", "", "only keys with this prefix")
	return func(c *cmd) error {
		q := url.Values{"group": {c.pos[0]}, "prefix": {*prefix}}
		return call(c, "GET", "/rows?"+q.Encode(), nil, func(rs []control.Row) {
			rows := [][]string{{"KEY", "VALUE"}}
			for _, r := range rs {
				rows = append(rows, []string{r.Key, string(r.Value)})
			}
			c.table(rows)
		})
	}
}
