package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"

	"github.com/sweepboard/release/stages/deploy/target"
)

// Labels put on every container a deploy starts. They are how a later deploy
// or `release status` finds the containers of a pipeline's environment.
const (
	LabelPipeline    = target.LabelPipeline
	LabelEnvironment = target.LabelEnvironment
	LabelService     = target.LabelService
	LabelVersion     = target.LabelVersion
	LabelDigest      = target.LabelDigest
	LabelRunID       = target.LabelRunID
	LabelConfig      = target.LabelConfig
)

// want is a service as this deploy wants it in its environment.
func (d *deployer) want(name string) (target.Service, error) {
	cfg := d.env.Spec.ServiceIn(d.env.Environment, name)
	envList := make([]string, 0, len(cfg.Env))
	for k, v := range cfg.Service.Env {
		envList = append(envList, k+"="+v)
	}
	slices.Sort(envList)
	s := target.Service{
		Name:        name,
		Config:      cfg,
		Image:       d.images[name],
		Env:         envList,
		StopTimeout: d.stage.stopTimeout(),
	}
	s.Hash = configHash(s)
	s.Labels = map[string]string{
		LabelPipeline:    d.pipeline,
		LabelEnvironment: d.env.Environment,
		LabelService:     name,
		LabelVersion:     d.env.Version,
		LabelDigest:      s.Image,
		LabelRunID:       d.env.RunID,
		LabelConfig:      s.Hash,
	}
	return s, nil
}

// configHash identifies what makes two containers of a service the same:
// a running one with the same hash is adopted instead of replaced.
func configHash(s target.Service) string {
	b, _ := json.Marshal(struct {
		Image   string
		Env     []string
		Port    int
		Volumes []string
	}{s.Image, s.Env, s.Port(), s.Config.Service.Volumes})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}
