package target

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRegistryLookup(t *testing.T) {
	open := func(context.Context, Config) (Target, error) { return nil, nil }
	r := Registry{}
	r.Register("swarm", open)
	r.Register("docker", open)
	if _, err := r.Lookup("docker"); err != nil {
		t.Errorf("Lookup(docker): %v", err)
	}
	_, err := r.Lookup("dokcer")
	want := `unknown deploy target "dokcer": valid targets are docker, swarm`
	if err == nil || err.Error() != want {
		t.Errorf("Lookup(dokcer) = %v, want %q", err, want)
	}
	if diff := cmp.Diff([]string{"docker", "swarm"}, r.Names()); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
	defer func() {
		if recover() == nil {
			t.Error("a second Register of docker did not panic")
		}
	}()
	r.Register("docker", open)
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{"api": "api", "Sweep Board": "sweep-board", "prod/eu": "prod-eu", "a_b.c": "a-b.c"} {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}
