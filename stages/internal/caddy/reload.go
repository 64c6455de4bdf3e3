package caddy

import (
	"errors"
	"net"
	"net/url"
	"os"
	"strings"
)

// MigrateReqPath is the Linux setting that decides what happens to the
// connections queued on a listening socket when it closes while another
// socket of its SO_REUSEPORT group stays open: reset (0) or handed over (1).
// Caddy (2.6 and later) applies every config change, a switch of upstreams
// included, by binding new sockets beside the old ones and closing the old
// ones; with 0, a client connecting at that instant gets a connection reset.
const MigrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// ErrMigrateReq explains the setting to a user.
var ErrMigrateReq = errors.New("net.ipv4.tcp_migrate_req is 0: each Caddy config change may reset a connection " +
	"arriving at that instant; set it to 1 (sysctl -w net.ipv4.tcp_migrate_req=1) on the proxy's machine")

// CheckMigrateReq returns ErrMigrateReq when the Caddy at admin runs on this
// machine and the setting is off. It says nothing about a remote Caddy.
func CheckMigrateReq(admin string) error {
	u, err := url.Parse(admin)
	if err != nil {
		return nil
	}
	if h := u.Hostname(); h != "localhost" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() {
			return nil
		}
	}
	b, err := os.ReadFile(MigrateReqPath)
	if err != nil {
		return nil // not Linux, or a kernel before 5.14: nothing to set
	}
	if strings.TrimSpace(string(b)) == "0" {
		return ErrMigrateReq
	}
	return nil
}
