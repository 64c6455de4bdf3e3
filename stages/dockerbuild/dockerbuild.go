// Package dockerbuild is the "docker-build" stage: it builds one service's
// image through the Docker engine API from the service's repo at the run's
// pinned commit.
//
// The build context is the tree of that commit as go-git stores it, never a
// working copy: what is built is exactly what was committed. The context is
// confined to the repo: a context or Dockerfile path that is absolute or
// climbs out with ".." is rejected (by Validate, so `release validate`
// reports it), a symlink whose target leaves the context is an error naming
// it, and .dockerignore is honoured. The whole context is checked before the
// engine sees a byte, so a rejected context builds nothing.
//
// An image is built once per service and commit: the image carries a
// release.build-key label (pipeline, repo, commit, context and Dockerfile), and a later
// run that finds an image with that label reuses it instead of building.
package dockerbuild

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync"
	"unicode"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"github.com/sweepboard/release/repos"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/engine"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "docker-build", New: func() stages.Stage { return &Stage{} }}

// Labels the stage puts on every image, besides the OCI ones.
const (
	LabelPipeline = "release.pipeline"
	LabelService  = "release.service"
	LabelRepo     = "release.repo"
	LabelCommit   = "release.commit"
	LabelVersion  = "release.version"
	LabelBuildKey = "release.build-key"
)

// Stage builds the image of env.Item.
type Stage struct {
	// Host is the engine that builds, e.g. unix:///var/run/docker.sock;
	// DOCKER_HOST or the local socket when empty.
	Host string `yaml:"host"`
	// Builder is "buildkit" or "classic"; empty is BuildKit, or the
	// classic builder on an engine without BuildKit. A Dockerfile that
	// .dockerignore names and a step could copy is built by the classic
	// builder, which keeps it out of the image.
	Builder string `yaml:"builder"`
}

// The builders a stage can ask for.
const (
	BuilderBuildKit = "buildkit"
	BuilderClassic  = "classic"
)

