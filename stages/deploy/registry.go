package deploy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sweepboard/release/pipeline/redact"
	"github.com/sweepboard/release/stages"
)

// registryOptions authenticate from the Docker config (the same entries a
// `docker login` writes) or, for the pipeline's registry, from
// RELEASE_REGISTRY_USER and RELEASE_REGISTRY_PASSWORD.
func registryOptions(ctx context.Context, getenv func(string) string) []remote.Option {
	var keychain authn.Keychain = authn.DefaultKeychain
	if user, pass := getenv("RELEASE_REGISTRY_USER"), getenv("RELEASE_REGISTRY_PASSWORD"); user != "" {
		keychain = authn.NewMultiKeychain(staticKeychain{authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})}, authn.DefaultKeychain)
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(keychain)}
	// One puller and one pusher for all the calls: each keeps its
	// authenticated transport per repository, instead of a ping and a token
	// exchange per call.
	if puller, err := remote.NewPuller(opts...); err == nil {
		opts = append(opts, remote.Reuse(puller))
	}
	if pusher, err := remote.NewPusher(opts...); err == nil {
		opts = append(opts, remote.Reuse(pusher))
	}
	return opts
}

type staticKeychain struct{ auth authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.auth, nil }

func parseDigestRef(ref string, insecure bool) (name.Digest, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	d, err := name.NewDigest(ref, opts...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("image %s is not a digest reference: %w", ref, err)
	}
	return d, nil
}

// Retag gives every image of a release more tags in the registry, by
// digest: the manifest is fetched and put under each new tag, so no layer
// moves and the digest stays byte for byte the same. It is idempotent.
func Retag(ctx context.Context, spec *stages.Spec, images map[string]string, tags []string, getenv func(string) string) error {
	opts := registryOptions(ctx, getenv)
	for _, svc := range sortedKeys(images) {
		d, err := parseDigestRef(images[svc], spec.Registry.Insecure)
		if err != nil {
			return err
		}
		desc, err := remote.Get(d, opts...)
		if err != nil {
			return fmt.Errorf("retag %s: %w", images[svc], registryError(err, registrySecrets(images[svc], spec.Registry.URL, getenv)))
		}
		for _, tag := range tags {
			t := d.Context().Tag(tag)
			if err := remote.Tag(t, desc, opts...); err != nil {
				return fmt.Errorf("tag %s as %s: %w", images[svc], t, registryError(err, registrySecrets(images[svc], spec.Registry.URL, getenv)))
			}
		}
	}
	return nil
}

// Missing returns the images of a release the registry no longer has, by
// service, checked with a HEAD of each digest.
func Missing(ctx context.Context, spec *stages.Spec, images map[string]string, getenv func(string) string) ([]string, error) {
	opts := registryOptions(ctx, getenv)
	var missing []string
	for _, svc := range sortedKeys(images) {
		d, err := parseDigestRef(images[svc], spec.Registry.Insecure)
		if err != nil {
			return nil, err
		}
		if _, err := remote.Head(d, opts...); err != nil {
			var terr *transport.Error
			if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
				missing = append(missing, svc+" "+images[svc])
				continue
			}
			return nil, fmt.Errorf("look up %s: %w", images[svc], registryError(err, registrySecrets(images[svc], spec.Registry.URL, getenv)))
		}
	}
	return missing, nil
}

// registryError keeps the registry's own words without secrets:
// go-containerregistry's errors carry the URL, the status and the answer's
// body, which a registry or proxy may have made echo the request's
// Authorization header.
func registryError(err error, secrets []string) error {
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusUnauthorized {
		return errors.New("unauthorized: check the registry credentials (docker login, or RELEASE_REGISTRY_USER and RELEASE_REGISTRY_PASSWORD)")
	}
	return redact.Error(err, secrets...)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
