package dockerbuild

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/parts"
	"github.com/sweepboard/release/stages"
)

// testPipeline returns a pipeline name of its own for a test, so that its
// images are found (and removed) by the release.pipeline label.
func testPipeline(t *testing.T, cli *client.Client) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := "buildtest-" + hex.EncodeToString(b)
	t.Cleanup(func() { removeImages(t, cli, name) })
	return name
}

func pipelineImages(t *testing.T, cli *client.Client, pipeline string) []image.Summary {
	t.Helper()
	imgs, err := cli.ImageList(context.Background(), image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelPipeline+"="+pipeline))})
	if err != nil {
		t.Fatalf("list images: %v", err)
	}
	return imgs
}

func removeImages(t *testing.T, cli *client.Client, pipeline string) {
	for _, img := range pipelineImages(t, cli, pipeline) {
		if _, err := cli.ImageRemove(context.Background(), img.ID, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Logf("remove image %s: %v", img.ID, err)
		}
	}
}

func fixtureSpec(pipeline, dir string) *stages.Spec {
	spec := &stages.Spec{Name: pipeline, Repos: map[string]stages.Repo{}, Services: map[string]stages.Service{}}
	for _, s := range parts.Services {
		spec.Repos[s] = stages.Repo{URL: filepath.Join(dir, s+".git"), Branch: "main"}
		spec.Services[s] = stages.Service{Repo: s, Image: "sweepboard/" + s}
	}
	return spec
}

type result struct {
	out stages.Outputs
	log string
	err error
}

func run(t *testing.T, st *Stage, spec *stages.Spec, workDir, item string, commits map[string]string) result {
	t.Helper()
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	defer func() { t.Logf("build %s: %s", item, time.Since(start)) }()
	out, err := st.Run(ctx, &stages.Env{
		RunID: "r1", RunKind: "run", Version: "1.2.0", Node: "build[" + item + "]", Stage: "build", Item: item,
		Spec: spec, WorkDir: workDir, Commits: commits, Log: &log,
	})
	return result{out, log.String(), err}
}

func TestBuildFixtureServicesAtPinnedCommit(t *testing.T) {
	cli := parts.Docker(t, parts.DockerHost)
	dir, heads := parts.Repos(t)
	pipeline := testPipeline(t, cli)
	spec := fixtureSpec(pipeline, dir)
	workDir := t.TempDir()
	st := &Stage{Host: parts.DockerHost}

	// Pin one commit behind the head: the build must use the pinned tree,
	// not whatever the branch points to.
	pinned := map[string]string{}
	for _, s := range parts.Services {
		pinned[s] = parts.Rev(t, dir, s, "main~1")
		if pinned[s] == heads[s] {
			t.Fatalf("%s: main~1 is the head", s)
		}
	}
	ids := map[string]string{}
	for _, s := range parts.Services {
		r := run(t, st, spec, workDir, s, pinned)
		if r.err != nil {
			t.Fatalf("build %s: %v\n%s", s, r.err, r.log)
		}
		wantTag := "sweepboard/" + s + ":git-" + pinned[s][:12]
		if diff := cmp.Diff(stages.Outputs{"tag": wantTag, "commit": pinned[s], "reused": "false", "imageID": r.out["imageID"]}, r.out); diff != "" {
			t.Errorf("%s outputs (-want +got):\n%s", s, diff)
		}
		insp, err := cli.ImageInspect(context.Background(), wantTag)
		if err != nil {
			t.Fatalf("inspect %s: %v", wantTag, err)
		}
		if insp.ID != r.out["imageID"] {
			t.Errorf("%s: docker inspect says %s, the stage says %s", s, insp.ID, r.out["imageID"])
		}
		wantLabels := map[string]string{
			"org.opencontainers.image.revision": pinned[s],
			"org.opencontainers.image.title":    s,
			"org.opencontainers.image.version":  "1.2.0",
			"org.opencontainers.image.source":   spec.Repos[s].URL,
			LabelPipeline:                       pipeline,
			LabelService:                        s,
			LabelRepo:                           s,
			LabelCommit:                         pinned[s],
			LabelVersion:                        "1.2.0",
			LabelBuildKey:                       buildKey(pipeline, s, pinned[s], ".", "Dockerfile"),
		}
		if diff := cmp.Diff(wantLabels, insp.Config.Labels); diff != "" {
			t.Errorf("%s labels (-want +got):\n%s", s, diff)
		}
		if !slices.Contains(insp.Config.Env, "SERVICE_VERSION=1.2.0") {
			t.Errorf("%s: env %v lacks SERVICE_VERSION=1.2.0 from the RELEASE_VERSION build argument", s, insp.Config.Env)
		}
		// BuildKit's steps, decoded from its trace: the COPY of the binary
		// is one of them.
		if !strings.Contains(r.log, "COPY bin/"+s+" /"+s) || !strings.Contains(r.log, "built image "+r.out["imageID"]) {
			t.Errorf("%s: the build output did not reach the log:\n%s", s, r.log)
		}
		ids[s] = r.out["imageID"]
	}

	// The same commit again: the image is found by its label, not rebuilt.
	again := run(t, st, spec, workDir, "api", pinned)
	if again.err != nil {
		t.Fatal(again.err)
	}
	if again.out["imageID"] != ids["api"] || again.out["reused"] != "true" {
		t.Errorf("second build of the same commit: outputs %v, want image %s reused", again.out, ids["api"])
	}
	if strings.Contains(again.log, "building ") || !strings.Contains(again.log, "reusing image "+ids["api"]) {
		t.Errorf("second build of the same commit ran a build:\n%s", again.log)
	}

	// The head commit is another image.
	head := run(t, st, spec, workDir, "api", heads)
	if head.err != nil {
		t.Fatal(head.err)
	}
	if head.out["imageID"] == ids["api"] || head.out["reused"] != "false" {
		t.Errorf("build of another commit: outputs %v, want a new image", head.out)
	}
	if got := len(pipelineImages(t, cli, pipeline)); got != 4 {
		t.Errorf("%d images labelled with the pipeline, want 4", got)
	}
}

