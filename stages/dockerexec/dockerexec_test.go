package dockerexec

// The tests below TestPrefixWriter run against the two real Docker
// engines and the registry that fixtures/up.sh starts (see
// stages/internal/jobtest):
//
//	eval "$(fixtures/up.sh)"
//	go test -race -count=1 ./stages/dockerexec/

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/jobtest"
)

func TestPrefixWriter(t *testing.T) {
	var b strings.Builder
	w := &prefixWriter{w: &b, prefix: "h/c: "}
	for _, s := range []string{"one\ntw", "o\n", "\nthree"} {
		w.Write([]byte(s))
	}
	w.Flush()
	if want := "h/c: one\nh/c: two\nh/c: \nh/c: three\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestValidate(t *testing.T) {
	spec := &stages.Spec{Services: map[string]stages.Service{"web": {}}}
	for _, c := range []struct {
		stage Stage
		want  string
	}{
		{Stage{Service: "web", Command: []string{"kill", "-HUP", "1"}}, ""},
		{Stage{Command: []string{"x"}}, "with.service: required"},
		{Stage{Service: "api", Command: []string{"x"}}, `unknown service "api" (known: web)`},
		{Stage{Service: "web"}, "with.command: required"},
	} {
		err := c.stage.Validate(spec)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.stage, err, c.want)
		}
	}
}

// TestExecReplicas: a service with 3 replicas on each of 2 engines; the
// command reaches all 6 containers, one at a time, each line of its output
// prefixed with its host and container. The first failure stops the
// stage naming the container; a resume skips the containers done.
func TestExecReplicas(t *testing.T) {
	jobtest.Need(t, jobtest.Host1, jobtest.Host2)
	secret := fmt.Sprintf("exec-secret-%d", time.Now().UnixNano())
	t.Setenv("JOBTEST_WORKER_SECRET", secret)
	environment := jobtest.EnvName("t-exec")
	data := jobtest.DataDir(t)
	hosts := []string{jobtest.Host1, jobtest.Host2}
	spec := &stages.Spec{
		Name: jobtest.Pipeline,
		Services: map[string]stages.Service{"worker": {Image: jobtest.Pipeline + "/worker", Port: 8080, Health: jobtest.Health,
			Volumes: []string{data + ":/data"}, EnvFrom: []string{"JOBTEST_WORKER_SECRET"}}},
		Environments: map[string]stages.Environment{environment: {
			Hosts: hosts, Services: map[string]stages.EnvService{"worker": {Replicas: 3}},
		}},
	}
	jobtest.Cleanup(t, spec, environment)
	images := map[string]string{"worker": jobtest.Image(t, "worker", "v1")}
	jobtest.Deploy(t, spec, environment, "1.0.0", images)

	exec := func(cmd []string, prior stages.Outputs) (stages.Outputs, string, error) {
		log := &jobtest.Log{}
		fences := 0
		env := &stages.Env{RunID: "run-exec", Node: "reload", Stage: "reload", Environment: environment, Attempt: 1,
			Spec: spec, Images: images, Log: log, Prior: prior,
			Fence:      func(context.Context) error { fences++; return nil },
			Checkpoint: func(context.Context, stages.Outputs) error { return nil },
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := (&Stage{Service: "worker", Command: cmd}).Run(ctx, env)
		t.Logf("docker-exec %v: %v, %d fence checks\n%s", cmd, err, fences, log)
		if strings.Contains(log.String()+fmt.Sprint(err), secret) {
			t.Errorf("the env_from secret is in the log or the error")
		}
		return out, log.String(), err
	}

	marks := filepath.Join(data, "marks")
	out, log, err := exec([]string{"/job", "mark", "/data/marks"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(marks)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var seen []string
	for i := 0; i+1 < len(lines); i += 2 {
		start, end := strings.TrimPrefix(lines[i], "start "), strings.TrimPrefix(lines[i+1], "end ")
		if !strings.HasPrefix(lines[i], "start ") || start != end {
			t.Errorf("not one at a time: lines %d and %d are %q, %q", i, i+1, lines[i], lines[i+1])
		}
		seen = append(seen, start)
	}
	if slices.Sort(seen); len(lines) != 12 || len(slices.Compact(seen)) != 6 {
		t.Errorf("the command ran in %v (%d lines), want 6 containers once each", seen, len(lines))
	}
	done := strings.Split(out["done"], "\n")
	if out["containers"] != "6" || len(done) != 6 {
		t.Errorf("outputs %v", out)
	}
	for _, d := range done {
		if !strings.Contains(log, d+": marked ") {
			t.Errorf("log lacks the output of %s, prefixed", d)
		}
	}
	for _, h := range hosts {
		if strings.Count(log, h+"/") < 6 {
			t.Errorf("log: fewer than 3 containers on %s", h)
		}
	}

	// A resume after a failure in the third container goes on from there.
	os.Remove(marks)
	if _, _, err := exec([]string{"/job", "mark", "/data/marks"}, stages.Outputs{"done": strings.Join(done[:2], "\n")}); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(marks)
	if n := strings.Count(string(b), "start "); n != 4 {
		t.Errorf("resume with 2 containers done: ran in %d, want 4", n)
	}

	_, log, err = exec([]string{"/job", "fail", "4"}, nil)
	if err == nil {
		t.Fatal("a command exiting 4: no error")
	}
	for _, want := range []string{done[0], "status 4", "[/job fail 4]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if n := strings.Count(log, "failing on purpose with status 4"); n != 1 {
		t.Errorf("the failing command ran %d times, want once: the first failure stops", n)
	}
}
