package dockerbuild

import "testing"

func TestReaches(t *testing.T) {
	tests := []struct {
		name, text, df string
		want           bool
	}{
		{"copy of one binary", "FROM scratch\nCOPY bin/auth /auth\n", "Dockerfile", false},
		{"copy of the context", "FROM scratch\nCOPY . /app/\n", "Dockerfile", true},
		{"copy of ./", "FROM scratch\nCOPY ./ /app/\n", "Dockerfile", true},
		{"the Dockerfile by name", "FROM scratch\nADD Dockerfile /x\n", "Dockerfile", true},
		{"a pattern matching it", "FROM scratch\nCOPY Docker* /x/\n", "Dockerfile", true},
		{"a pattern matching its directory", "FROM scratch\nCOPY b* /x/\n", "build/Dockerfile", true},
		{"its directory", "FROM scratch\nCOPY build /x/\n", "build/Dockerfile", true},
		{"a pattern missing it", "FROM scratch\nCOPY *.go /x/\n", "Dockerfile", false},
		{"json form", "FROM scratch\nCOPY [\"bin/a\", \"/a\"]\n", "Dockerfile", false},
		{"json form of the context", "FROM scratch\nCOPY [\".\", \"/a\"]\n", "Dockerfile", true},
		{"from another stage", "FROM scratch AS b\nFROM scratch\nCOPY --from=b . /x\n", "Dockerfile", false},
		{"flags then the context", "FROM scratch\nCOPY --chown=1:1 --chmod=644 . /x\n", "Dockerfile", true},
		{"a continued line", "FROM scratch\nCOPY bin/a \\\n  . /x/\n", "Dockerfile", true},
		{"a variable", "FROM scratch\nARG D=bin\nCOPY $D /x/\n", "Dockerfile", true},
		{"a heredoc", "FROM scratch\nCOPY <<EOF /x\nhi\nEOF\n", "Dockerfile", true},
		{"a bind mount", "FROM scratch\nRUN --mount=type=bind,target=/src true\n", "Dockerfile", true},
		{"onbuild", "FROM scratch\nONBUILD COPY bin /x\n", "Dockerfile", true},
		{"another escape", "# escape=`\nFROM scratch\nCOPY bin/a /a\n", "Dockerfile", true},
		{"a URL", "FROM scratch\nADD https://example.invalid/a.tgz /x\n", "Dockerfile", false},
		{"climbing back in", "FROM scratch\nCOPY bin/../ /x\n", "Dockerfile", true},
		{"comments and blank lines", "# a comment\n\nFROM scratch\n# COPY . /x\nCOPY bin/a /a", "Dockerfile", false},
	}
	for _, tt := range tests {
		if got := reaches(tt.text, tt.df); got != tt.want {
			t.Errorf("%s: reaches = %v, want %v", tt.name, got, tt.want)
		}
	}
}
