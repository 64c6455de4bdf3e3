package registry

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/registry"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/sweepboard/release/stages"
)

// The pipeline's variables that carry the credentials of its registry.
const (
	EnvUser     = "RELEASE_REGISTRY_USER"
	EnvPassword = stages.EnvRegistryPassword
)

// hubKey is the key and server address Docker uses for Docker Hub.
const hubKey = "https://index.docker.io/v1/"

// DefaultHelperTimeout bounds one run of a credential helper.
const DefaultHelperTimeout = 30 * time.Second

// Credentials are what the chain found for one registry. The zero
// Username, Password and tokens are anonymous access.
type Credentials struct {
	Registry string // host[:port], as Host gives it
	// From names where they came from, for messages: the variables, the
	// Docker config file, or the credential helper; "" when none were
	// found.
	From          string
	Username      string
	Password      string
	IdentityToken string
	RegistryToken string
}

// Anonymous reports whether no credentials were found.
func (c Credentials) Anonymous() bool {
	return c.Username == "" && c.Password == "" && c.IdentityToken == "" && c.RegistryToken == ""
}

// Authenticator is c for go-containerregistry's remote operations.
func (c Credentials) Authenticator() authn.Authenticator {
	if c.Anonymous() {
		return authn.Anonymous
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: c.Username, Password: c.Password,
		IdentityToken: c.IdentityToken, RegistryToken: c.RegistryToken,
	})
}

// EngineAuth is c as the X-Registry-Auth header a Docker engine wants to
// push or pull. Anonymous access is an empty JSON object: the engine wants
// one even then for a push.
func (c Credentials) EngineAuth() string {
	ac := registry.AuthConfig{}
	if !c.Anonymous() {
		ac = registry.AuthConfig{
			Username: c.Username, Password: c.Password,
			IdentityToken: c.IdentityToken, RegistryToken: c.RegistryToken,
			ServerAddress: c.Registry,
		}
	}
	s, err := registry.EncodeAuthConfig(ac)
	if err != nil {
		// Marshalling a struct of strings does not fail.
		panic(err)
	}
	return s
}

// Secrets are the secrets c holds, in the forms they travel in, for
// redact.
func (c Credentials) Secrets() []string {
	if c.Anonymous() {
		return nil
	}
	out := []string{c.Password, c.IdentityToken, c.RegistryToken, c.EngineAuth()}
	if c.Password != "" {
		out = append(out, base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password)))
	}
	return out
}

// Chain finds the credentials for a registry, in this order:
//
//  1. for the pipeline's registry, RELEASE_REGISTRY_USER (when set) and
//     RELEASE_REGISTRY_PASSWORD;
//  2. the Docker config ($DOCKER_CONFIG/config.json, else
//     $HOME/.docker/config.json), as the docker CLI reads it: the
//     registry's credHelpers entry, else credsStore, each by running
//     docker-credential-NAME get; with neither, the registry's auths
//     entry;
//  3. else none: anonymous access.
//
// A helper that has no credentials for the registry means none, as with
// the docker CLI. A Docker config that cannot be read, or a helper that
// fails, is an error: the chain does not go on to anonymous access and
// hide the cause.
type Chain struct {
	// Pipeline is the pipeline's registry (registry.url); the variables
	// are its credentials and no other registry's.
	Pipeline string
	// Getenv reads the variables, DOCKER_CONFIG, HOME and PATH (where the
	// helpers are looked up).
	Getenv func(string) string
	// HelperTimeout bounds one run of a credential helper; 0 is
	// DefaultHelperTimeout.
	HelperTimeout time.Duration
}

// Lookup returns the credentials for registry (host[:port]). Its errors
// name files and helpers, never secrets.
func (ch Chain) Lookup(ctx context.Context, reg string) (Credentials, error) {
	host := Host(reg)
	getenv := ch.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	none := Credentials{Registry: host}
	if ch.Pipeline != "" && host == Host(ch.Pipeline) {
		if user := getenv(EnvUser); user != "" {
			return Credentials{Registry: host, From: EnvUser + " and " + EnvPassword, Username: user, Password: getenv(EnvPassword)}, nil
		}
	}
	cfg, path, err := readDockerConfig(getenv)
	if err != nil || cfg == nil {
		return none, err
	}
	server := host
	if host == "docker.io" {
		server = hubKey
	}
	helper := cmp.Or(cfg.CredHelpers[hostname(server)], cfg.CredsStore)
	if helper != "" {
		c, found, err := ch.runHelper(ctx, getenv, helper, server)
		if err != nil {
			return none, fmt.Errorf("read credentials for registry %s: %w", host, err)
		}
		if !found {
			return none, nil
		}
		c.Registry = host
		return c, nil
	}
	entry, key, ok := cfg.auth(server)
	if !ok {
		return none, nil
	}
	c := Credentials{Registry: host, From: path, Username: entry.Username, Password: entry.Password,
		IdentityToken: entry.IdentityToken, RegistryToken: entry.RegistryToken}
	if entry.Auth != "" {
		dec, err := base64.StdEncoding.DecodeString(entry.Auth)
		user, pass, ok := strings.Cut(string(dec), ":")
		if err != nil || !ok {
			return none, fmt.Errorf("read docker config %s: auth of %s is not base64 of user:password", path, key)
		}
		c.Username, c.Password = user, pass
	}
	return c, nil
}

