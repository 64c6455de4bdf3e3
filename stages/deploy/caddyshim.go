package deploy

// A bridge while the stage moves onto stages/internal/caddy: the names the
// stage's files use today, over the moved client. It goes with the move of
// deploy.go.

import (
	"context"

	"github.com/sweepboard/release/pipeline/deadline"
	icaddy "github.com/sweepboard/release/stages/internal/caddy"
)

type caddy struct{ *icaddy.Client }

type route = icaddy.Route

const migrateReqPath = icaddy.MigrateReqPath

func newCaddy(admin string) *caddy { return newCaddyWithin(admin, deadline.Deadlines{}) }

func newCaddyWithin(admin string, timeouts deadline.Deadlines) *caddy {
	return &caddy{icaddy.New(admin, timeouts)}
}

func checkMigrateReq(admin string) error { return icaddy.CheckMigrateReq(admin) }

func (c *caddy) switchTo(ctx context.Context, r route, ups []string) error {
	return c.Switch(ctx, r, ups)
}

func (c *caddy) upstreams(ctx context.Context, id string) ([]string, error) {
	return c.Upstreams(ctx, id)
}

func (c *caddy) remove(ctx context.Context, id string) error { return c.Remove(ctx, id) }

func (c *caddy) do(ctx context.Context, method, path string, in, out any) (int, error) {
	return c.Do(ctx, method, path, in, out)
}
