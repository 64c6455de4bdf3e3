package githubrelease

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sweepboard/release/fixtures/fakegithub"
	"github.com/sweepboard/release/fixtures/gitserver"
	"github.com/sweepboard/release/stages"
)

const token = "ghp_stage_test_token"

func setup(t *testing.T) (*stages.Env, *fakegithub.Server) {
	t.Helper()
	root := t.TempDir()
	fake := fakegithub.New(token)
	t.Setenv("TEST_GITHUB_TOKEN", token)
	spec := &stages.Spec{
		Name: "t", Dir: root, Repos: map[string]stages.Repo{},
		GitHub: stages.GitHub{Owner: "sweepboard", APIURL: fake.Start(t), TokenEnv: "TEST_GITHUB_TOKEN"},
	}
	commits := map[string]string{}
	for _, name := range []string{"api", "web"} {
		_, head := gitserver.MakeRepo(t, root, name, "feat: init", "fix: "+name+" bug")
		spec.Repos[name] = stages.Repo{URL: name + ".git"}
		commits[name] = head
	}
	return &stages.Env{
		RunID: "r1", Version: "0.1.0", Node: "notes", Stage: "notes",
		Spec: spec, WorkDir: filepath.Join(root, ".release"), Commits: commits, Log: &bytes.Buffer{},
	}, fake
}

func TestRunCreatesThenAdopts(t *testing.T) {
	ctx := context.Background()
	env, fake := setup(t)
	fake.Inject(fakegithub.Fault{Kind: fakegithub.DropResponse, Method: "POST", Path: "/web/"})
	out, err := Kind.New().Run(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	api, web := fake.Releases("sweepboard", "api"), fake.Releases("sweepboard", "web")
	if len(api) != 1 || len(web) != 1 {
		t.Fatalf("releases: api %d, web %d; want one each", len(api), len(web))
	}
	want := stages.Outputs{
		"api": "created", "api.id": "1001", "api.url": api[0].HTMLURL,
		"web": "adopted", "web.id": "1002", "web.url": web[0].HTMLURL,
	}
	if api[0].ID != 1001 {
		want["api.id"], want["web.id"] = "1002", "1001"
	}
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("outputs (-want +got):\n%s", diff)
	}
	if !strings.Contains(api[0].Body, "- api bug (") {
		t.Errorf("api body:\n%s", api[0].Body)
	}
	mutations := fake.Mutations()

	out2, err := Kind.New().Run(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	if out2["api"] != "adopted" || out2["web"] != "adopted" || out2["api.url"] != out["api.url"] {
		t.Errorf("re-run outputs = %v", out2)
	}
	if fake.Mutations() != mutations {
		t.Errorf("re-run made %d mutating requests", fake.Mutations()-mutations)
	}
}

func TestRunWithoutTokenIsPermanent(t *testing.T) {
	env, fake := setup(t)
	t.Setenv("TEST_GITHUB_TOKEN", "")
	_, err := Kind.New().Run(context.Background(), env)
	if err == nil || !stages.IsPermanent(err) || err.Error() != "github: token variable TEST_GITHUB_TOKEN is empty" {
		t.Errorf("err = %v", err)
	}
	if len(fake.Requests()) != 0 {
		t.Errorf("requests made: %v", fake.Requests())
	}
}

func TestValidate(t *testing.T) {
	if err := (&Stage{}).Validate(&stages.Spec{}); err == nil {
		t.Error("no owner accepted")
	}
}