// dockerConfig is the part of a Docker config file the chain reads.
type dockerConfig struct {
	Auths       map[string]authEntry `json:"auths"`
	CredHelpers map[string]string    `json:"credHelpers"`
	CredsStore  string               `json:"credsStore"`
}

type authEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// auth is the auths entry of server: the entry of that exact key, else
// the first, in key order, whose host is server's ("https://host/v2/").
func (c *dockerConfig) auth(server string) (authEntry, string, bool) {
	if e, ok := c.Auths[server]; ok {
		return e, server, true
	}
	keys := make([]string, 0, len(c.Auths))
	for k := range c.Auths {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if hostname(k) == hostname(server) {
			return c.Auths[k], k, true
		}
	}
	return authEntry{}, "", false
}

// readDockerConfig reads $DOCKER_CONFIG/config.json, else
// $HOME/.docker/config.json; nil when there is none.
func readDockerConfig(getenv func(string) string) (*dockerConfig, string, error) {
	dir := getenv("DOCKER_CONFIG")
	if dir == "" {
		home := getenv("HOME")
		if home == "" {
			return nil, "", nil
		}
		dir = filepath.Join(home, ".docker")
	}
	path := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, nil
	}
	if err != nil {
		return nil, path, fmt.Errorf("read docker config %s: %w", path, err)
	}
	var cfg dockerConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		// The decoder's message may quote the file, secrets included.
		return nil, path, fmt.Errorf("read docker config %s: invalid JSON", path)
	}
	return &cfg, path, nil
}

// notFound is what a credential helper prints when it has nothing for the
// server (docker-credential-helpers' ErrCredentialsNotFound).
const notFound = "credentials not found in native keychain"

// runHelper runs docker-credential-NAME get with server on its stdin, as
// the docker CLI does, within the helper timeout.
func (ch Chain) runHelper(ctx context.Context, getenv func(string) string, name, server string) (Credentials, bool, error) {
	prog := "docker-credential-" + name
	path, err := lookPath(prog, getenv("PATH"))
	if err != nil {
		return Credentials{}, false, fmt.Errorf("credential helper %s: %w", prog, err)
	}
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(ch.HelperTimeout, DefaultHelperTimeout))
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "get")
	cmd.Stdin = strings.NewReader(server)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	out := strings.TrimSpace(stdout.String())
	if err != nil {
		if out == notFound {
			return Credentials{}, false, nil
		}
		if ctx.Err() != nil {
			return Credentials{}, false, fmt.Errorf("credential helper %s get: no answer within %s", prog, cmp.Or(ch.HelperTimeout, DefaultHelperTimeout))
		}
		msg := firstLine(cmp.Or(out, strings.TrimSpace(stderr.String())))
		return Credentials{}, false, fmt.Errorf("credential helper %s get: %v: %s", prog, err, msg)
	}
	var answer struct {
		Username string `json:"Username"`
		Secret   string `json:"Secret"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &answer); err != nil {
		return Credentials{}, false, fmt.Errorf("credential helper %s get: its answer is not JSON", prog)
	}
	if answer.Username == "" && answer.Secret == "" {
		return Credentials{}, false, nil
	}
	c := Credentials{From: "credential helper " + prog, Username: answer.Username, Password: answer.Secret}
	if answer.Username == "<token>" {
		// The helpers' way to hold an identity token.
		c.Username, c.Password, c.IdentityToken = "", "", answer.Secret
	}
	return c, true, nil
}

// lookPath finds an executable file in the directories of path.
func lookPath(file, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in PATH (%s)", path)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// Host is a registry as host[:port]: a scheme and a path are dropped
// ("https://127.0.0.1:5001/v2/" is "127.0.0.1:5001"), and Docker Hub's
// names are "docker.io".
func Host(reg string) string {
	host := hostname(reg)
	switch host {
	case "index.docker.io", "registry-1.docker.io", "docker.io":
		return "docker.io"
	}
	return host
}

// hostname is the docker CLI's ConvertToHostname.
func hostname(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	host, _, _ := strings.Cut(s, "/")
	return host
}
