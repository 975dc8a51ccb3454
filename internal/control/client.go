package control

import "github.com/syncnode/syncnode/internal/api"

// Dial returns a client of the daemon of data directory dir, from the
// address and token kept there.
func Dial(dir string) (*api.Client, error) {
	cfg, token, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	return api.NewClient(cfg.API, token), nil
}
