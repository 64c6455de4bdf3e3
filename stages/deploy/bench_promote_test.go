package deploy

// BenchmarkPromote promotes the same release of 8 images two ways, side by
// side in one run, through a counting proxy in front of the registry on
// 127.0.0.1:5000:
//
//   - retag: Retag, registry-side by digest (a manifest GET and PUT per tag);
//   - docker: docker pull IMAGE@DIGEST, docker tag, docker push per image,
//     sequentially like a CI script, with the local copies removed first so
//     that the pull really pulls.
//
// Both give every image the same two tags (the environment and the
// version). The proxy counts the body bytes of blob GETs, PUTs and PATCHes
// (layers and configs) and of manifest requests. As root:
//
//	eval "$(fixtures/up.sh)"
//	go test -count=1 -run '^$' -bench BenchmarkPromote -benchtime=3x ./stages/deploy

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/sweepboard/release/stages"
)

// countingProxy is a reverse proxy to a registry that counts the bytes of
// blob and manifest bodies going either way.
type countingProxy struct {
	addr              string
	blobDown, blobUp  atomic.Int64 // layer and config bytes pulled and pushed
	manifests         atomic.Int64 // manifest bytes, both ways
	requests, uploads atomic.Int64
	srv               *http.Server
}

var (
	blobPath     = regexp.MustCompile(`^/v2/.+/blobs/sha256:[0-9a-f]{64}$`)
	uploadPath   = regexp.MustCompile(`^/v2/.+/blobs/uploads/`)
	manifestPath = regexp.MustCompile(`^/v2/.+/manifests/[^/]+$`)
)

func startCountingProxy(tb testing.TB, target string) *countingProxy {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &countingProxy{addr: l.Addr().String()}
	u := &url.URL{Scheme: "http", Host: target}
	rp := httputil.NewSingleHostReverseProxy(u)
	// The registry sees the proxy's address as Host, so the upload
	// locations it hands out point back through the proxy.
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		switch {
		case req.Method == http.MethodGet && blobPath.MatchString(req.URL.Path):
			resp.Body = &countingBody{ReadCloser: resp.Body, n: &p.blobDown}
		case req.Method == http.MethodGet && manifestPath.MatchString(req.URL.Path):
			resp.Body = &countingBody{ReadCloser: resp.Body, n: &p.manifests}
		}
		return nil
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		switch {
		case (r.Method == http.MethodPut || r.Method == http.MethodPatch) && uploadPath.MatchString(r.URL.Path):
			p.uploads.Add(1)
			r.Body = &countingBody{ReadCloser: r.Body, n: &p.blobUp}
		case r.Method == http.MethodPut && manifestPath.MatchString(r.URL.Path):
			r.Body = &countingBody{ReadCloser: r.Body, n: &p.manifests}
		}
		rp.ServeHTTP(w, r)
	})
	p.srv = &http.Server{Handler: h}
	go p.srv.Serve(l)
	tb.Cleanup(func() { p.srv.Close() })
	return p
}