// gitRepo makes a repo from files (content "->target" makes a symlink) with
// one commit per map, and returns its directory and the commit SHAs.
func gitRepo(t *testing.T, commits ...map[string]string) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.test", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.test")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	var shas []string
	for i, files := range commits {
		for name, content := range files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			os.Remove(p)
			var err error
			if target, ok := strings.CutPrefix(content, "->"); ok {
				err = os.Symlink(target, p)
			} else {
				err = os.WriteFile(p, []byte(content), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		git("add", "-A")
		git("commit", "-q", "-m", "feat: commit "+string(rune('a'+i)))
		shas = append(shas, git("rev-parse", "HEAD"))
	}
	return dir, shas
}

func oneRepoSpec(pipeline, url string, svc stages.Service) *stages.Spec {
	svc.Repo, svc.Image = "app", "releasetest/app"
	return &stages.Spec{
		Name:     pipeline,
		Repos:    map[string]stages.Repo{"app": {URL: url, Branch: "main"}},
		Services: map[string]stages.Service{"app": svc},
	}
}

func TestBuildContextIsTheCommittedTreeMinusDockerignore(t *testing.T) {
	cli := parts.Docker(t, parts.DockerHost)
	pipeline := testPipeline(t, cli)
	dir, shas := gitRepo(t,
		map[string]string{
			"Dockerfile":        "FROM scratch\nCOPY . /ctx/\n",
			".dockerignore":     "notes\n*.log\n!important.log\n",
			"keep.txt":          "first\n",
			"a.log":             "noise\n",
			"important.log":     "kept\n",
			"notes/secret.txt":  "not for the image\n",
			"sub/keep-too.txt":  "x\n",
			"sub/link":          "->../keep.txt",
			"sub/deeper/up.txt": "y\n",
		},
		map[string]string{"keep.txt": "second\n", "added-later.txt": "z\n"},
	)
	// Uncommitted changes in the working copy must not matter either.
	if err := os.WriteFile(filepath.Join(dir, "dirty.txt"), []byte("dirty"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := oneRepoSpec(pipeline, dir, stages.Service{})
	r := run(t, &Stage{Host: parts.DockerHost}, spec, t.TempDir(), "app", map[string]string{"app": shas[0]})
	if r.err != nil {
		t.Fatalf("build: %v\n%s", r.err, r.log)
	}

	files := imageFiles(t, cli, r.out["imageID"], "/ctx")
	want := map[string]string{
		"ctx/":                  "",
		"ctx/.dockerignore":     "notes\n*.log\n!important.log\n",
		"ctx/Dockerfile":        "FROM scratch\nCOPY . /ctx/\n",
		"ctx/important.log":     "kept\n",
		"ctx/keep.txt":          "first\n",
		"ctx/sub/":              "",
		"ctx/sub/deeper/":       "",
		"ctx/sub/deeper/up.txt": "y\n",
		"ctx/sub/keep-too.txt":  "x\n",
		"ctx/sub/link":          "-> ../keep.txt",
	}
	if diff := cmp.Diff(want, files); diff != "" {
		t.Errorf("files in the image (-want +got):\n%s", diff)
	}
}

// imageFiles lists the files under dir in img, with their contents, by
// copying them out of a created (never started) container.
func imageFiles(t *testing.T, cli *client.Client, img, dir string) map[string]string {
	t.Helper()
	ctx := context.Background()
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: img, Cmd: []string{"/none"}}, nil, nil, nil, "")
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	defer cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	rc, _, err := cli.CopyFromContainer(ctx, c.ID, dir)
	if err != nil {
		t.Fatalf("copy %s from container: %v", dir, err)
	}
	defer rc.Close()
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			files[strings.TrimSuffix(h.Name, "/")+"/"] = ""
		case tar.TypeSymlink:
			files[h.Name] = "-> " + h.Linkname
		default:
			b, _ := io.ReadAll(tr)
			files[h.Name] = string(b)
		}
	}
	return files
}

