package dockerbuild

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/docker/docker/pkg/jsonmessage"
	"google.golang.org/protobuf/encoding/protowire"
)

// readBuild reads the engine's answer to a build, from either builder: the
// build's output goes to w, and the built image's ID is returned. A build
// that failed returns its *jsonmessage.JSONError.
//
// The classic builder streams text. BuildKit streams its progress as
// base64 protobuf (moby.buildkit.trace, a StatusResponse of BuildKit's
// control API); readBuild decodes the two fields a log needs, the steps
// (vertexes) and their output, rather than link BuildKit for them.
func readBuild(r io.Reader, w io.Writer) (string, error) {
	dec := json.NewDecoder(r)
	tr := &trace{w: w, steps: map[string]int{}, shown: map[string]string{}}
	id := ""
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); err == io.EOF {
			return id, nil
		} else if err != nil {
			return id, fmt.Errorf("read the engine's build output: %w", err)
		}
		if m.Error != nil {
			return id, m.Error
		}
		switch {
		case m.ID == "moby.buildkit.trace" && m.Aux != nil:
			var b []byte
			if json.Unmarshal(*m.Aux, &b) == nil {
				tr.status(b)
			}
		case m.Aux != nil:
			// Both builders name the image in {"ID": …}; BuildKit's
			// message has the ID moby.image.id.
			var aux struct{ ID string }
			if json.Unmarshal(*m.Aux, &aux) == nil && aux.ID != "" {
				id = aux.ID
			}
		case m.Stream != "":
			io.WriteString(w, m.Stream)
		}
	}
}

// trace turns BuildKit's status messages into lines like its plain
// progress output: "#3 [1/1] COPY bin/auth /auth", then "#3 DONE".
type trace struct {
	w     io.Writer
	steps map[string]int    // vertex digest -> step number
	shown map[string]string // vertex digest -> the last state written
}

// Field numbers of BuildKit's control API (StatusResponse, Vertex,
// VertexLog).
const (
	statusVertexes = 1
	statusLogs     = 3

	vertexDigest    = 1
	vertexName      = 3
	vertexCached    = 4
	vertexStarted   = 5
	vertexCompleted = 6
	vertexError     = 7

	logVertex = 1
	logMsg    = 4
)

func (t *trace) status(b []byte) {
	eachField(b, func(num protowire.Number, v []byte, _ uint64) {
		switch num {
		case statusVertexes:
			t.vertex(v)
		case statusLogs:
			t.log(v)
		}
	})
}

func (t *trace) vertex(b []byte) {
	var digest, name, failed string
	var cached, started, completed bool
	eachField(b, func(num protowire.Number, v []byte, x uint64) {
		switch num {
		case vertexDigest:
			digest = string(v)
		case vertexName:
			name = string(v)
		case vertexCached:
			cached = x != 0
		case vertexStarted:
			started = true
		case vertexCompleted:
			completed = true
		case vertexError:
			failed = string(v)
		}
	})
	if digest == "" {
		return
	}
	state := ""
	switch {
	case failed != "":
		state = "ERROR: " + failed
	case completed && cached:
		state = "CACHED"
	case completed:
		state = "DONE"
	case started:
		state = "started"
	default:
		return
	}
	if t.shown[digest] == state {
		return
	}
	n, named := t.steps[digest]
	if !named {
		n = len(t.steps) + 1
		t.steps[digest] = n
		fmt.Fprintf(t.w, "#%d %s\n", n, name)
	}
	t.shown[digest] = state
	if state != "started" {
		fmt.Fprintf(t.w, "#%d %s\n", n, state)
	}
}

func (t *trace) log(b []byte) {
	var digest string
	var msg []byte
	eachField(b, func(num protowire.Number, v []byte, _ uint64) {
		switch num {
		case logVertex:
			digest = string(v)
		case logMsg:
			msg = v
		}
	})
	n := t.steps[digest]
	for line := range strings.Lines(string(msg)) {
		fmt.Fprintf(t.w, "#%d %s\n", n, strings.TrimRight(line, "\r\n"))
	}
}

var errProto = errors.New("malformed protobuf")

// eachField calls f with every field of the protobuf message b: length
// delimited fields with their bytes, varints with their value. It stops at
// the first malformed field.
func eachField(b []byte, f func(num protowire.Number, v []byte, x uint64)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errProto
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errProto
			}
			f(num, v, 0)
			b = b[n:]
		case protowire.VarintType:
			x, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errProto
			}
			f(num, nil, x)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errProto
			}
			b = b[n:]
		}
	}
	return nil
}