func (p *countingProxy) reset() {
	p.blobDown.Store(0)
	p.blobUp.Store(0)
	p.manifests.Store(0)
	p.requests.Store(0)
	p.uploads.Store(0)
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// benchImage is one service image of the benchmark's release.
type benchImage struct {
	repo   string // e.g. benchpromote/svc1, without the registry
	digest string
	config string // the image id the engine knows it by
	size   int64  // compressed layer bytes
}

// benchImages pushes n single-layer images FROM scratch straight to the
// registry: each holds the static test server with a tail of its own, so no
// two share a layer and a pull of one gains nothing from another.
func benchImages(tb testing.TB, n int, id string) []benchImage {
	tb.Helper()
	bin, err := os.ReadFile(serverBinary(tb))
	if err != nil {
		tb.Fatal(err)
	}
	var out []benchImage
	for i := 1; i <= n; i++ {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		data := append(bytes.Clone(bin), fmt.Sprintf("\nsvc%d %s\n", i, id)...)
		if err := tw.WriteHeader(&tar.Header{Name: "server", Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			tb.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			tb.Fatal(err)
		}
		layerTar := buf.Bytes()
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(layerTar)), nil
		}, tarball.WithMediaType(types.DockerLayer))
		if err != nil {
			tb.Fatal(err)
		}
		img, err := mutate.AppendLayers(empty.Image, layer)
		if err != nil {
			tb.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			tb.Fatal(err)
		}
		cfg = cfg.DeepCopy()
		cfg.Architecture, cfg.OS = "amd64", "linux"
		cfg.Config.Entrypoint = []string{"/server"}
		cfg.Config.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
		if img, err = mutate.ConfigFile(img, cfg); err != nil {
			tb.Fatal(err)
		}
		img = mutate.MediaType(img, types.DockerManifestSchema2)
		img = mutate.ConfigMediaType(img, types.DockerConfigJSON)

		repo := fmt.Sprintf("benchpromote/svc%d", i)
		ref, err := name.NewTag(registryAddr+"/"+repo+":"+id, name.Insecure)
		if err != nil {
			tb.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			tb.Fatalf("push %s: %v", ref, err)
		}
		// The engine writes manifests indented by three spaces, and a
		// docker push of a pulled image puts its own rendering: tag the
		// image with that rendering, so that pull, tag and push ends at
		// the same digest and the two ways promote the same thing.
		m, err := img.Manifest()
		if err != nil {
			tb.Fatal(err)
		}
		raw, err := json.MarshalIndent(m, "", "   ")
		if err != nil {
			tb.Fatal(err)
		}
		if err := remote.Put(ref, engineManifest(raw)); err != nil {
			tb.Fatalf("put the manifest of %s: %v", ref, err)
		}
		digest, _, err := v1.SHA256(bytes.NewReader(raw))
		if err != nil {
			tb.Fatal(err)
		}
		config, err := img.ConfigName()
		if err != nil {
			tb.Fatal(err)
		}
		size, err := layer.Size()
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, benchImage{repo: repo, digest: digest.String(), config: config.String(), size: size})
	}
	return out
}

// engineManifest is a Docker schema 2 manifest as bytes.
type engineManifest []byte

func (r engineManifest) RawManifest() ([]byte, error) { return r, nil }

// removeLocal removes the engine's copies of the images, so that the next
// pull fetches every layer.
func removeLocal(tb testing.TB, imgs []benchImage) {
	tb.Helper()
	for _, img := range imgs {
		// An image the engine does not have is fine here.
		exec.Command("docker", "-H", host1, "rmi", "-f", img.config).Run()
		if err := exec.Command("docker", "-H", host1, "image", "inspect", img.config).Run(); err == nil {
			tb.Fatalf("docker rmi -f %s: the image is still there", img.config)
		}
	}
}

// dockerPromote is what a CI script without registry-side retag does.
func dockerPromote(tb testing.TB, reg string, imgs []benchImage, tags []string) {
	tb.Helper()
	for _, img := range imgs {
		src := reg + "/" + img.repo + "@" + img.digest
		docker(tb, "pull", "-q", src)
		for _, tag := range tags {
			dst := reg + "/" + img.repo + ":" + tag
			docker(tb, "tag", src, dst)
			docker(tb, "push", "-q", dst)
		}
	}
}

// checkTags checks that every image carries the tags at its digest.
func checkTags(tb testing.TB, imgs []benchImage, tags []string) {
	tb.Helper()
	for _, img := range imgs {
		for _, tag := range tags {
			if got := headDigest(tb, registryAddr+"/"+img.repo+":"+tag); got != img.digest {
				tb.Fatalf("%s:%s is %s, want %s", img.repo, tag, got, img.digest)
			}
		}
	}
}