func TestBuildContextEscapesAreRejected(t *testing.T) {
	cli := parts.Docker(t, parts.DockerHost)
	dockerfile := "FROM scratch\nCOPY . /ctx/\n"
	tests := []struct {
		name     string
		files    map[string]string
		svc      stages.Service
		wantErr  string
		validate bool // Validate rejects it too
	}{
		{
			name:     "context climbs out",
			files:    map[string]string{"Dockerfile": dockerfile},
			svc:      stages.Service{Context: "../"},
			wantErr:  `context "../" leaves the repo with ".."`,
			validate: true,
		},
		{
			name:     "absolute context",
			files:    map[string]string{"Dockerfile": dockerfile},
			svc:      stages.Service{Context: "/etc"},
			wantErr:  `context "/etc" is absolute`,
			validate: true,
		},
		{
			name:     "dockerfile climbs out",
			files:    map[string]string{"sub/Dockerfile": dockerfile},
			svc:      stages.Service{Context: "sub", Dockerfile: "../Dockerfile"},
			wantErr:  `dockerfile "../Dockerfile" leaves the repo`,
			validate: true,
		},
		{
			name:    "symlink to a file outside the repo",
			files:   map[string]string{"Dockerfile": dockerfile, "conf/passwd": "->../../../../../../etc/passwd"},
			wantErr: "symlink conf/passwd -> ../../../../../../etc/passwd points outside the build context",
		},
		{
			name:    "absolute symlink",
			files:   map[string]string{"Dockerfile": dockerfile, "passwd": "->/etc/passwd"},
			wantErr: "symlink passwd -> /etc/passwd points outside the build context",
		},
		{
			name:    "symlink out of a sub-directory context",
			files:   map[string]string{"app/Dockerfile": dockerfile, "app/up": "->../README", "README": "x"},
			svc:     stages.Service{Context: "app"},
			wantErr: "symlink up -> ../README points outside the build context",
		},
		{
			name:    "context is a symlink",
			files:   map[string]string{"real/Dockerfile": dockerfile, "ctx": "->real"},
			svc:     stages.Service{Context: "ctx"},
			wantErr: `context "ctx": ctx is a symlink`,
		},
		{
			name:    "dockerfile missing",
			files:   map[string]string{"README": "x"},
			wantErr: `dockerfile "Dockerfile" not found in context "."`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pipeline := testPipeline(t, cli)
			dir, shas := gitRepo(t, tt.files)
			spec := oneRepoSpec(pipeline, dir, tt.svc)
			st := &Stage{Host: parts.DockerHost}

			verr := st.Validate(spec)
			if tt.validate != (verr != nil) {
				t.Errorf("Validate = %v, want an error: %v", verr, tt.validate)
			}
			if verr != nil && !strings.Contains(verr.Error(), "service app: "+tt.wantErr) {
				t.Errorf("Validate = %q, want it to contain %q", verr, "service app: "+tt.wantErr)
			}

			r := run(t, st, spec, t.TempDir(), "app", map[string]string{"app": shas[0]})
			if r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr) {
				t.Fatalf("Run error = %v, want one with %q", r.err, tt.wantErr)
			}
			if !stages.IsPermanent(r.err) {
				t.Errorf("Run error %v is retryable; a bad context stays bad", r.err)
			}
			if imgs := pipelineImages(t, cli, pipeline); len(imgs) != 0 {
				t.Errorf("%d images built from a rejected context", len(imgs))
			}
			if strings.Contains(r.log, "building ") {
				t.Errorf("the engine saw a build:\n%s", r.log)
			}
		})
	}
}

