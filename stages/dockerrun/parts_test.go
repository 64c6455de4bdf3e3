package dockerrun

// These tests run jobs against the real Docker engine and registry that
// fixtures/up.sh starts (see stages/internal/jobtest):
//
//	eval "$(fixtures/up.sh)"
//	go test -race -count=1 ./stages/dockerrun/

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/deploy"
	"github.com/sweepboard/release/stages/internal/dockerhost"
	"github.com/sweepboard/release/stages/internal/jobtest"
)

// secretVar is the env_from variable of the test services.
const secretVar = "JOBTEST_DB_PASSWORD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv("DOCKERRUN_TEST_HELPER"); cfg != "" {
		os.Exit(helperMain(cfg))
	}
	os.Exit(m.Run())
}

// dbSpec is a "database" fixture service that reports the SHA-256 of its
// env_from secret, and an api service whose image holds the job binary;
// api gets the secret from the environment's settings, and the data
// directory mounted at /data.
func dbSpec(t *testing.T, environment, data string) *stages.Spec {
	spec := &stages.Spec{
		Name: jobtest.Pipeline,
		Services: map[string]stages.Service{
			"database": {Image: jobtest.Pipeline + "/database", Port: 8080, Health: jobtest.Health,
				Env: map[string]string{"REPORT_SECRET": secretVar}, EnvFrom: []string{secretVar}},
			"api": {Image: jobtest.Pipeline + "/api", Port: 8080, Health: jobtest.Health, DependsOn: []string{"database"},
				Env: map[string]string{"UPSTREAM_URL": "http://database:8080"}, Volumes: []string{data + ":/data"}},
		},
		Environments: map[string]stages.Environment{environment: {
			Hosts:    []string{jobtest.Host1},
			Services: map[string]stages.EnvService{"api": {EnvFrom: []string{secretVar}}},
		}},
	}
	jobtest.Cleanup(t, spec, environment)
	return spec
}

func dbImages(t *testing.T) map[string]string {
	return map[string]string{"database": jobtest.Image(t, "database", "v1"), "api": jobtest.Image(t, "api", "v1")}
}

// nodeEnv is the env of a docker-run node of a run.
func nodeEnv(spec *stages.Spec, environment, runID string, images map[string]string, log *jobtest.Log) *stages.Env {
	return &stages.Env{
		RunID: runID, RunKind: "run", Version: "1.0.0", Node: "migrate", Stage: "migrate",
		Environment: environment, Attempt: 1, Spec: spec, Images: images, Log: log,
		Fence:      func(context.Context) error { return nil },
		Checkpoint: func(context.Context, stages.Outputs) error { return nil },
		Prior:      stages.Outputs{},
	}
}

func run(t *testing.T, s *Stage, env *stages.Env) (stages.Outputs, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	out, err := s.Run(ctx, env)
	t.Logf("docker-run %v took %s: %v\n%s", s.Command, time.Since(began).Round(time.Millisecond), err, env.Log)
	return out, err
}

// noSecret checks that the secret appears in none of the texts.
func noSecret(t *testing.T, secret string, texts map[string]string) {
	t.Helper()
	for what, text := range texts {
		if strings.Contains(text, secret) {
			t.Errorf("the env_from secret appears in %s:\n%s", what, text)
		}
	}
}

