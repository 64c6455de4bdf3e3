package dockerhost

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestIPs(t *testing.T) {
	tests := []struct {
		name, addr, bind, dial string
		wantErr                bool
	}{
		{name: "unix socket", addr: "unix:///var/run/docker.sock", bind: "127.0.0.1", dial: "127.0.0.1"},
		{name: "tcp loopback", addr: "tcp://127.0.0.1:2375", bind: "127.0.0.1", dial: "127.0.0.1"},
		{name: "tcp localhost", addr: "tcp://localhost:2376", bind: "127.0.0.1", dial: "127.0.0.1"},
		{name: "remote", addr: "tcp://staging-1:2376", bind: "0.0.0.0", dial: "staging-1"},
		{name: "no scheme", addr: "staging-1:2376", wantErr: true},
		{name: "no host", addr: "tcp://:2376", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bind, dial, err := IPs(tt.addr)
			if (err != nil) != tt.wantErr {
				t.Fatalf("IPs(%q) error = %v, want error %v", tt.addr, err, tt.wantErr)
			}
			if diff := cmp.Diff([]string{tt.bind, tt.dial}, []string{bind, dial}); diff != "" {
				t.Errorf("IPs(%q) (-want +got):\n%s", tt.addr, diff)
			}
		})
	}
}

func TestBinding(t *testing.T) {
	tests := []struct {
		publish, hostIP, hostPort string
		wantErr                   bool
	}{
		{publish: "8080", hostPort: "8080"},
		{publish: "127.0.0.1:8080", hostIP: "127.0.0.1", hostPort: "8080"},
		{publish: "[::1]:8080", hostIP: "::1", hostPort: "8080"},
		{publish: "http", wantErr: true},
		{publish: "127.0.0.1:0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.publish, func(t *testing.T) {
			b, err := binding(tt.publish)
			if (err != nil) != tt.wantErr {
				t.Fatalf("binding(%q) error = %v, want error %v", tt.publish, err, tt.wantErr)
			}
			if diff := cmp.Diff([]string{tt.hostIP, tt.hostPort}, []string{b.HostIP, b.HostPort}); !tt.wantErr && diff != "" {
				t.Errorf("binding(%q) (-want +got):\n%s", tt.publish, diff)
			}
		})
	}
}

func TestRestartPolicy(t *testing.T) {
	tests := []struct {
		in      string
		name    string
		count   int
		wantErr bool
	}{
		{in: "", name: "unless-stopped"},
		{in: "no", name: "no"},
		{in: "always", name: "always"},
		{in: "on-failure", name: "on-failure"},
		{in: "on-failure:3", name: "on-failure", count: 3},
		{in: "on-failure:x", wantErr: true},
		{in: "sometimes", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := restartPolicy(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("restartPolicy(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if !tt.wantErr && (string(p.Name) != tt.name || p.MaximumRetryCount != tt.count) {
				t.Errorf("restartPolicy(%q) = %s:%d, want %s:%d", tt.in, p.Name, p.MaximumRetryCount, tt.name, tt.count)
			}
		})
	}
}

// TestApart has stops and rejoins come in from many goroutines: holders
// of one kind are in together, never with one of the other kind.
func TestApart(t *testing.T) {
	var a apart
	var mu sync.Mutex
	in := [2]int{}
	most := [2]int{}
	var wg sync.WaitGroup
	for i := range 64 {
		kind := i % 2
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.enter(kind)
			mu.Lock()
			in[kind]++
			most[kind] = max(most[kind], in[kind])
			if in[1-kind] > 0 {
				t.Errorf("a holder of kind %d came in beside %d of kind %d", kind, in[1-kind], 1-kind)
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			in[kind]--
			mu.Unlock()
			a.leave(kind)
		}()
	}
	wg.Wait()
	t.Logf("most holders in at once: %d stops, %d rejoins", most[exiting], most[rejoining])
	if most[exiting] < 2 && most[rejoining] < 2 {
		t.Errorf("holders of one kind never came in together: %v", most)
	}
}

// TestApartSettles has a stop come right after a rejoin left: it waits
// until the rejoin left settle ago.
func TestApartSettles(t *testing.T) {
	a := apart{settle: 100 * time.Millisecond}
	a.enter(rejoining)
	a.leave(rejoining)
	start := time.Now()
	a.enter(exiting)
	waited := time.Since(start)
	a.leave(exiting)
	if waited < 90*time.Millisecond {
		t.Errorf("a stop right after a rejoin came in after %s, want about %s", waited, a.settle)
	}
	start = time.Now()
	a.enter(rejoining)
	a.leave(rejoining)
	if waited := time.Since(start); waited > 50*time.Millisecond {
		t.Errorf("a rejoin right after a stop waited %s", waited)
	}
}
