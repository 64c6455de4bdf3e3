// Package dockerpush is the "docker-push" stage: it pushes one service's
// built image to the pipeline's registry as REGISTRY/IMAGE:VERSION and
// REGISTRY/IMAGE:git-COMMIT, and outputs its digest, which becomes part of
// the release record.
//
// The registry is probed first: when a tag already holds the image (same
// config digest, which is the engine's image ID), nothing is uploaded; when
// only the commit tag holds it, the version tag is added by digest in the
// registry, again without an upload. A version tag that holds another image
// is never overwritten.
//
// Credentials come from the registry package's one chain: for the
// pipeline's registry RELEASE_REGISTRY_USER and RELEASE_REGISTRY_PASSWORD,
// then the Docker config (DOCKER_CONFIG or ~/.docker/config.json: credHelpers,
// credsStore, auths), then none. They never reach the log, the outputs or an
// error: a registry or proxy that echoes them in an error body is redacted.
// Registry calls have the pipeline file's timeouts; a push that meets an
// unreachable registry or engine is tried again under engine.Policy.
package dockerpush

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/sweepboard/release/pipeline/redact"
	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/dockerbuild"
	"github.com/sweepboard/release/stages/internal/engine"
	"github.com/sweepboard/release/stages/internal/registry"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "docker-push", New: func() stages.Stage { return &Stage{} }}

// The variables that carry the pipeline registry's credentials.
const (
	EnvUser     = registry.EnvUser
	EnvPassword = registry.EnvPassword
)

// Stage pushes the image of env.Item.
type Stage struct {
	// Host is the engine holding the built image (the one docker-build
	// used); DOCKER_HOST or the local socket when empty.
	Host string `yaml:"host"`

	// retry, when set (by a test), replaces the stage's retry policy.
	retry *retry.Policy
}

// Validate checks that the pipeline names a registry.
func (s *Stage) Validate(spec *stages.Spec) error {
	if spec.Registry.URL == "" {
		return errors.New("docker-push needs registry.url in the pipeline file")
	}
	if _, err := name.NewRegistry(spec.Registry.URL); err != nil {
		return fmt.Errorf("registry.url %q: %w", spec.Registry.URL, err)
	}
	return nil
}

// Doctor checks that the registry answers and takes the credentials the
// chain finds for it, within the pipeline's timeouts; doctor runs it in
// parallel with the other checks.
func (s *Stage) Doctor(_ context.Context, spec *stages.Spec) []stages.Check {
	return []stages.Check{{Name: "registry " + spec.Registry.URL, Run: func(ctx context.Context) error {
		if err := registry.New(spec, os.Getenv).Ping(ctx, spec.Registry.URL); err != nil {
			return fmt.Errorf("reach registry %s: %w", spec.Registry.URL, err)
		}
		return nil
	}}}
}

func (s *Stage) host() string { return engine.HostOr(s.Host) }

// Run pushes the image built for env.Item. Outputs: image
// (REGISTRY/IMAGE@sha256:…), digest, tags, pushed ("false" when the
// registry already had it).
func (s *Stage) Run(ctx context.Context, env *stages.Env) (_ stages.Outputs, err error) {
	reg := registry.New(env.Spec, os.Getenv)
	// The registry's and the engine's errors quote the registry's answer,
	// which may echo the request's Authorization header.
	defer func() { err = reg.Redact(err) }()
	svcName := env.Item
	svc, ok := env.Spec.Services[svcName]
	if !ok {
		return nil, stages.Permanent(fmt.Errorf("push %q: no such service in the pipeline file", svcName))
	}
	if err := s.Validate(env.Spec); err != nil {
		return nil, stages.Permanent(err)
	}
	commit := env.Commits[svc.Repo]
	logger := env.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	repoName := env.Spec.Registry.URL + "/" + cmp.Or(svc.Image, svcName)
	repo, err := name.NewRepository(repoName, reg.NameOptions()...)
	if err != nil {
		return nil, stages.Permanent(fmt.Errorf("push %s: image name %s: %w", svcName, repoName, err))
	}
	var tags []name.Tag
	for _, t := range []string{tagFor(env.Version), commitTag(commit)} {
		if t != "" {
			tags = append(tags, repo.Tag(t))
		}
	}
	if len(tags) == 0 {
		return nil, stages.Permanent(fmt.Errorf("push %s: neither a version nor a pinned commit to tag the image with", svcName))
	}

	cli, err := engine.Connect(s.host(), engine.Bounds(env.Spec.Timeouts))
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	imageID, err := builtImage(ctx, cli, env, commit)
	if err != nil {
		return nil, err
	}

	creds, err := reg.Credentials(ctx, repo.RegistryStr())
	if err != nil {
		return nil, stages.Permanent(err)
	}
	// The engine's progress quotes what the registry answered too.
	var logw io.Writer = io.Discard
	if env.Log != nil {
		w := redact.Writer(env.Log, creds.Secrets()...)
		defer w.Close()
		logw = w
	}
	p := push{reg: reg, cli: cli, imageID: imageID, tags: tags, auth: creds.EngineAuth(), log: logw, fence: env.Fence}

	// A registry that restarts refuses or drops connections for a while.
	// The push is tried again from the probe, which finds whatever an
	// earlier try completed, so nothing is uploaded or tagged twice.
	policy := s.policy().Reporting(func(w retry.Wait) {
		fmt.Fprintf(logw, "attempt %d of %d to push %s failed: %v; trying again in %s\n", w.Attempt, w.Of, tags[0], w.Err, w.Wait.Round(time.Millisecond))
	})
	var out stages.Outputs
	err = policy.Do(ctx, "push "+tags[0].String(), func(ctx context.Context) (err error) {
		out, err = p.run(ctx)
		return err
	})
	if err != nil {
		if policy.Judge(err).Retry {
			what := "registry " + repo.RegistryStr()
			if client.IsErrConnectionFailed(err) {
				what = "docker engine " + s.host()
			}
			return nil, fmt.Errorf("%s unreachable: %w", what, err)
		}
		return nil, err
	}
	ref := repo.Digest(out["digest"])
	logger.Info("image pushed", "service", svcName, "image", ref.String(), "uploaded", out["pushed"] == "true")
	out["image"] = ref.String()
	return out, nil
}

