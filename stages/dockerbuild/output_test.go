package dockerbuild

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/docker/docker/pkg/jsonmessage"
	"google.golang.org/protobuf/encoding/protowire"
)

// vertex encodes a BuildKit Vertex: digest, name, and the fields set.
func vertex(digest, name string, cached, started, completed bool, failed string) []byte {
	var b []byte
	b = protowire.AppendTag(b, vertexDigest, protowire.BytesType)
	b = protowire.AppendString(b, digest)
	b = protowire.AppendTag(b, vertexName, protowire.BytesType)
	b = protowire.AppendString(b, name)
	if cached {
		b = protowire.AppendTag(b, vertexCached, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	ts := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1700000000)
	if started {
		b = protowire.AppendTag(b, vertexStarted, protowire.BytesType)
		b = protowire.AppendBytes(b, ts)
	}
	if completed {
		b = protowire.AppendTag(b, vertexCompleted, protowire.BytesType)
		b = protowire.AppendBytes(b, ts)
	}
	if failed != "" {
		b = protowire.AppendTag(b, vertexError, protowire.BytesType)
		b = protowire.AppendString(b, failed)
	}
	return b
}

// traceLine is one moby.buildkit.trace message holding vertexes and logs.
func traceLine(vertexes [][]byte, logs [][2]string) string {
	var b []byte
	for _, v := range vertexes {
		b = protowire.AppendTag(b, statusVertexes, protowire.BytesType)
		b = protowire.AppendBytes(b, v)
	}
	for _, l := range logs {
		var m []byte
		m = protowire.AppendTag(m, logVertex, protowire.BytesType)
		m = protowire.AppendString(m, l[0])
		m = protowire.AppendTag(m, 3, protowire.VarintType) // stream
		m = protowire.AppendVarint(m, 1)
		m = protowire.AppendTag(m, logMsg, protowire.BytesType)
		m = protowire.AppendString(m, l[1])
		b = protowire.AppendTag(b, statusLogs, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return `{"id":"moby.buildkit.trace","aux":"` + base64.StdEncoding.EncodeToString(b) + `"}` + "\n"
}

func TestReadBuildBuildKit(t *testing.T) {
	stream := traceLine([][]byte{vertex("sha256:a", "[internal] load build context", false, true, false, "")}, nil) +
		traceLine([][]byte{vertex("sha256:a", "[internal] load build context", false, true, true, "")}, nil) +
		traceLine([][]byte{vertex("sha256:b", "[1/2] COPY bin/auth /auth", true, true, true, "")}, nil) +
		traceLine([][]byte{vertex("sha256:c", "[2/2] RUN make", false, true, false, "")}, [][2]string{{"sha256:c", "compiling\nlinking\n"}}) +
		"not json at all\n"
	var log strings.Builder
	_, err := readBuild(strings.NewReader(stream), &log)
	if err == nil || !strings.Contains(err.Error(), "read the engine's build output") {
		t.Errorf("garbage in the stream: error %v", err)
	}
	want := "#1 [internal] load build context\n#1 DONE\n#2 [1/2] COPY bin/auth /auth\n#2 CACHED\n#3 [2/2] RUN make\n#3 compiling\n#3 linking\n"
	if log.String() != want {
		t.Errorf("log:\n%s\nwant:\n%s", log.String(), want)
	}

	stream = traceLine([][]byte{vertex("sha256:c", "[2/2] RUN make", false, true, true, "process exited with 2")}, nil) +
		`{"errorDetail":{"message":"process \"make\" did not complete successfully: exit code: 2"},"error":"process \"make\" did not complete successfully: exit code: 2"}` + "\n"
	log.Reset()
	_, err = readBuild(strings.NewReader(stream), &log)
	var je *jsonmessage.JSONError
	if !errors.As(err, &je) || !strings.Contains(je.Message, "exit code: 2") {
		t.Errorf("failed build: error %v, want the engine's JSON error", err)
	}
	if !strings.Contains(log.String(), "#1 ERROR: process exited with 2") {
		t.Errorf("log lacks the failed step:\n%s", log.String())
	}

	stream = `{"stream":"Step 1/2 : FROM scratch\n"}` + "\n" + `{"aux":{"ID":"sha256:feed"}}` + "\n" +
		`{"id":"moby.image.id","aux":{"ID":"sha256:beef"}}` + "\n"
	log.Reset()
	id, err := readBuild(strings.NewReader(stream), &log)
	if err != nil || id != "sha256:beef" || log.String() != "Step 1/2 : FROM scratch\n" {
		t.Errorf("classic stream: id %q, err %v, log %q", id, err, log.String())
	}
}

func TestBuilderValidated(t *testing.T) {
	err := (&Stage{Builder: "kaniko"}).Validate(fixtureSpec("p", t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), `builder: "kaniko" is not a builder`) {
		t.Errorf("Validate: %v", err)
	}
	if err := (&Stage{Builder: BuilderClassic}).Validate(fixtureSpec("p", t.TempDir())); err != nil {
		t.Errorf("Validate classic: %v", err)
	}
}