// TestMigration: a job from api's release image calls the database service
// by its name on the environment network and sees the same env_from
// secret as the service; it prints the secret, which the log hides. A
// failing job fails the node with its status, its output in the log.
// Neither leaves a container behind.
func TestMigration(t *testing.T) {
	jobtest.Need(t, jobtest.Host1)
	secret := fmt.Sprintf("pw-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Setenv(secretVar, secret)
	environment := jobtest.EnvName("t-migrate")
	spec := dbSpec(t, environment, jobtest.DataDir(t))
	images := dbImages(t)
	jobtest.Deploy(t, spec, environment, "1.0.0", images)

	log := &jobtest.Log{}
	env := nodeEnv(spec, environment, "run-migrate", images, log)
	var progress stages.Outputs
	env.Checkpoint = func(_ context.Context, o stages.Outputs) error { progress = o; return nil }
	out, err := run(t, &Stage{Service: "api", Command: []string{"/job", "migrate", "http://database:8080", secretVar}}, env)
	if err != nil {
		t.Fatalf("migration: %v", err)
	}
	for _, want := range []string{"chain: database v1", "secret matches: sha256:", "job sees " + secretVar + "=***"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if out["exitCode"] != "0" || out["service"] != "api" || out["host"] != jobtest.Host1 || progress["exitCode"] != "0" {
		t.Errorf("outputs %v, progress %v", out, progress)
	}
	if left := jobtest.Jobs(t, jobtest.Host1, env.RunID, env.Node); len(left) > 0 {
		t.Errorf("job containers left: %v", left)
	}

	failLog := &jobtest.Log{}
	fenv := nodeEnv(spec, environment, "run-migrate-fails", images, failLog)
	_, err = run(t, &Stage{Service: "api", Command: []string{"/job", "fail", "5"}}, fenv)
	if err == nil {
		t.Fatal("a job exiting 5: no error")
	}
	for _, want := range []string{"api", "[/job fail 5]", "status 5"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	for _, want := range []string{"failing on purpose with status 5", "failing on purpose, on stderr"} {
		if !strings.Contains(failLog.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if left := jobtest.Jobs(t, jobtest.Host1, fenv.RunID, fenv.Node); len(left) > 0 {
		t.Errorf("job containers left: %v", left)
	}
	noSecret(t, secret, map[string]string{"the run log": log.String() + failLog.String(), "the error": err.Error()})
}

// helperConfig is what the test hands a docker-run it runs in a
// subprocess, to kill it there.
type helperConfig struct {
	Spec        *stages.Spec
	Environment string
	RunID       string
	Images      map[string]string
	Command     []string
}

// helperMain runs the stage in this process, its log on stdout.
func helperMain(cfg string) int {
	var c helperConfig
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := &lineWriter{}
	env := nodeEnv(c.Spec, c.Environment, c.RunID, c.Images, nil)
	env.Log = log
	if _, err := (&Stage{Service: "api", Command: c.Command}).Run(context.Background(), env); err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	fmt.Println("DONE")
	return 0
}

type lineWriter struct{ mu sync.Mutex }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return os.Stdout.Write(p)
}

// runKilled runs a docker-run in a subprocess and SIGKILLs it once the
// job printed STARTED.
func runKilled(t *testing.T, c helperConfig) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DOCKERRUN_TEST_HELPER="+string(b))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var seen []string
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				cmd.Wait()
				t.Fatalf("docker-run subprocess ended before its job started:\n%s\n%s", strings.Join(seen, "\n"), stderr.String())
			}
			seen = append(seen, line)
			if strings.TrimSpace(line) == "STARTED" {
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				cmd.Wait()
				go func() {
					for range lines {
					}
				}()
				t.Logf("killed release (a docker-run subprocess) while its job ran:\n%s", strings.Join(seen, "\n"))
				return
			}
		case <-timeout:
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("docker-run subprocess: no job started:\n%s\n%s", strings.Join(seen, "\n"), stderr.String())
		}
	}
}

// runs reads the lines the job binary's "once" appended: one per run.
func runs(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), "run ", ""))
}

