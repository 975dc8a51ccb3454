package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/syncnode/syncnode/blobstore/s3store"
	"github.com/syncnode/syncnode/internal/atomicfile"
	"github.com/syncnode/syncnode/internal/ports"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// Files in a data directory that the daemon and the CLI share.
const (
	ConfigFile = "config.json"
	TokenFile  = "control.token"
	// S3CredentialsFile holds the object store's credentials given to
	// init (mode 0600, in the AWS credentials file format), apart from
	// the config, which is printed and shared more freely.
	S3CredentialsFile = "s3.credentials"
)

// ErrNotInitialised reports a data directory without a config file.
var ErrNotInitialised = errors.New("data directory not initialised (run: syncnode init)")

// Config is a daemon's config file.
type Config struct {
	// Listen are the libp2p listen multiaddrs; fixed ports, so members
	// find the node where its membership says it is.
	Listen []string `json:"listen"`
	// API is the control API's loopback address.
	API string `json:"api"`
	// Name is the device's name, shown to the members of its groups.
	Name string `json:"name,omitempty"`
	// LANDiscovery announces the node on its LAN (multicast DNS) and
	// connects to the members of its groups found there.
	LANDiscovery bool `json:"lan_discovery"`
	// BlobBudget is the blob store's size budget in bytes (0: none).
	BlobBudget int64 `json:"blob_budget,omitempty"`
	// SyncInterval is the period of safety-net sync rounds (default 30s).
	SyncInterval string `json:"sync_interval,omitempty"`
	// CollectGrace is how long no live row of a group may reference a
	// blob before it is collected here (default 24h; "off": never).
	CollectGrace string `json:"collect_grace,omitempty"`
	// Relayed is what a blob transfer does with a holder reachable only
	// through a relay: "throttle" (the default), "allow" or "refuse";
	// RelayRate is the throttle's bytes per second (default 1 MiB/s).
	Relayed   string `json:"relayed,omitempty"`
	RelayRate int64  `json:"relay_rate,omitempty"`
	// Store, if set, keeps the blobs in an S3-compatible bucket,
	// "s3://bucket/prefix", at S3Endpoint (host:port), over plain HTTP if
	// S3Insecure, in S3Region. The credentials are never in the config:
	// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the daemon's
	// environment, or the standard AWS credentials file.
	Store      string `json:"store,omitempty"`
	S3Endpoint string `json:"s3_endpoint,omitempty"`
	S3Region   string `json:"s3_region,omitempty"`
	S3Insecure bool   `json:"s3_insecure,omitempty"`
}

// collectGrace returns the node's collection grace: 0 for the default,
// negative for "off".
func (c Config) collectGrace() (time.Duration, error) {
	switch c.CollectGrace {
	case "":
		return 0, nil
	case "off":
		return -1, nil
	}
	d, err := time.ParseDuration(c.CollectGrace)
	if err == nil && d <= 0 {
		err = errors.New("not a positive duration (or \"off\")")
	}
	if err != nil {
		return 0, fmt.Errorf("%s: collect_grace: %w", ConfigFile, err)
	}
	return d, nil
}

// s3Config returns the node's S3 store config, nil for the disk store.
func (c Config) s3Config() (*s3store.Config, error) {
	if c.Store == "" {
		return nil, nil
	}
	bucket, prefix, err := s3store.ParseURL(c.Store)
	if err != nil {
		return nil, fmt.Errorf("%s: store: %w", ConfigFile, err)
	}
	if c.S3Endpoint == "" {
		return nil, fmt.Errorf("%s: store %s: no s3_endpoint", ConfigFile, c.Store)
	}
	return &s3store.Config{Endpoint: c.S3Endpoint, Insecure: c.S3Insecure, Region: c.S3Region, Bucket: bucket, Prefix: prefix}, nil
}

// InitOptions are what syncnode init may set.
type InitOptions struct {
	// Listen are the libp2p listen multiaddrs (default every interface,
	// IPv4 and IPv6, TCP and QUIC, on one free port fixed here).
	Listen []string
	// NoLAN turns LAN discovery off.
	NoLAN bool
	// Name is the device's name (default the host's name).
	Name string
	// Relayed and RelayRate set Config.Relayed and Config.RelayRate.
	Relayed   string
	RelayRate int64
	// Store, S3Endpoint, S3Region and S3Insecure set the Config fields of
	// those names.
	Store, S3Endpoint, S3Region string
	S3Insecure                  bool
	// S3AccessKey and S3SecretKey, if given, are kept in
	// S3CredentialsFile; otherwise the daemon takes the credentials from
	// its environment or the standard AWS credentials file.
	S3AccessKey, S3SecretKey string
	// CollectGrace sets Config.CollectGrace ("" for the default).
	CollectGrace string
}