func BenchmarkPromote(b *testing.B) {
	const n = 8
	needRegistry(b, registryAddr)
	needDockerCLI(b)
	b.Setenv("DOCKER_CONFIG", b.TempDir())
	ctx := context.Background()
	id := unique("bench")
	imgs := benchImages(b, n, id)
	var imageBytes int64
	for _, img := range imgs {
		imageBytes += img.size
	}
	proxy := startCountingProxy(b, registryAddr)
	spec := &stages.Spec{Name: "benchpromote", Registry: stages.ImageRegistry{URL: proxy.addr, Insecure: true}}
	refs := map[string]string{}
	for _, img := range imgs {
		refs[img.repo] = proxy.addr + "/" + img.repo + "@" + img.digest
	}
	b.Cleanup(func() { removeLocal(b, imgs) })

	var retagTime, dockerTime time.Duration
	var retagBlob, retagManifest, retagRequests, dockerDown, dockerUp, dockerManifest, dockerRequests int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		removeLocal(b, imgs)
		retagTags := []string{fmt.Sprintf("staging-%s-r%d", id, i), fmt.Sprintf("v1.%d.0-%s-r", i, id)}
		dockerTags := []string{fmt.Sprintf("staging-%s-d%d", id, i), fmt.Sprintf("v1.%d.0-%s-d", i, id)}
		proxy.reset()
		b.StartTimer()

		start := time.Now()
		if err := Retag(ctx, spec, refs, retagTags, noEnv); err != nil {
			b.Fatal(err)
		}
		retagTime += time.Since(start)
		retagBlob += proxy.blobDown.Load() + proxy.blobUp.Load()
		retagManifest += proxy.manifests.Load()
		retagRequests += proxy.requests.Load()

		proxy.reset()
		start = time.Now()
		dockerPromote(b, proxy.addr, imgs, dockerTags)
		dockerTime += time.Since(start)
		dockerDown += proxy.blobDown.Load()
		dockerUp += proxy.blobUp.Load()
		dockerManifest += proxy.manifests.Load()
		dockerRequests += proxy.requests.Load()

		b.StopTimer()
		checkTags(b, imgs, retagTags)
		checkTags(b, imgs, dockerTags)
		b.StartTimer()
	}
	b.StopTimer()

	per := func(v int64) float64 { return float64(v) / float64(b.N) }
	b.ReportMetric(float64(retagTime.Milliseconds())/float64(b.N), "retag-ms/promote")
	b.ReportMetric(float64(dockerTime.Milliseconds())/float64(b.N), "docker-ms/promote")
	b.ReportMetric(float64(dockerTime)/float64(retagTime), "speedup-x")
	b.ReportMetric(per(retagBlob), "retag-blob-B/promote")
	b.ReportMetric(per(dockerDown+dockerUp), "docker-blob-B/promote")
	b.ReportMetric(per(dockerDown), "docker-pulled-B/promote")
	b.ReportMetric(per(dockerUp), "docker-pushed-B/promote")
	b.ReportMetric(per(retagManifest), "retag-manifest-B/promote")
	b.ReportMetric(per(dockerManifest), "docker-manifest-B/promote")
	b.ReportMetric(per(retagRequests), "retag-requests/promote")
	b.ReportMetric(per(dockerRequests), "docker-requests/promote")
	b.ReportMetric(float64(imageBytes), "layer-B/release")
	b.Logf("%d images, %d compressed layer bytes in all; per promote: retag %v, %d blob bytes; docker %v, %d blob bytes pulled, %d pushed",
		n, imageBytes, retagTime/time.Duration(b.N), retagBlob/int64(b.N), dockerTime/time.Duration(b.N), dockerDown/int64(b.N), dockerUp/int64(b.N))
	// Not a timing: a registry-side retag must not move a single blob.
	if retagBlob != 0 {
		b.Errorf("retag moved %d blob bytes, want 0", retagBlob)
	}
}