// How often a push that cannot reach the registry is tried, and the wait
// after the first try, doubling after each (with jitter). The engine has
// retried each layer upload itself (five tries over 50s) before it reports
// a failure.
const (
	RetryAttempts = 3
	RetryBackoff  = 2 * time.Second
)

// policy is the stage's retry policy: engine.Policy with RetryAttempts
// and RetryBackoff, unless a test set its own.
func (s *Stage) policy() retry.Policy {
	if s.retry != nil {
		return *s.retry
	}
	p := engine.Policy()
	p.Attempts, p.Backoff = RetryAttempts, RetryBackoff
	return p
}

// push is one push of an image under its tags.
type push struct {
	reg     *registry.Client
	cli     *client.Client
	imageID string
	tags    []name.Tag
	auth    string // X-Registry-Auth
	log     io.Writer
	fence   func(context.Context) error
}

// run makes every tag hold the image in the registry, uploading through
// the engine only when no tag holds it yet. Outputs: tags, digest, pushed.
func (p push) run(ctx context.Context) (stages.Outputs, error) {
	out := stages.Outputs{"tags": joinTags(p.tags)}
	ropts := p.reg.Options(ctx)

	// Probe every tag, side by side: which of them already hold this
	// image? Each is a round trip to the registry that the others need
	// not wait for.
	type probed struct {
		desc   *remote.Descriptor
		config string
		err    error
	}
	probes := make([]probed, len(p.tags))
	var wg sync.WaitGroup
	for i, tag := range p.tags {
		wg.Go(func() {
			probes[i].desc, probes[i].config, probes[i].err = p.probe(tag, ropts)
		})
	}
	wg.Wait()
	var have *remote.Descriptor
	var missing []name.Tag
	for i, tag := range p.tags {
		desc, config, err := probes[i].desc, probes[i].config, probes[i].err
		if err != nil {
			return nil, err
		}
		switch {
		case desc == nil:
			missing = append(missing, tag)
		case config == p.imageID:
			have = desc
		case strings.HasPrefix(tag.TagStr(), "git-"):
			// The commit tag follows the latest build of that commit.
			fmt.Fprintf(p.log, "%s holds another image (config %s); moving it to %s\n", tag, config, p.imageID)
			missing = append(missing, tag)
		default:
			return nil, stages.Permanent(fmt.Errorf("push %s: the tag already holds another image (config %s, built image %s): %w", tag, config, p.imageID, stages.ErrPublished))
		}
	}

	pushed := false
	if have == nil {
		// The engine uploads the layers it has and the registry lacks.
		first := missing[0]
		if err := checkFence(ctx, p.fence); err != nil {
			return nil, fmt.Errorf("push %s: %w", first, err)
		}
		digest, err := p.engine(ctx, first)
		if err != nil {
			return nil, err
		}
		desc, config, err := p.probe(first, ropts)
		if err != nil {
			return nil, err
		}
		if desc == nil || config != p.imageID || desc.Digest.String() != digest {
			return nil, fmt.Errorf("push %s: the registry does not hold the pushed image %s at %s after the push", first, p.imageID, digest)
		}
		have, missing, pushed = desc, missing[1:], true
	}
	for _, tag := range missing {
		// Tag by digest inside the registry: the manifest is copied, no
		// layer moves.
		if err := checkFence(ctx, p.fence); err != nil {
			return nil, fmt.Errorf("tag %s: %w", tag, err)
		}
		if err := remote.Tag(tag, have, ropts...); err != nil {
			return nil, p.registryError(tag, "tag "+tag.String()+" by digest", err)
		}
		fmt.Fprintf(p.log, "tagged %s as %s in the registry\n", have.Digest, tag)
	}
	if !pushed {
		fmt.Fprintf(p.log, "%s already in the registry as %s; nothing uploaded\n", p.imageID, have.Digest)
	}
	out["digest"] = have.Digest.String()
	out["pushed"] = fmt.Sprint(pushed)
	return out, nil
}

