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
// Credentials come from RELEASE_REGISTRY_USER and RELEASE_REGISTRY_PASSWORD
// when both are set, otherwise from the Docker config (~/.docker/config.json,
// DOCKER_CONFIG, credential helpers). They never reach the log, the outputs
// or an error: a registry or proxy that echoes them in an error body is
// redacted.
package dockerpush

import (
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
	"syscall"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/sweepboard/release/pipeline/redact"
	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/dockerbuild"
	"github.com/sweepboard/release/stages/internal/engine"
)

// Kind registers the stage.
var Kind = stages.Kind{Name: "docker-push", New: func() stages.Stage { return &Stage{} }}

// The variables that carry registry credentials, when the Docker config
// does not.
const (
	EnvUser     = "RELEASE_REGISTRY_USER"
	EnvPassword = stages.EnvRegistryPassword
)

// Stage pushes the image of env.Item.
type Stage struct {
	// Host is the engine holding the built image (the one docker-build
	// used); DOCKER_HOST or the local socket when empty.
	Host string `yaml:"host"`
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

// Doctor checks that the registry answers with the credentials at hand.
func (s *Stage) Doctor(ctx context.Context, spec *stages.Spec) []stages.Check {
	check := stages.Check{Name: "registry " + spec.Registry.URL}
	reg, err := name.NewRegistry(spec.Registry.URL, regOpts(spec)...)
	if err == nil {
		var auth authn.Authenticator
		if auth, err = authenticator(reg); err == nil {
			_, err = transport.NewWithContext(ctx, reg, auth, http.DefaultTransport, []string{reg.Scope(transport.PullScope)})
			err = redact.Error(err, credentials(auth)...)
		}
	}
	if err != nil {
		check.Err = fmt.Errorf("reach registry %s: %w", spec.Registry.URL, err)
	}
	return []stages.Check{check}
}

func (s *Stage) host() string { return engine.HostOr(s.Host) }

// Run pushes the image built for env.Item. Outputs: image
// (REGISTRY/IMAGE@sha256:…), digest, tags, pushed ("false" when the
// registry already had it).
func (s *Stage) Run(ctx context.Context, env *stages.Env) (_ stages.Outputs, err error) {
	// The registry's and the engine's errors quote the registry's answer,
	// which may echo the request's Authorization header.
	var creds []string
	defer func() { err = redact.Error(err, creds...) }()
	svcName := env.Item
	svc, ok := env.Spec.Services[svcName]
	if !ok {
		return nil, stages.Permanent(fmt.Errorf("push %q: no such service in the pipeline file", svcName))
	}
	if err := s.Validate(env.Spec); err != nil {
		return nil, stages.Permanent(err)
	}
	commit := env.Commits[svc.Repo]
	logw := env.Log
	if logw == nil {
		logw = io.Discard
	}
	logger := env.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	repoName := env.Spec.Registry.URL + "/" + orDefault(svc.Image, svcName)
	repo, err := name.NewRepository(repoName, regOpts(env.Spec)...)
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

	cli, err := engine.Connect(s.host())
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	imageID, err := builtImage(ctx, cli, env, commit)
	if err != nil {
		return nil, err
	}

	auth, err := authenticator(repo.Registry)
	if err != nil {
		return nil, err
	}
	creds = credentials(auth)
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth)}

	// A registry that restarts refuses or drops connections for a while.
	// The push is tried again from the probe, which finds whatever an
	// earlier try completed, so nothing is uploaded or tagged twice.
	wait := RetryBackoff
	for attempt := 1; ; attempt++ {
		out, err := push(ctx, cli, imageID, tags, auth, ropts, logw, env.Fence)
		if err == nil {
			ref := repo.Digest(out["digest"])
			logger.Info("image pushed", "service", svcName, "image", ref.String(), "uploaded", out["pushed"] == "true")
			out["image"] = ref.String()
			return out, nil
		}
		if !transient(err) {
			return nil, err
		}
		if attempt == RetryAttempts {
			what := "registry " + repo.RegistryStr()
			if client.IsErrConnectionFailed(err) {
				what = "docker engine " + s.host()
			}
			return nil, fmt.Errorf("push %s: %s unreachable, gave up after %d attempts: %w", tags[0], what, attempt, err)
		}
		fmt.Fprintf(logw, "attempt %d of %d to push %s failed: %v; trying again in %s\n", attempt, RetryAttempts, tags[0], err, wait)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("push %s: %w (after: %w)", tags[0], ctx.Err(), err)
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// How often a push that cannot reach the registry is tried, and the wait
// after the first try, doubling after each. The engine has retried each
// layer upload itself (five tries over 50s) before it reports a failure.
const (
	RetryAttempts = 3
	RetryBackoff  = 2 * time.Second
)

// push makes every tag hold imageID in the registry, uploading through the
// engine only when no tag holds it yet. Outputs: tags, digest, pushed.
func push(ctx context.Context, cli *client.Client, imageID string, tags []name.Tag, auth authn.Authenticator, ropts []remote.Option, logw io.Writer, fence func(context.Context) error) (stages.Outputs, error) {
	out := stages.Outputs{"tags": joinTags(tags)}

	// Probe every tag: which of them already hold this image?
	var have *remote.Descriptor
	var missing []name.Tag
	for _, tag := range tags {
		desc, config, err := probe(tag, ropts)
		if err != nil {
			return nil, err
		}
		switch {
		case desc == nil:
			missing = append(missing, tag)
		case config == imageID:
			have = desc
		case strings.HasPrefix(tag.TagStr(), "git-"):
			// The commit tag follows the latest build of that commit.
			fmt.Fprintf(logw, "%s holds another image (config %s); moving it to %s\n", tag, config, imageID)
			missing = append(missing, tag)
		default:
			return nil, stages.Permanent(fmt.Errorf("push %s: the tag already holds another image (config %s, built image %s): %w", tag, config, imageID, stages.ErrPublished))
		}
	}

	pushed := false
	if have == nil {
		// The engine uploads the layers it has and the registry lacks.
		first := missing[0]
		if err := checkFence(ctx, fence); err != nil {
			return nil, fmt.Errorf("push %s: %w", first, err)
		}
		digest, err := enginePush(ctx, cli, imageID, first, auth, logw)
		if err != nil {
			return nil, err
		}
		desc, config, err := probe(first, ropts)
		if err != nil {
			return nil, err
		}
		if desc == nil || config != imageID || desc.Digest.String() != digest {
			return nil, fmt.Errorf("push %s: the registry does not hold the pushed image %s at %s after the push", first, imageID, digest)
		}
		have, missing, pushed = desc, missing[1:], true
	}
	for _, tag := range missing {
		// Tag by digest inside the registry: the manifest is copied, no
		// layer moves.
		if err := checkFence(ctx, fence); err != nil {
			return nil, fmt.Errorf("tag %s: %w", tag, err)
		}
		if err := remote.Tag(tag, have, ropts...); err != nil {
			return nil, registryError("tag "+tag.String()+" by digest", err)
		}
		fmt.Fprintf(logw, "tagged %s as %s in the registry\n", have.Digest, tag)
	}
	if !pushed {
		fmt.Fprintf(logw, "%s already in the registry as %s; nothing uploaded\n", imageID, have.Digest)
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

// transient reports whether err says the registry (or the engine) cannot be
// reached for now: a refused, reset or dropped connection, seen here or
// reported by the engine as text. Another try may succeed.
func transient(err error) bool {
	if stages.IsPermanent(err) {
		return false
	}
	if client.IsErrConnectionFailed(err) {
		return true
	}
	for _, target := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE, io.ErrUnexpectedEOF, io.EOF} {
		if errors.Is(err, target) {
			return true
		}
	}
	var je *jsonmessage.JSONError
	if errors.As(err, &je) {
		for _, s := range []string{"connection refused", "connection reset by peer", "broken pipe", "unexpected EOF", ": EOF", "i/o timeout"} {
			if strings.Contains(je.Message, s) {
				return true
			}
		}
	}
	return false
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
func probe(tag name.Tag, ropts []remote.Option) (*remote.Descriptor, string, error) {
	desc, err := remote.Get(tag, ropts...)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			return nil, "", nil
		}
		return nil, "", registryError("look up "+tag.String(), err)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, "", registryError("read manifest of "+tag.String(), err)
	}
	config, err := img.ConfigName()
	if err != nil {
		return nil, "", registryError("read manifest of "+tag.String(), err)
	}
	return desc, config.String(), nil
}

// registryError wraps a registry error; refusals of the credentials are
// permanent, since another attempt sends the same ones.
func registryError(action string, err error) error {
	err = fmt.Errorf("%s: %w", action, err)
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
		return stages.Permanent(fmt.Errorf("%w (check %s/%s or the Docker config's credentials for this registry)", err, EnvUser, EnvPassword))
	}
	return err
}