// Init creates a data directory: identity key, config with free loopback
// ports (or the listen addresses given), the device's name, and control
// token. It refuses a directory already initialised.
func Init(dir string, opts InitOptions) (Config, error) {
	listen := opts.Listen
	if opts.Relayed != "" {
		if _, err := p2p.ParseRelayPolicy(opts.Relayed); err != nil {
			return Config{}, err
		}
	}
	if opts.RelayRate < 0 {
		return Config{}, fmt.Errorf("relay rate %d: must not be negative", opts.RelayRate)
	}
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		return Config{}, fmt.Errorf("%s is already initialised", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Config{}, err
	}
	if _, err := p2p.LoadIdentity(filepath.Join(dir, "identity.key")); err != nil {
		return Config{}, err
	}
	if len(listen) == 0 {
		port, err := ports.Free()
		if err != nil {
			return Config{}, err
		}
		listen = []string{
			fmt.Sprintf("/ip4/0.0.0.0/tcp/%d", port), fmt.Sprintf("/ip6/::/tcp/%d", port),
			fmt.Sprintf("/ip4/0.0.0.0/udp/%d/quic-v1", port), fmt.Sprintf("/ip6/::/udp/%d/quic-v1", port),
		}
	}
	apiPort, err := ports.Free()
	if err != nil {
		return Config{}, err
	}
	name := opts.Name
	if name == "" {
		name, _ = os.Hostname()
	}
	cfg := Config{Listen: listen, API: fmt.Sprintf("127.0.0.1:%d", apiPort), Name: syncgroup.CleanName(name), LANDiscovery: !opts.NoLAN,
		Relayed: opts.Relayed, RelayRate: opts.RelayRate,
		Store: opts.Store, S3Endpoint: opts.S3Endpoint, S3Region: opts.S3Region, S3Insecure: opts.S3Insecure,
		CollectGrace: opts.CollectGrace}
	if _, err := cfg.s3Config(); err != nil {
		return Config{}, err
	}
	if _, err := cfg.collectGrace(); err != nil {
		return Config{}, err
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := writeFile(filepath.Join(dir, ConfigFile), append(b, '\n')); err != nil {
		return Config{}, err
	}
	tok := make([]byte, 32)
	rand.Read(tok)
	if (opts.S3AccessKey == "") != (opts.S3SecretKey == "") {
		return Config{}, errors.New("give both the S3 access key and the secret key, or neither")
	}
	if opts.S3AccessKey != "" {
		creds := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", opts.S3AccessKey, opts.S3SecretKey)
		if err := writeFile(filepath.Join(dir, S3CredentialsFile), []byte(creds)); err != nil {
			return Config{}, err
		}
	}
	return cfg, writeFile(filepath.Join(dir, TokenFile), []byte(hex.EncodeToString(tok)+"\n"))
}

// writeFile writes a file of the data directory whole and durably: a
// power cut right after init leaves the node its config and token.
func writeFile(path string, b []byte) error { return atomicfile.Write(path, b, 0o600) }

// LoadConfig reads a data directory's config and control token.
func LoadConfig(dir string) (Config, string, error) {
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return Config{}, "", fmt.Errorf("%s: %w", dir, ErrNotInitialised)
	}
	if err != nil {
		return Config{}, "", err
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Config{}, "", fmt.Errorf("%s: %w", ConfigFile, err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, TokenFile))
	if err != nil {
		return Config{}, "", err
	}
	return cfg, strings.TrimSpace(string(tok)), nil
}

// LoopbackOnly serves h only to requests whose Host names the loopback
// address the API listens on (addr, or localhost at its port): a web page
// that rebinds its own DNS name to 127.0.0.1 gets 403, whatever it sends.
func LoopbackOnly(addr string, h http.Handler) http.Handler {
	_, port, _ := net.SplitHostPort(addr)
	allowed := map[string]bool{addr: true, net.JoinHostPort("localhost", port): true}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowed[strings.ToLower(r.Host)] {
			httpError(w, http.StatusForbidden, fmt.Errorf("host %q is not this API's loopback address %s", r.Host, addr))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Run runs the daemon for data directory dir until ctx ends: the node and
// the control API. ready, if not nil, is called once both serve.
func Run(ctx context.Context, dir string, log *slog.Logger, ready func(*node.Node)) error {
	cfg, token, err := LoadConfig(dir)
	if err != nil {
		return err
	}
	ncfg := node.Config{DataDir: dir, Name: cfg.Name, Log: log, ListenAddrs: cfg.Listen, BlobBudget: cfg.BlobBudget, NoLAN: !cfg.LANDiscovery,
		Relayed: p2p.RelayPolicy(cfg.Relayed), RelayRate: cfg.RelayRate}
	if cfg.Relayed != "" {
		if _, err := p2p.ParseRelayPolicy(cfg.Relayed); err != nil {
			return fmt.Errorf("%s: relayed: %w", ConfigFile, err)
		}
	}
	if ncfg.S3, err = cfg.s3Config(); err != nil {
		return err
	}
	if file := filepath.Join(dir, S3CredentialsFile); ncfg.S3 != nil && fileExists(file) {
		ncfg.S3.Creds = credentials.NewFileAWSCredentials(file, "default")
	}
	if ncfg.CollectGrace, err = cfg.collectGrace(); err != nil {
		return err
	}
	if cfg.SyncInterval != "" {
		if ncfg.SyncInterval, err = time.ParseDuration(cfg.SyncInterval); err != nil {
			return fmt.Errorf("%s: sync_interval: %w", ConfigFile, err)
		}
	}
	if host, _, err := net.SplitHostPort(cfg.API); err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("%s: the control API must listen on loopback, not %q", ConfigFile, cfg.API)
	}
	ln, err := net.Listen("tcp", cfg.API)
	if err != nil {
		return fmt.Errorf("control API: %w", err)
	}
	n, err := node.Open(ncfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer n.Close()
	s := newServer(n, log)
	hctx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go s.hist.sample(hctx, historyStep, s.counters)
	srv := &http.Server{Handler: LoopbackOnly(ln.Addr().String(), s.handler(token)), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("syncnode running", "id", n.ID(), "addrs", n.Addrs(), "api", cfg.API)
	if ready != nil {
		ready(n)
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if srv.Shutdown(sctx) != nil {
		// A client that neither reads nor hangs up (a stalled watch)
		// does not keep the daemon from stopping.
		srv.Close()
	}
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