// fence confirms, right before a push or a retag, that the run still owns
// its leases.
func checkFence(ctx context.Context, fence func(context.Context) error) error {
	if fence == nil {
		return nil
	}
	return fence(ctx)
}

// builtImage finds the image ID to push: from the upstream build node of the
// same service, or by the labels docker-build puts on its images.
func builtImage(ctx context.Context, cli *client.Client, env *stages.Env, commit string) (string, error) {
	var ref string
	suffix := "[" + env.Item + "]"
	nodes := make([]string, 0, len(env.Inputs))
	for n := range env.Inputs {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, n := range nodes {
		if id := env.Inputs[n]["imageID"]; id != "" && strings.HasSuffix(n, suffix) {
			ref = id
			break
		}
	}
	if ref == "" {
		args := filters.NewArgs(
			filters.Arg("label", dockerbuild.LabelPipeline+"="+env.Spec.Name),
			filters.Arg("label", dockerbuild.LabelService+"="+env.Item),
			filters.Arg("label", dockerbuild.LabelCommit+"="+commit),
		)
		imgs, err := cli.ImageList(ctx, image.ListOptions{Filters: args})
		if err != nil {
			return "", fmt.Errorf("push %s: list built images: %w", env.Item, err)
		}
		if len(imgs) == 0 {
			return "", stages.Permanent(fmt.Errorf("push %s: no image built for commit %s (no upstream docker-build output, no labelled image)", env.Item, short(commit)))
		}
		slices.SortFunc(imgs, func(a, b image.Summary) int { return int(b.Created - a.Created) })
		ref = imgs[0].ID
	}
	insp, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("push %s: inspect image %s: %w", env.Item, ref, err)
	}
	return insp.ID, nil
}

// probe returns the descriptor and config digest the registry holds at tag,
// or nil when the tag does not exist.
func (p push) probe(tag name.Tag, ropts []remote.Option) (*remote.Descriptor, string, error) {
	desc, err := remote.Get(tag, ropts...)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			return nil, "", nil
		}
		return nil, "", p.registryError(tag, "look up "+tag.String(), err)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, "", p.registryError(tag, "read manifest of "+tag.String(), err)
	}
	config, err := img.ConfigName()
	if err != nil {
		return nil, "", p.registryError(tag, "read manifest of "+tag.String(), err)
	}
	return desc, config.String(), nil
}

// registryError wraps a registry error; refusals of the credentials are
// permanent, since another attempt sends the same ones.
func (p push) registryError(tag name.Tag, action string, err error) error {
	err = fmt.Errorf("%s: %w", action, err)
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
		return stages.Permanent(p.reg.Error(tag.RegistryStr(), err))
	}
	return p.reg.Redact(err)
}

// engine tags the image as tag in the engine and pushes it, streaming
// the engine's progress to the log, and returns the manifest digest.
func (p push) engine(ctx context.Context, tag name.Tag) (string, error) {
	if err := p.cli.ImageTag(ctx, p.imageID, tag.String()); err != nil {
		return "", fmt.Errorf("tag image %s as %s: %w", p.imageID, tag, err)
	}
	rc, err := p.cli.ImagePush(ctx, tag.String(), image.PushOptions{RegistryAuth: p.auth})
	if err != nil {
		return "", fmt.Errorf("push %s: %w", tag, err)
	}
	defer rc.Close()
	var digest string
	err = jsonmessage.DisplayJSONMessagesStream(rc, p.log, 0, false, func(m jsonmessage.JSONMessage) {
		var aux struct{ Digest string }
		if m.Aux != nil && json.Unmarshal(*m.Aux, &aux) == nil && aux.Digest != "" {
			digest = aux.Digest
		}
	})
	if err != nil {
		var je *jsonmessage.JSONError
		if errors.As(err, &je) && registry.IsAuthMessage(je.Message) {
			return "", stages.Permanent(p.reg.Error(tag.RegistryStr(), fmt.Errorf("push %s: %w", tag, err)))
		}
		return "", fmt.Errorf("push %s: %w", tag, err)
	}
	if digest == "" {
		return "", fmt.Errorf("push %s: the engine reported no digest", tag)
	}
	return digest, nil
}

var invalidTagChars = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// tagFor makes a version into a valid image tag: "1.2.0+meta" becomes
// "1.2.0-meta".
func tagFor(version string) string {
	if version == "" {
		return ""
	}
	t := invalidTagChars.ReplaceAllString(version, "-")
	if t[0] == '.' || t[0] == '-' {
		t = "v" + t
	}
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}

func commitTag(commit string) string {
	if commit == "" {
		return ""
	}
	return "git-" + short(commit)
}

func joinTags(tags []name.Tag) string {
	s := make([]string, len(tags))
	for i, t := range tags {
		s[i] = t.String()
	}
	return strings.Join(s, ",")
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

var (
	_ stages.Stage     = (*Stage)(nil)
	_ stages.Validator = (*Stage)(nil)
	_ stages.Doctor    = (*Stage)(nil)
)