// enginePush tags the image as tag in the engine and pushes it, streaming
// the engine's progress to logw, and returns the manifest digest.
func enginePush(ctx context.Context, cli *client.Client, imageID string, tag name.Tag, auth authn.Authenticator, logw io.Writer) (string, error) {
	if err := cli.ImageTag(ctx, imageID, tag.String()); err != nil {
		return "", fmt.Errorf("tag image %s as %s: %w", imageID, tag, err)
	}
	header, err := engineAuth(auth, tag.RegistryStr())
	if err != nil {
		return "", err
	}
	rc, err := cli.ImagePush(ctx, tag.String(), image.PushOptions{RegistryAuth: header})
	if err != nil {
		return "", fmt.Errorf("push %s: %w", tag, err)
	}
	defer rc.Close()
	var digest string
	err = jsonmessage.DisplayJSONMessagesStream(rc, logw, 0, false, func(m jsonmessage.JSONMessage) {
		var aux struct{ Digest string }
		if m.Aux != nil && json.Unmarshal(*m.Aux, &aux) == nil && aux.Digest != "" {
			digest = aux.Digest
		}
	})
	if err != nil {
		var je *jsonmessage.JSONError
		if errors.As(err, &je) && isAuthMessage(je.Message) {
			return "", stages.Permanent(fmt.Errorf("push %s: %s (check %s/%s or the Docker config's credentials for this registry)", tag, je.Message, EnvUser, EnvPassword))
		}
		return "", fmt.Errorf("push %s: %w", tag, err)
	}
	if digest == "" {
		return "", fmt.Errorf("push %s: the engine reported no digest", tag)
	}
	return digest, nil
}