// Validate checks every service's context and Dockerfile paths: both must
// stay inside the repo.
func (s *Stage) Validate(spec *stages.Spec) error {
	var errs []error
	switch s.Builder {
	case "", BuilderBuildKit, BuilderClassic:
	default:
		errs = append(errs, fmt.Errorf("builder: %q is not a builder: use %s or %s", s.Builder, BuilderBuildKit, BuilderClassic))
	}
	for _, name := range spec.ServiceNames() {
		if err := checkService(spec.Services[name]); err != nil {
			errs = append(errs, fmt.Errorf("service %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func checkService(svc stages.Service) error {
	if err := checkPath("context", svc.Context); err != nil {
		return err
	}
	return checkPath("dockerfile", svc.Dockerfile)
}

// Doctor checks that the build engine answers.
func (s *Stage) Doctor(ctx context.Context, spec *stages.Spec) []stages.Check {
	host := s.host()
	check := stages.Check{Name: "docker engine " + host + " (build)"}
	cli, err := engine.Connect(host)
	if err == nil {
		defer cli.Close()
		_, err = cli.Ping(ctx)
	}
	check.Err = err
	return []stages.Check{check}
}

func (s *Stage) host() string { return engine.HostOr(s.Host) }

// Run builds, or finds already built, the image of service env.Item at the
// pinned commit of its repo. Outputs: imageID, tag (the local tag), commit,
// reused ("true" when no build was needed).
func (s *Stage) Run(ctx context.Context, env *stages.Env) (stages.Outputs, error) {
	name := env.Item
	svc, ok := env.Spec.Services[name]
	if !ok {
		return nil, stages.Permanent(fmt.Errorf("build %q: no such service in the pipeline file", name))
	}
	if err := checkService(svc); err != nil {
		return nil, stages.Permanent(fmt.Errorf("build %s: %w", name, err))
	}
	commit := env.Commits[svc.Repo]
	if commit == "" {
		return nil, stages.Permanent(fmt.Errorf("build %s: no pinned commit for repo %q", name, svc.Repo))
	}
	contextDir, dockerfile := orDefault(svc.Context, "."), orDefault(svc.Dockerfile, "Dockerfile")
	logw := env.Log
	if logw == nil {
		logw = io.Discard
	}
	logger := env.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	cli, err := engine.Connect(s.host())
	if err != nil {
		return nil, err
	}
	defer cli.Close()

	key := buildKey(env.Spec.Name, svc.Repo, commit, contextDir, dockerfile)
	tag := localTag(name, svc, commit)
	out := stages.Outputs{"tag": tag, "commit": commit}

	id, err := findBuilt(ctx, cli, key)
	if err != nil {
		return nil, err
	}
	if id != "" {
		if err := cli.ImageTag(ctx, id, tag); err != nil {
			return nil, fmt.Errorf("tag image %s as %s: %w", short(id), tag, err)
		}
		fmt.Fprintf(logw, "reusing image %s built from %s at %s\n", id, svc.Repo, short(commit))
		logger.Info("image reused", "service", name, "image", id, "commit", commit)
		out["imageID"], out["reused"] = id, "true"
		return out, nil
	}

	repo, err := openRepo(ctx, env, svc.Repo, commit)
	if err != nil {
		return nil, fmt.Errorf("build %s: %w", name, err)
	}
	c, err := repo.CommitObject(plumbing.NewHash(commit))
	if err != nil {
		return nil, stages.Permanent(fmt.Errorf("build %s: read commit %s of repo %s: %w", name, short(commit), svc.Repo, err))
	}
	bc, err := newBuildContext(c, contextDir, dockerfile)
	if err != nil {
		return nil, stages.Permanent(fmt.Errorf("build %s from repo %s at %s: %w", name, svc.Repo, short(commit), err))
	}
	for _, sub := range bc.skipped {
		fmt.Fprintf(logw, "skipping submodule %s: its content is not in the repo\n", sub)
	}

	version := env.Version
	labels := map[string]string{
		"org.opencontainers.image.title":    name,
		"org.opencontainers.image.revision": commit,
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.source":   publicURL(env.Spec.Repos[svc.Repo].URL),
		LabelPipeline:                       env.Spec.Name,
		LabelService:                        name,
		LabelRepo:                           svc.Repo,
		LabelCommit:                         commit,
		LabelVersion:                        version,
		LabelBuildKey:                       key,
	}
	opts := build.ImageBuildOptions{
		Tags:        []string{tag},
		Dockerfile:  path.Clean(dockerfile),
		BuildArgs:   map[string]*string{"RELEASE_VERSION": &version, "RELEASE_COMMIT": &commit},
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderBuildKit,
		Labels:      labels,
	}
	fmt.Fprintf(logw, "building %s from repo %s at %s (%d files)\n", tag, svc.Repo, short(commit), len(bc.files))
	built, err := s.build(ctx, cli, bc, opts, logw)
	if err != nil {
		var je *jsonmessage.JSONError
		if errors.As(err, &je) {
			// The Dockerfile failed: retrying the same commit fails the same way.
			return nil, stages.Permanent(fmt.Errorf("build %s: %s", tag, je.Message))
		}
		return nil, fmt.Errorf("build %s: %w", tag, err)
	}
	insp, err := cli.ImageInspect(ctx, tag)
	if err != nil {
		return nil, fmt.Errorf("inspect built image %s: %w", tag, err)
	}
	if built != "" && built != insp.ID {
		return nil, fmt.Errorf("build %s: engine reported image %s but the tag points to %s", tag, built, insp.ID)
	}
	fmt.Fprintf(logw, "built image %s\n", insp.ID)
	logger.Info("image built", "service", name, "image", insp.ID, "commit", commit)
	out["imageID"], out["reused"] = insp.ID, "false"
	return out, nil
}

// build runs one build on the engine and returns the image ID it reported.
// BuildKit unless the stage says classic or the engine has no BuildKit:
// the classic builder runs every instruction in a container of its own and
// commits it, which on the vfs storage driver copies the image's file tree
// each time, where BuildKit applies the metadata instructions and labels
// to the image's config.
func (s *Stage) build(ctx context.Context, cli *client.Client, bc *buildContext, opts build.ImageBuildOptions, logw io.Writer) (string, error) {
	if s.Builder == BuilderClassic {
		return classic(ctx, cli, bc, opts, logw)
	}
	if bc.dfHidden && bc.dockerfileReachable() {
		// BuildKit reads the Dockerfile from the uploaded context and
		// leaves it there for a step to see; the classic builder drops a
		// Dockerfile that .dockerignore names.
		fmt.Fprintf(logw, ".dockerignore names the Dockerfile and a step could copy it: building with the classic builder, which keeps it out of the image\n")
		return classic(ctx, cli, bc, opts, logw)
	}
	id, err := send(ctx, cli, bc, opts, logw)
	if err != nil && s.Builder == "" && isNoBuildKit(err) {
		fmt.Fprintf(logw, "the engine has no BuildKit (%v); building with the classic builder\n", err)
		return classic(ctx, cli, bc, opts, logw)
	}
	return id, err
}

// classic builds with the classic builder. It turns each label of the
// build options into a step of its own after the last one, and on the vfs
// storage driver each step copies the image's whole file tree twice. When
// no step can see the Dockerfile, one LABEL instruction appended to it
// sets them all at once.
func classic(ctx context.Context, cli *client.Client, bc *buildContext, opts build.ImageBuildOptions, logw io.Writer) (string, error) {
	opts.Version = build.BuilderV1
	if line, ok := labelInstruction(opts.Labels); ok {
		ok, err := bc.appendInstruction(line)
		if err != nil {
			return "", err
		}
		if ok {
			opts.Labels = nil
		}
	}
	return send(ctx, cli, bc, opts, logw)
}

// send streams the build context to the engine and reads its answer.
func send(ctx context.Context, cli *client.Client, bc *buildContext, opts build.ImageBuildOptions, logw io.Writer) (string, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(bc.writeTar(pw)) }()
	resp, err := cli.ImageBuild(ctx, pr, opts)
	if err != nil {
		pr.CloseWithError(err)
		return "", err
	}
	defer resp.Body.Close()
	id, err := readBuild(resp.Body, logw)
	pr.CloseWithError(io.ErrClosedPipe) // the engine may stop reading early on error
	return id, err
}

// isNoBuildKit says the engine refused a BuildKit build for want of it
// (an engine built without it, or one that is not Linux).
func isNoBuildKit(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "buildkit") && (strings.Contains(msg, "not supported") || strings.Contains(msg, "not enabled"))
}

// labelInstruction returns one LABEL instruction that sets every label, in
// key order, and false when a key or value holds a character a Dockerfile
// would interpret (quotes, escapes, variables) or that is not printable.
func labelInstruction(labels map[string]string) (string, bool) {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("LABEL")
	for _, k := range keys {
		for _, s := range []string{k, labels[k]} {
			if strings.ContainsAny(s, "\"\\`$") || strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
				return "", false
			}
		}
		fmt.Fprintf(&b, " %q=%q", k, labels[k])
	}
	return b.String(), true
}

// findBuilt returns the newest image with the build key, or "".
func findBuilt(ctx context.Context, cli *client.Client, key string) (string, error) {
	imgs, err := cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelBuildKey+"="+key))})
	if err != nil {
		return "", fmt.Errorf("list images labelled %s=%s: %w", LabelBuildKey, key, err)
	}
	if len(imgs) == 0 {
		return "", nil
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Created > imgs[j].Created })
	return imgs[0].ID, nil
}

