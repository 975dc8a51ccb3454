package main

import (
	"bytes"
	"flag"
	"io"
	"regexp"
	"strings"
	"testing"
)

// leaves calls fn with every runnable command and its path.
func leaves(k *command, path []string, fn func([]string, *command)) {
	if k.sub == nil {
		fn(path, k)
		return
	}
	for _, s := range k.sub {
		leaves(s, append(append([]string(nil), path...), s.name), fn)
	}
}

// Every command answers -h (and -help, --help) with its help on stdout
// and success, and the help names every one of its flags; the top-level
// help lists every command and the global flags.
func TestHelpNamesEveryCommandAndFlag(t *testing.T) {
	top := root()
	var all bytes.Buffer
	if err := run(t.Context(), []string{"help"}, strings.NewReader(""), &all, io.Discard); err != nil {
		t.Fatalf("syncnode help: %v", err)
	}
	if !strings.Contains(all.String(), "-data") {
		t.Errorf("syncnode help does not name the global flag -data:\n%s", all.String())
	}
	n := 0
	leaves(top, nil, func(path []string, k *command) {
		n++
		name := strings.Join(path, " ")
		if !strings.Contains(all.String(), "  "+name+" ") {
			t.Errorf("syncnode help does not list %q", name)
		}
		for _, h := range []string{"-h", "-help", "--help"} {
			var out bytes.Buffer
			if err := run(t.Context(), append(append([]string(nil), path...), h), strings.NewReader(""), &out, io.Discard); err != nil {
				t.Errorf("syncnode %s %s: %v", name, h, err)
				continue
			}
			fs, _ := k.flagSet(path)
			fs.VisitAll(func(f *flag.Flag) {
				if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(f.Name) + `\s`).MatchString(out.String()) {
					t.Errorf("syncnode %s %s does not name its flag -%s:\n%s", name, h, f.Name, out.String())
				}
			})
			if !strings.HasPrefix(out.String(), "Usage: syncnode "+name) {
				t.Errorf("syncnode %s %s printed %q", name, h, out.String())
			}
		}
		var viaHelp bytes.Buffer
		if err := run(t.Context(), append([]string{"help"}, path...), strings.NewReader(""), &viaHelp, io.Discard); err != nil || !strings.HasPrefix(viaHelp.String(), "Usage: syncnode "+name) {
			t.Errorf("syncnode help %s: %v %q", name, err, viaHelp.String())
		}
	})
	if n < 20 {
		t.Fatalf("only %d commands in the tree", n)
	}
	for _, group := range []string{"blob", "sg", "row"} {
		var out bytes.Buffer
		if err := run(t.Context(), []string{group, "-h"}, strings.NewReader(""), &out, io.Discard); err != nil || !strings.Contains(out.String(), "Commands:") {
			t.Errorf("syncnode %s -h: %v %q", group, err, out.String())
		}
		for _, help := range [][]string{{group, "help"}, {group, "help", "nonesuch"}} {
			out.Reset()
			if err := run(t.Context(), help, strings.NewReader(""), &out, io.Discard); err != nil || !strings.Contains(out.String(), "Commands:") {
				t.Errorf("syncnode %s: %v %q", strings.Join(help, " "), err, out.String())
			}
		}
	}
}

// Mistakes fail with the command's usage: an unknown command, a missing
// subcommand, the wrong number of arguments, an unknown flag.
func TestMistakesPrintUsage(t *testing.T) {
	for _, args := range [][]string{{"frob"}, {"blob"}, {"blob", "frob"}, {"blob", "get"}, {"row", "put", "g", "k"}, {"blob", "ls", "-nope"}} {
		err := run(t.Context(), args, strings.NewReader(""), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "Usage: syncnode") {
			t.Errorf("syncnode %s: %v, want an error with the usage", strings.Join(args, " "), err)
		}
	}
}
