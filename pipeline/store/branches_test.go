package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
)

// TestMigration5 opens a store at schema 2 with a deployment in it: the
// rows from before migration 5 read back without refs, and a hotfix run's
// refs and a branch deployment's refs and commits are kept from then on.
func TestMigration5(t *testing.T) {
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for name, old := range map[string]func(t *testing.T) (string, func(q string) error){
		"sqlite": func(t *testing.T) (string, func(string) error) {
			raw, dsn := schema2SQLite(t)
			return dsn, func(q string) error { _, err := raw.Exec(q); return err }
		},
		"postgres": func(t *testing.T) (string, func(string) error) {
			raw, dsn := schema2Postgres(t)
			return dsn, func(q string) error { _, err := raw.Exec(q); return err }
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dsn, exec := old(t)
			if err := exec(`INSERT INTO deployments (environment, version, run_id, kind, images, at) VALUES ('dev', '1.3.0', 'r0', 'run', '{"api":"a@sha256:1"}', '2026-02-01T10:05:00Z')`); err != nil {
				t.Fatalf("seed schema 2: %v", err)
			}
			s, err := store.Open(ctx, dsn)
			if err != nil {
				t.Fatalf("open a schema 2 store: %v", err)
			}
			defer s.Close()

			r0, err := s.Run(ctx, "r0")
			if err != nil {
				t.Fatal(err)
			}
			if r0.Refs != nil {
				t.Errorf("r0 after migration 5: refs %v, want none", r0.Refs)
			}
			ds, err := s.Deployments(ctx, "dev", 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != 1 || ds[0].Refs != nil || ds[0].Commits != nil || ds[0].Branch() {
				t.Fatalf("deployments after migration 5: %+v, want the 1.3.0 one without refs", ds)
			}

			hot := &pipeline.Run{ID: "r2", Kind: "run", Pipeline: "p", Version: "1.3.1", Status: pipeline.Pending, PlanHash: "h",
				Params: map[string]string{}, StartedAt: at, Refs: map[string]string{"api": "release/1.3"}}
			if err := s.CreateRun(ctx, hot); err != nil {
				t.Fatal(err)
			}
			hot.Refs["web"] = "release/1.3"
			if err := s.SaveRun(ctx, hot); err != nil {
				t.Fatal(err)
			}
			got, err := s.Run(ctx, "r2")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(map[string]string{"api": "release/1.3", "web": "release/1.3"}, got.Refs); diff != "" {
				t.Errorf("refs of a hotfix run (-want +got):\n%s", diff)
			}

			branch := &pipeline.Deployment{Environment: "dev", RunID: "r3", Kind: pipeline.KindDeploy, At: at,
				Images:  map[string]string{"api": "a@sha256:2"},
				Refs:    map[string]string{"api": "feature/login"},
				Commits: map[string]string{"api": "abc", "web": "def"}}
			if err := s.RecordDeployment(ctx, branch); err != nil {
				t.Fatal(err)
			}
			ds, err = s.Deployments(ctx, "dev", 1)
			if err != nil {
				t.Fatal(err)
			}
			branch.Seq = ds[0].Seq
			if diff := cmp.Diff([]*pipeline.Deployment{branch}, ds); diff != "" {
				t.Errorf("a branch deployment read back (-want +got):\n%s", diff)
			}
			if !ds[0].Branch() {
				t.Error("the branch deployment does not say it is one")
			}
		})
	}
}