func isAuthMessage(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "unauthorized") || strings.Contains(m, "authentication required") || strings.Contains(m, "denied")
}

// authenticator returns the credentials for reg: the environment's, then
// the Docker config's, else anonymous.
func authenticator(reg name.Registry) (authn.Authenticator, error) {
	user, pass := os.Getenv(EnvUser), os.Getenv(EnvPassword)
	if user != "" && pass != "" {
		return &authn.Basic{Username: user, Password: pass}, nil
	}
	auth, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil {
		// The keychain's errors name files and helpers, never secrets.
		return nil, fmt.Errorf("read credentials for registry %s from the Docker config: %w", reg, err)
	}
	return auth, nil
}

// credentials are the secrets auth holds, for redact.
func credentials(auth authn.Authenticator) []string {
	cfg, err := authn.Authorization(context.Background(), auth)
	if err != nil {
		return nil
	}
	return []string{cfg.Password, cfg.Auth, cfg.IdentityToken, cfg.RegistryToken}
}

// engineAuth is the X-Registry-Auth value for the engine. The engine wants
// one even for anonymous pushes: an empty JSON object.
func engineAuth(auth authn.Authenticator, server string) (string, error) {
	cfg, err := authn.Authorization(context.Background(), auth)
	if err != nil {
		return "", fmt.Errorf("read credentials for registry %s: %w", server, err)
	}
	return registry.EncodeAuthConfig(registry.AuthConfig{
		Username:      cfg.Username,
		Password:      cfg.Password,
		Auth:          cfg.Auth,
		IdentityToken: cfg.IdentityToken,
		RegistryToken: cfg.RegistryToken,
		ServerAddress: server,
	})
}

func regOpts(spec *stages.Spec) []name.Option {
	if spec.Registry.Insecure {
		return []name.Option{name.Insecure}
	}
	return nil
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