// buildKey names what an image is built from; the same key means the same
// image. The pipeline is part of it: its name is in the image's labels.
func buildKey(pipeline, repo, commit, contextDir, dockerfile string) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{pipeline, repo, commit, path.Clean(contextDir), path.Clean(dockerfile)}, "\x00")))
	return hex.EncodeToString(sum[:])[:24]
}

// localTag is the engine-local name of the image, by commit: the version
// tags belong to the push.
func localTag(name string, svc stages.Service, commit string) string {
	return orDefault(svc.Image, name) + ":git-" + short(commit)
}

// mirrorLocks serialises opening the same mirror from concurrent nodes:
// each node has its own repos.Set, and two first clones into one directory
// would collide.
var mirrorLocks sync.Map // mirror dir -> *sync.Mutex

// openRepo returns the repo's mirror holding commit, fetching only when the
// mirror does not have it yet.
func openRepo(ctx context.Context, env *stages.Env, name, commit string) (*git.Repository, error) {
	set := repos.New(env.Spec, env.WorkDir)
	dir := set.MirrorDir(name)
	mu, _ := mirrorLocks.LoadOrStore(dir, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	h := plumbing.NewHash(commit)
	if r, err := git.PlainOpen(dir); err == nil {
		if _, err := r.CommitObject(h); err == nil {
			return r, nil
		}
	}
	r, err := set.Open(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("open repo %s: %w", name, err)
	}
	if _, err := r.CommitObject(h); err != nil {
		return nil, stages.Permanent(fmt.Errorf("find commit %s in repo %s: %w", short(commit), name, err))
	}
	return r, nil
}

// publicURL drops credentials from a repo URL before it goes into a label.
func publicURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = nil
	return u.String()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
	_ stages.Doctor    = (*Stage)(nil)
)
