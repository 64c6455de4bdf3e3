package deploy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/sweepboard/release/stages"
	"github.com/sweepboard/release/stages/internal/registry"
)

func parseDigestRef(reg *registry.Client, ref string) (name.Digest, error) {
	d, err := name.NewDigest(ref, reg.NameOptions()...)
	if err != nil {
		return name.Digest{}, fmt.Errorf("image %s is not a digest reference: %w", ref, err)
	}
	return d, nil
}

// Retag gives every image of a release more tags in the registry, by
// digest: the manifest is fetched and put under each new tag, so no layer
// moves and the digest stays byte for byte the same. It is idempotent.
// Credentials come from the registry package's chain, read through getenv.
func Retag(ctx context.Context, spec *stages.Spec, images map[string]string, tags []string, getenv func(string) string) error {
	return retag(ctx, registry.New(spec, getenv), images, tags)
}

func retag(ctx context.Context, reg *registry.Client, images map[string]string, tags []string) error {
	opts := reg.Options(ctx)
	svcs := slices.Sorted(maps.Keys(images))
	// Every image side by side, and each image's tags too: a retag is a
	// manifest GET and a PUT per tag, round trips that wait on nothing
	// but the registry. The first error in service order is returned, as
	// one image after the other would have.
	errs := make([]error, len(svcs))
	var wg sync.WaitGroup
	for i, svc := range svcs {
		wg.Go(func() { errs[i] = retagOne(ctx, reg, opts, images[svc], tags) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// retagOne gives one image the tags, by digest.
func retagOne(ctx context.Context, reg *registry.Client, opts []remote.Option, ref string, tags []string) error {
	d, err := parseDigestRef(reg, ref)
	if err != nil {
		return err
	}
	var desc *remote.Descriptor
	err = reg.Do(ctx, "retag "+ref, func(context.Context) (err error) {
		desc, err = remote.Get(d, opts...)
		return err
	})
	if err != nil {
		return fmt.Errorf("retag %s: %w", ref, reg.Error(d.RegistryStr(), err))
	}
	errs := make([]error, len(tags))
	var wg sync.WaitGroup
	for i, tag := range tags {
		t := d.Context().Tag(tag)
		wg.Go(func() {
			err := reg.Do(ctx, "tag "+ref+" as "+t.String(), func(context.Context) error {
				return remote.Tag(t, desc, opts...)
			})
			if err != nil {
				errs[i] = fmt.Errorf("tag %s as %s: %w", ref, t, reg.Error(d.RegistryStr(), err))
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Missing returns the images of a release the registry no longer has, by
// service, checked with a HEAD of each digest.
func Missing(ctx context.Context, spec *stages.Spec, images map[string]string, getenv func(string) string) ([]string, error) {
	reg := registry.New(spec, getenv)
	opts := reg.Options(ctx)
	var missing []string
	for _, svc := range slices.Sorted(maps.Keys(images)) {
		ref := images[svc]
		d, err := parseDigestRef(reg, ref)
		if err != nil {
			return nil, err
		}
		err = reg.Do(ctx, "look up "+ref, func(context.Context) error {
			_, err := remote.Head(d, opts...)
			return err
		})
		var terr *transport.Error
		switch {
		case errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound:
			missing = append(missing, svc+" "+ref)
		case err != nil:
			return nil, fmt.Errorf("look up %s: %w", ref, reg.Error(d.RegistryStr(), err))
		}
	}
	return missing, nil
}