// waitExited waits until the node's job container has exited.
func waitExited(t *testing.T, runID string) {
	t.Helper()
	h, err := dockerhost.Open(jobtest.Host1)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		list := jobtest.Jobs(t, jobtest.Host1, runID, "migrate")
		if len(list) == 1 && !list[0].Running {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the job of %s did not exit", runID)
}

// TestResumeAfterKill: release is killed while its job runs. On resume, a
// job container still running is awaited, not run again; one that exited
// meanwhile gives its exit status; either way it runs once and is removed.
// A job that already exited 0 for the node is not run again. Labels carry
// no secret.
func TestResumeAfterKill(t *testing.T) {
	jobtest.Need(t, jobtest.Host1)
	secret := fmt.Sprintf("pw-%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Setenv(secretVar, secret)
	environment := jobtest.EnvName("t-resume")
	data := jobtest.DataDir(t)
	spec := dbSpec(t, environment, data)
	images := dbImages(t)
	jobtest.Deploy(t, spec, environment, "1.0.0", images)

	for _, c := range []struct {
		name     string
		code     int
		exitedBy bool // the job exits before the resume
		want     string
	}{
		{"running job awaited", 0, false, "started before this process: awaiting it"},
		{"exited job's status taken", 7, true, "exited before this process saw it"},
	} {
		t.Run(c.name, func(t *testing.T) {
			runID := fmt.Sprintf("run-kill-%d-%d", c.code, time.Now().UnixNano())
			file, gate := filepath.Join(data, runID+".runs"), filepath.Join(data, runID+".gate")
			cmd := []string{"/job", "once", "/data/" + filepath.Base(file), "/data/" + filepath.Base(gate), fmt.Sprint(c.code)}
			runKilled(t, helperConfig{Spec: spec, Environment: environment, RunID: runID, Images: images, Command: cmd})

			left := jobtest.Jobs(t, jobtest.Host1, runID, "migrate")
			if len(left) != 1 || !left[0].Running {
				t.Fatalf("after the kill: job containers %v, want one running", left)
			}
			for k, v := range left[0].Labels {
				if strings.Contains(k+v, secret) {
					t.Errorf("label %s holds the secret", k)
				}
			}
			open := func() {
				if err := os.WriteFile(gate, nil, 0o644); err != nil {
					t.Error(err)
				}
			}
			if c.exitedBy {
				open()
				waitExited(t, runID)
			} else {
				time.AfterFunc(2*time.Second, open)
			}

			log := &jobtest.Log{}
			env := nodeEnv(spec, environment, runID, images, log)
			env.Attempt = 2
			_, err := run(t, &Stage{Service: "api", Command: cmd}, env)
			switch {
			case c.code == 0 && err != nil:
				t.Errorf("resume: %v", err)
			case c.code != 0 && (err == nil || !strings.Contains(err.Error(), fmt.Sprintf("status %d", c.code))):
				t.Errorf("resume: error %v, want exit status %d", err, c.code)
			}
			if !strings.Contains(log.String(), c.want) || !strings.Contains(log.String(), "gate open") {
				t.Errorf("resume log lacks %q or the job's output", c.want)
			}
			if got := runs(t, file); len(got) != 1 {
				t.Errorf("the job ran %d times, want once: %v", len(got), got)
			}
			if left := jobtest.Jobs(t, jobtest.Host1, runID, "migrate"); len(left) > 0 {
				t.Errorf("job containers left after the resume: %v", left)
			}
			noSecret(t, secret, map[string]string{"the run log": log.String(), "the error": fmt.Sprint(err)})
		})
	}

	t.Run("exited job not run again", func(t *testing.T) {
		runID := fmt.Sprintf("run-done-%d", time.Now().UnixNano())
		file, gate := filepath.Join(data, runID+".runs"), filepath.Join(data, runID+".gate")
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := []string{"/job", "once", "/data/" + filepath.Base(file), "/data/" + filepath.Base(gate), "0"}
		env := nodeEnv(spec, environment, runID, images, &jobtest.Log{})
		var progress stages.Outputs
		env.Checkpoint = func(_ context.Context, o stages.Outputs) error { progress = o; return nil }
		if _, err := run(t, &Stage{Service: "api", Command: cmd}, env); err != nil {
			t.Fatal(err)
		}
		// Killed right after: the progress is recorded, the node is not
		// succeeded, and a resume runs it again.
		log := &jobtest.Log{}
		again := nodeEnv(spec, environment, runID, images, log)
		again.Attempt, again.Prior = 2, progress
		out, err := run(t, &Stage{Service: "api", Command: cmd}, again)
		if err != nil || out["exitCode"] != "0" {
			t.Errorf("resume: %v, outputs %v", err, out)
		}
		if !strings.Contains(log.String(), "not run again") {
			t.Error("the resume's log does not say the job is not run again")
		}
		if got := runs(t, file); len(got) != 1 {
			t.Errorf("the job ran %d times, want once: %v", len(got), got)
		}
	})
}

// TestFenced: a run that lost its lease does not start its job; the next
// owner starts the container it left created, and the job runs once.
func TestFenced(t *testing.T) {
	jobtest.Need(t, jobtest.Host1)
	t.Setenv(secretVar, "fenced-secret")
	environment := jobtest.EnvName("t-fence")
	data := jobtest.DataDir(t)
	spec := dbSpec(t, environment, data)
	images := dbImages(t)
	runID := fmt.Sprintf("run-fence-%d", time.Now().UnixNano())
	file, gate := filepath.Join(data, "runs"), filepath.Join(data, "gate")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := []string{"/job", "once", "/data/runs", "/data/gate", "0"}
	env := nodeEnv(spec, environment, runID, images, &jobtest.Log{})
	env.Fence = func(context.Context) error { return fmt.Errorf("lease lost: %w", stages.ErrFenced) }
	if _, err := run(t, &Stage{Service: "api", Command: cmd}, env); !errors.Is(err, stages.ErrFenced) {
		t.Fatalf("fenced run: %v, want ErrFenced", err)
	}
	if got := runs(t, file); len(got) != 0 {
		t.Fatalf("a fenced job ran: %v", got)
	}
	log := &jobtest.Log{}
	next := nodeEnv(spec, environment, runID, images, log)
	next.Attempt = 2
	if _, err := run(t, &Stage{Service: "api", Command: cmd}, next); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "never started: starting it") {
		t.Error("the next owner's log does not say it started the created container")
	}
	if got := runs(t, file); len(got) != 1 {
		t.Errorf("the job ran %d times, want once", len(got))
	}
	if left := jobtest.Jobs(t, jobtest.Host1, runID, "migrate"); len(left) > 0 {
		t.Errorf("job containers left: %v", left)
	}
}

// TestStopWaiting: when the stage's context is cancelled (SIGINT, a lost
// lease) the job runs on, for a resume to await; when the stage's timeout
// ends it, the job is stopped and removed.
func TestStopWaiting(t *testing.T) {
	jobtest.Need(t, jobtest.Host1)
	t.Setenv(secretVar, "stop-secret")
	environment := jobtest.EnvName("t-stop")
	data := jobtest.DataDir(t)
	spec := dbSpec(t, environment, data)
	images := dbImages(t)
	cmd := []string{"/job", "once", "/data/runs", "/data/never", "0"}

	for _, c := range []struct {
		name    string
		stop    func(ctx context.Context) (context.Context, context.CancelFunc)
		running bool
	}{
		{"cancelled", func(ctx context.Context) (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(3*time.Second, cancel)
			return ctx, cancel
		}, true},
		{"timed out", func(ctx context.Context) (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, 3*time.Second)
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			runID := fmt.Sprintf("run-stop-%d", time.Now().UnixNano())
			log := &jobtest.Log{}
			env := nodeEnv(spec, environment, runID, images, log)
			ctx, cancel := c.stop(context.Background())
			defer cancel()
			_, err := (&Stage{Service: "api", Command: cmd}).Run(ctx, env)
			t.Logf("%v\n%s", err, log)
			if err == nil || errors.Is(err, stages.ErrFenced) {
				t.Fatalf("error %v", err)
			}
			left := jobtest.Jobs(t, jobtest.Host1, runID, "migrate")
			switch {
			case c.running && (len(left) != 1 || !left[0].Running || !strings.Contains(err.Error(), "left running for a resume")):
				t.Errorf("cancelled: job containers %v, error %v: want the job running on", left, err)
			case !c.running && (len(left) != 0 || !strings.Contains(err.Error(), "stopped")):
				t.Errorf("timed out: job containers %v, error %v: want it stopped and removed", left, err)
			}
		})
	}
}

