package main

import (
	"testing"

	"github.com/sweepboard/release/pipeline/engine"
)

// TestDriftingEnvironments: status exits 9 on drift or an unhealthy
// service, not for an environment never deployed to.
func TestDriftingEnvironments(t *testing.T) {
	healthy := engine.ServiceStatus{Name: "api", Digest: "r/api@sha256:1", Healthy: true}
	tests := []struct {
		name string
		env  engine.EnvStatus
		code int
	}{
		{"as recorded", engine.EnvStatus{Name: "dev", Version: "1.0.0", Services: []engine.ServiceStatus{healthy}}, exitOK},
		{"never deployed, nothing runs", engine.EnvStatus{Name: "dev", Services: []engine.ServiceStatus{{Name: "api", State: "missing"}}}, exitOK},
		{"no hosts to inspect", engine.EnvStatus{Name: "dev", Version: "1.0.0", Services: []engine.ServiceStatus{}}, exitOK},
		{"another digest", engine.EnvStatus{Name: "dev", Version: "1.0.0", Services: []engine.ServiceStatus{{Name: "api", Healthy: true, Drift: "runs x, recorded y"}}}, exitDrift},
		{"unhealthy", engine.EnvStatus{Name: "dev", Version: "1.0.0", Services: []engine.ServiceStatus{{Name: "api", Digest: "r/api@sha256:1"}}}, exitDrift},
		{"missing", engine.EnvStatus{Name: "dev", Version: "1.0.0", Services: []engine.ServiceStatus{{Name: "api", State: "missing", Drift: "no container runs; recorded y"}}}, exitDrift},
		{"never deployed, something runs", engine.EnvStatus{Name: "dev", Services: []engine.ServiceStatus{{Name: "api", Healthy: true, Drift: "runs x, which no recorded release put here"}}}, exitDrift},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env
			err := driftingEnvironments([]*engine.EnvStatus{&env})
			if got := exitCode(err); got != tt.code {
				t.Errorf("exit code %d (%v), want %d", got, err, tt.code)
			}
		})
	}
}
