package collect

import "context"

// Tick is Run's pass, for tests.
func (c *Collector) Tick(ctx context.Context) error { return c.tick(ctx) }