// TestDeployLeavesJob: a job carries its service's labels, but a deploy of
// the service while the job runs leaves it running, and what the
// environment runs (release status) does not count it.
func TestDeployLeavesJob(t *testing.T) {
	jobtest.Need(t, jobtest.Host1)
	t.Setenv(secretVar, "deploy-secret")
	environment := jobtest.EnvName("t-deployjob")
	spec := dbSpec(t, environment, jobtest.DataDir(t))
	images := dbImages(t)
	jobtest.Deploy(t, spec, environment, "1.0.0", images)
	runID := fmt.Sprintf("run-deployjob-%d", time.Now().UnixNano())
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(2*time.Second, cancel)
	s := &Stage{Service: "api", Command: []string{"/job", "once", "/data/runs", "/data/never", "0"}}
	if _, err := s.Run(ctx, nodeEnv(spec, environment, runID, images, &jobtest.Log{})); err == nil {
		t.Fatal("a job that never ends: no error when the stage is cancelled")
	}
	v2 := map[string]string{"database": images["database"], "api": jobtest.Image(t, "api", "v2")}
	jobtest.Deploy(t, spec, environment, "2.0.0", v2)
	if left := jobtest.Jobs(t, jobtest.Host1, runID, "migrate"); len(left) != 1 || !left[0].Running {
		t.Errorf("after a deploy of api: job containers %v, want the job running", left)
	}
	lives, err := deploy.Inspect(context.Background(), spec, environment)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lives {
		if strings.Contains(l.Container, "-job-") || l.Service == "api" && l.Digest != v2["api"] {
			t.Errorf("status counts %s (%s) as a container of %s", l.Container, l.Digest, l.Service)
		}
	}
}
