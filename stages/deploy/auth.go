package deploy

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/registry"
)

// registryAuth returns the X-Registry-Auth value an engine needs to pull
// ref: for the pipeline's own registry (pipelineRegistry, host[:port]),
// RELEASE_REGISTRY_USER and RELEASE_REGISTRY_PASSWORD when set; otherwise
// the Docker client config ($DOCKER_CONFIG/config.json, or
// ~/.docker/config.json); "" when neither has an entry for the registry.
// Errors never carry the credentials.
func registryAuth(ref, pipelineRegistry string, getenv func(string) string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("parse image reference %s: %w", ref, err)
	}
	domain := reference.Domain(named)
	if user := getenv("RELEASE_REGISTRY_USER"); user != "" && domain == registryHost(pipelineRegistry) {
		return registry.EncodeAuthConfig(registry.AuthConfig{
			Username: user, Password: getenv("RELEASE_REGISTRY_PASSWORD"), ServerAddress: domain,
		})
	}
	dir := getenv("DOCKER_CONFIG")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", nil
		}
		dir = filepath.Join(home, ".docker")
	}
	path := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read docker config %s: %w", path, err)
	}
	var cfg struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Username      string `json:"username"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("read docker config %s: invalid JSON", path)
	}
	for key, a := range cfg.Auths {
		if registryHost(key) != domain {
			continue
		}
		ac := registry.AuthConfig{
			Username:      a.Username,
			Password:      a.Password,
			IdentityToken: a.IdentityToken,
			ServerAddress: domain,
		}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			user, pass, ok := strings.Cut(string(dec), ":")
			if err != nil || !ok {
				return "", fmt.Errorf("read docker config %s: auth of %s is not base64 of user:password", path, key)
			}
			ac.Username, ac.Password = user, pass
		}
		return registry.EncodeAuthConfig(ac)
	}
	return "", nil
}

// authSecrets are the secrets in an X-Registry-Auth value, for redact.
func authSecrets(xRegistryAuth string) []string {
	if xRegistryAuth == "" {
		return nil
	}
	secrets := []string{xRegistryAuth}
	if ac, err := registry.DecodeAuthConfig(xRegistryAuth); err == nil {
		secrets = append(secrets, ac.Password, ac.Auth, ac.IdentityToken, ac.RegistryToken)
	}
	return secrets
}

// registrySecrets are the credentials registryAuth finds for the
// registry of ref, for redact.
func registrySecrets(ref, pipelineRegistry string, getenv func(string) string) []string {
	auth, err := registryAuth(ref, pipelineRegistry, getenv)
	if err != nil {
		return []string{getenv("RELEASE_REGISTRY_PASSWORD")}
	}
	return append(authSecrets(auth), getenv("RELEASE_REGISTRY_PASSWORD"))
}

// registryHost turns a key of the config's auths ("127.0.0.1:5001",
// "https://127.0.0.1:5001/v2/") into the registry's host[:port].
func registryHost(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	host, _, _ := strings.Cut(key, "/")
	if host == "index.docker.io" || host == "registry-1.docker.io" {
		return "docker.io"
	}
	return host
}
