package main

import (
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/syncnode/syncnode/internal/api"
	"github.com/syncnode/syncnode/internal/control"
)

// The commands that set up and run the daemon, and ask it how it is.

func initCmd() *command {
	return &command{name: "init", short: "create the data directory, identity, config and control token",
		flags: func(fs *flag.FlagSet) func(*cmd) error {
			var listen stringList
			fs.Var(&listen, "listen", "libp2p listen multiaddr (repeatable; default every interface, TCP and QUIC, IPv4 and IPv6, on one free port)")
			name := fs.String("name", "", "this device's name, shown to the other members (default the host's name)")
			noLAN := fs.Bool("no-lan", false, "do not announce this node on the LAN or look for members there")
			relayed := fs.String("relayed", "throttle", "blob transfers from a holder reachable only through a relay: throttle, allow or refuse")
			relayRate := fs.Int64("relay-rate", 1<<20, "bytes per second of all relayed blob transfers together, when -relayed is throttle")
			store := fs.String("store", "", "keep blobs in an S3-compatible bucket, s3://bucket/prefix (credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or ~/.aws/credentials, never the config)")
			endpoint := fs.String("s3-endpoint", "", "the S3 server's host:port, with -store")
			region := fs.String("s3-region", "", "the bucket's region, with -store")
			insecure := fs.Bool("s3-insecure", false, "speak plain HTTP to the S3 server, with -store")
			accessKey := fs.String("s3-access-key", "", "the S3 access key, kept in DATA/s3.credentials (mode 0600); default: the environment or ~/.aws/credentials at run")
			grace := fs.String("collect-grace", "", "how long no live row of a group may name a blob before this node collects it: its shares there dissolve and a copy nothing else keeps is deleted (default 24h; off: never)")
			secretKey := fs.String("s3-secret-key", "", "the S3 secret key, with -s3-access-key (prefer AWS_SECRET_ACCESS_KEY: a flag shows in the process list)")
			return func(c *cmd) error {
				cfg, err := control.Init(c.data, control.InitOptions{Listen: listen, Name: *name, NoLAN: *noLAN,
					Relayed: *relayed, RelayRate: *relayRate,
					Store: *store, S3Endpoint: *endpoint, S3Region: *region, S3Insecure: *insecure,
					S3AccessKey: *accessKey, S3SecretKey: *secretKey, CollectGrace: *grace})
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "initialised %s\n  name   %s\n  listen %s\n  api    %s\nstart it with: syncnode -data %s run\n", c.data, cfg.Name, strings.Join(cfg.Listen, " "), cfg.API, c.data)
				return nil
			}
		}}
}

func runCmd() *command {
	return &command{name: "run", short: "run the daemon (the other commands talk to it)",
		flags: func(fs *flag.FlagSet) func(*cmd) error {
			verbose := fs.Bool("v", false, "log debug lines")
			return func(c *cmd) error {
				level := slog.LevelInfo
				if *verbose {
					level = slog.LevelDebug
				}
				log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: level}))
				return control.Run(c.ctx, c.data, log, nil)
			}
		}}
}

func peersCmd() *command {
	return &command{name: "peers", short: "the peers connected now", json: true,
		flags: func(*flag.FlagSet) func(*cmd) error {
			return func(c *cmd) error {
				return c.with(func(cl *api.Client) error {
					ps, err := cl.Peers(c.ctx)
					return show(c, ps, err, func(ps []api.Peer) {
						rows := [][]string{{"NAME", "PEER", "VIA", "ADDRS"}}
						for _, p := range ps {
							via := "direct"
							if !p.Direct {
								via = "relay " + strings.Join(p.Relays, ",")
							}
							rows = append(rows, []string{nameOr(p.Name), p.ID, via, strings.Join(p.Addrs, " ")})
						}
						c.table(rows)
					})
				})
			}
		}}
}

func uiCmd() *command {
	return &command{name: "ui", short: "print the address of the status page (open it in a browser)",
		flags: func(*flag.FlagSet) func(*cmd) error {
			return func(c *cmd) error {
				u, err := control.PageURL(c.data)
				if err != nil {
					return err
				}
				fmt.Fprintln(c.stdout, u)
				return nil
			}
		}}
}

func statusCmd() *command {
	return &command{name: "status", short: "this node: identity, groups, peers, blobs, transfers, durability", json: true,
		flags: func(*flag.FlagSet) func(*cmd) error {
			return func(c *cmd) error {
				return c.with(func(cl *api.Client) error {
					st, err := cl.Status(c.ctx)
					return show(c, st, err, func(s api.Status) {
						c.table([][]string{
							{"id", s.ID}, {"addrs", strings.Join(s.Addrs, " ")}, {"groups", fmt.Sprint(s.Groups)},
							{"peers", fmt.Sprint(s.Peers)}, {"reachability", reachability(s)}, {"store", storeText(s.Store, s.StoreErr)}, {"blobs", heldText(s)},
							{"fetch queue", fmt.Sprint(s.FetchQueue)}, {"uploads", fmt.Sprintf("%d running, %d bytes sent", s.Uploads, s.BytesOut)},
							{"received", fmt.Sprintf("%d bytes", s.BytesIn)},
							{"collection", fmt.Sprintf("%d unreferenced, to be collected when their grace ends; %d collected since start", s.Unreferenced, s.Collected)},
						})
						fmt.Fprintln(c.stdout)
						rows := [][]string{{"GROUP", "ADMINS", "COPIES WANTED", "BLOBS", "AT RISK (fewer verified server copies known)"}}
						for _, d := range s.Durability {
							rows = append(rows, []string{d.Group, strings.Join(d.Admins, ", "), fmt.Sprint(d.Copies), fmt.Sprint(d.Referenced), fmt.Sprint(d.AtRisk)})
						}
						c.table(rows)
						if len(s.Refused) > 0 {
							fmt.Fprintln(c.stdout)
							rows := [][]string{{"MEMBER OVER ITS BUDGET", "REFUSED"}}
							for _, r := range s.Refused {
								rows = append(rows, []string{r.Peer, fmt.Sprintf("%d %s", r.Count, r.What)})
							}
							c.table(rows)
						}
					})
				})
			}
		}}
}

// reachability describes what AutoNAT found, with the relays held.
func reachability(s api.Status) string {
	if len(s.Relays) == 0 {
		return s.Reachability
	}
	return s.Reachability + ", reachable through relays " + strings.Join(s.Relays, ", ")
}

// heldText says how many blobs the node holds, and whether it is still
// walking its store after the open.
func heldText(s api.Status) string {
	text := fmt.Sprintf("%d (%d bytes), %d pinned here", s.Blobs, s.BlobBytes, s.Pinned)
	if s.TakingUp {
		text += ", still taking up the store after the start"
	}
	return text
}
