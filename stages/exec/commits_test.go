package exec

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/stages"
)

// TestCommitVars: a command gets the commit the run pinned for each repo as
// RELEASE_COMMIT_<REPO>, the name upper case with _ for what is no letter
// or digit.
func TestCommitVars(t *testing.T) {
	s := &Stage{Command: []string{"true"}}
	env := &stages.Env{RunID: "r1", Version: "1.2.0", Commits: map[string]string{"web": "abc123", "web-code": "def456", "api.v2": "0f0f"}}
	got, err := s.environ(env, []string{"PATH=/bin", "SECRET=x"})
	if err != nil {
		t.Fatal(err)
	}
	got = slices.DeleteFunc(got, func(kv string) bool { return !strings.HasPrefix(kv, "RELEASE_COMMIT_") })
	want := []string{"RELEASE_COMMIT_API_V2=0f0f", "RELEASE_COMMIT_WEB=abc123", "RELEASE_COMMIT_WEB_CODE=def456"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("commit variables (-want +got):\n%s", diff)
	}
}