func TestLabelInstruction(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		want   string
		wantOK bool
	}{
		{name: "sorted and quoted", labels: map[string]string{"b": "2", "a": "x y", "org.x/y": "https://h/p.git"},
			want: `LABEL "a"="x y" "b"="2" "org.x/y"="https://h/p.git"`, wantOK: true},
		{name: "empty value", labels: map[string]string{"a": ""}, want: `LABEL "a"=""`, wantOK: true},
		{name: "quote", labels: map[string]string{"a": `say "hi"`}},
		{name: "backslash", labels: map[string]string{"a": `c:\x`}},
		{name: "backtick escape", labels: map[string]string{"a": "x`y"}},
		{name: "variable", labels: map[string]string{"a": "$HOME"}},
		{name: "newline", labels: map[string]string{"a": "x\nRUN evil"}},
		{name: "bad key", labels: map[string]string{"a\tb": "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := labelInstruction(tt.labels)
			if diff := cmp.Diff(struct {
				Line string
				OK   bool
			}{tt.want, tt.wantOK}, struct {
				Line string
				OK   bool
			}{got, ok}); diff != "" {
				t.Errorf("labelInstruction (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLabelsInOneStep: BuildKit sets the labels in the image's config, no
// step. The classic builder (also BuildKit's stand-in when .dockerignore
// names the Dockerfile and a step could copy it): when .dockerignore hides the Dockerfile, the
// labels are set by one LABEL step appended to it; otherwise the committed
// Dockerfile reaches the build unchanged and the labels come from the build
// options, one step each. Either way the image carries every label, and the
// context holds what .dockerignore lets through.
func TestLabelsInOneStep(t *testing.T) {
	cli := parts.Docker(t, parts.DockerHost)
	tests := []struct {
		name          string
		files         map[string]string
		wantLabelStep int
		wantCopied    map[string]string
	}{
		{
			name: "hidden Dockerfile without final newline",
			files: map[string]string{
				"Dockerfile": "FROM scratch\nCOPY . /ctx/", ".dockerignore": "Dockerfile\n", "a.txt": "a\n",
			},
			wantLabelStep: 1,
			wantCopied:    map[string]string{"ctx/": "", "ctx/.dockerignore": "Dockerfile\n", "ctx/a.txt": "a\n"},
		},
		{
			name: "visible Dockerfile",
			files: map[string]string{
				"Dockerfile": "FROM scratch\nCOPY . /ctx/\n", "a.txt": "a\n",
			},
			wantLabelStep: 10,
			wantCopied:    map[string]string{"ctx/": "", "ctx/Dockerfile": "FROM scratch\nCOPY . /ctx/\n", "ctx/a.txt": "a\n"},
		},
		{
			name: "hidden Dockerfile ending in a continuation",
			files: map[string]string{
				"Dockerfile": "FROM scratch\nCOPY a.txt \\\n /ctx/a.txt \\\n", ".dockerignore": "Dockerfile\n", "a.txt": "a\n",
			},
			wantLabelStep: 10,
			wantCopied:    map[string]string{"ctx/": "", "ctx/a.txt": "a\n"},
		},
	}
	for _, builder := range []string{BuilderBuildKit, BuilderClassic} {
		for _, tt := range tests {
			t.Run(builder+"/"+tt.name, func(t *testing.T) {
				pipeline := testPipeline(t, cli)
				dir, shas := gitRepo(t, tt.files)
				spec := oneRepoSpec(pipeline, dir, stages.Service{})
				r := run(t, &Stage{Host: parts.DockerHost, Builder: builder}, spec, t.TempDir(), "app", map[string]string{"app": shas[0]})
				if r.err != nil {
					t.Fatalf("build: %v\n%s", r.err, r.log)
				}
				insp, err := cli.ImageInspect(context.Background(), r.out["imageID"])
				if err != nil {
					t.Fatal(err)
				}
				if got := insp.Config.Labels[LabelCommit]; got != shas[0] {
					t.Errorf("label %s = %q, want %q", LabelCommit, got, shas[0])
				}
				if got := len(insp.Config.Labels); got != 10 {
					t.Errorf("%d labels, want 10: %v", got, insp.Config.Labels)
				}
				hist, err := cli.ImageHistory(context.Background(), r.out["imageID"])
				if err != nil {
					t.Fatal(err)
				}
				steps := 0
				for _, h := range hist {
					if strings.Contains(h.CreatedBy, "LABEL ") {
						steps++
					}
				}
				want := tt.wantLabelStep
				if builder == BuilderBuildKit && !(strings.Contains(tt.files[".dockerignore"], "Dockerfile") && reaches(tt.files["Dockerfile"], "Dockerfile")) {
					want = 0
				}
				if steps != want {
					t.Errorf("%d LABEL steps, want %d\n%s", steps, want, r.log)
				}
				if diff := cmp.Diff(tt.wantCopied, imageFiles(t, cli, r.out["imageID"], "/ctx")); diff != "" {
					t.Errorf("files in the image (-want +got):\n%s", diff)
				}
			})
		}
	}
}
