package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
	"github.com/sweepboard/release/stages"
)

// smallDisk mounts a tmpfs of the given size on a fresh directory until the
// test ends. Mounting needs root; without it the test skips, or fails when
// CI is set.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := fmt.Sprintf("mount a %s tmpfs on %s: %v: %s", size, dir, err, bytes.TrimSpace(out))
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	// Registered after TempDir's own cleanup, so it runs first.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, bytes.TrimSpace(out))
		}
	})
	return dir
}

// fillDisk writes path until the disk is full, then gives back leave bytes;
// it returns how many bytes the filler holds.
func fillDisk(t *testing.T, path string, leave int64) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{'F'}, 4096)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if err != nil {
			break
		}
	}
	n = max(n-leave, 0)
	if err := f.Truncate(n); err != nil {
		t.Fatal(err)
	}
	return n
}

// step is the value a test writes into a node's outputs, with a payload
// that makes each write bigger than the one before.
func setStep(n *pipeline.Node, step int) {
	n.Attempts = step
	n.Outputs = stages.Outputs{"step": strconv.Itoa(step), "payload": strings.Repeat(strconv.Itoa(step%10), 2048*step)}
}

// checkNode reads the node back and checks it is whole: its step is one of
// want, and its payload matches its step.
func checkNode(t *testing.T, s pipeline.Store, runID string, want ...int) {
	t.Helper()
	r, err := s.Run(context.Background(), runID)
	if err != nil {
		t.Fatalf("read run %s back: %v", runID, err)
	}
	n := r.Nodes[0]
	step, err := strconv.Atoi(n.Outputs["step"])
	if err != nil {
		t.Fatalf("run %s: step %q", runID, n.Outputs["step"])
	}
	if n.Attempts != step || n.Outputs["payload"] != strings.Repeat(strconv.Itoa(step%10), 2048*step) {
		t.Errorf("run %s: a torn record: step %d, attempts %d, payload of %d bytes", runID, step, n.Attempts, len(n.Outputs["payload"]))
	}
	for _, w := range want {
		if step == w {
			return
		}
	}
	t.Errorf("run %s: step %d, want one of %v", runID, step, want)
}

func integrityCheck(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&res); err != nil || res != "ok" {
		t.Errorf("integrity_check of %s: %q, %v", path, res, err)
	}
}

// The store's disk fills up while a run writes its status changes, with
// more or less room left each round. Writes fail with an error that names
// the store and says there is no space; every record read back, through
// the same handle and after reopening on the full disk, is the last one
// acknowledged or the one that failed, never a mix; once space is freed the
// same handle writes again, and the file passes integrity_check.
func TestSQLiteDiskFull(t *testing.T) {
	ctx := context.Background()
	dir := smallDisk(t, "2m")
	for round, leave := range []int64{0, 4 << 10, 32 << 10, 128 << 10, 384 << 10} {
		t.Run(fmt.Sprintf("%dKiB-left", leave>>10), func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("state-%d.db", round))
			filler := filepath.Join(dir, "filler")
			s, err := store.OpenSQLite(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { s.Close() }()
			// Earlier runs, written while there was room.
			var runs []*pipeline.Run
			for i := range 3 {
				r := sampleRun(fmt.Sprintf("r%d-%d", round, i), time.Now())
				setStep(r.Nodes[0], 1)
				if err := s.CreateRun(ctx, r); err != nil {
					t.Fatal(err)
				}
				runs = append(runs, r)
			}
			cur := runs[len(runs)-1]
			fillDisk(t, filler, leave)

			acked, failed := 1, 0
			var firstErr error
			for step := 2; step <= 200 && failed < 3; step++ {
				setStep(cur.Nodes[0], step)
				err := s.SaveNodes(ctx, cur.ID, cur.Nodes[0])
				if err == nil {
					if failed > 0 {
						t.Errorf("step %d written after a failure, on a disk still full", step)
					}
					acked = step
					continue
				}
				failed++
				if firstErr == nil {
					firstErr = err
				}
				if !errors.Is(err, store.ErrNoSpace) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "no space") {
					t.Errorf("step %d: error %q does not name the store and say it has no space", step, err)
				}
			}
			t.Logf("%d KiB left: %d status changes written, then: %v", leave>>10, acked-1, firstErr)
			if failed == 0 {
				t.Fatalf("200 growing writes fit on a full disk")
			}
			if err := s.AppendLog(ctx, cur.ID, []pipeline.LogLine{{Node: "deploy", At: time.Now(), Text: strings.Repeat("L", 64<<10)}}); !errors.Is(err, store.ErrNoSpace) {
				t.Errorf("a 64 KiB log line on a full disk: %v", err)
			}

			// Read back through the same handle, then after reopening
			// while the disk is still full.
			checkNode(t, s, cur.ID, acked, acked+1)
			s.Close()
			s, err = store.OpenSQLite(ctx, path)
			if err != nil {
				t.Fatalf("reopen on a full disk: %v", err)
			}
			for _, r := range runs[:len(runs)-1] {
				checkNode(t, s, r.ID, 1)
			}
			checkNode(t, s, cur.ID, acked, acked+1)

			// Space comes back: the run goes on with the same handle.
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			setStep(cur.Nodes[0], 500)
			if err := s.SaveNodes(ctx, cur.ID, cur.Nodes[0]); err != nil {
				t.Fatalf("write after space was freed: %v", err)
			}
			cur.Status = pipeline.Succeeded
			if err := s.SaveRun(ctx, cur); err != nil {
				t.Fatalf("finish the run after space was freed: %v", err)
			}
			s.Close()
			s, err = store.OpenSQLite(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			checkNode(t, s, cur.ID, 500)
			all, err := s.Runs(ctx, pipeline.RunFilter{})
			if err != nil || len(all) != 3 {
				t.Errorf("runs after reopening: %d, %v", len(all), err)
			}
			for _, r := range all {
				if (r.Status == pipeline.Succeeded) != (r.ID == cur.ID) {
					t.Errorf("run %s is %s", r.ID, r.Status)
				}
			}
			s.Close()
			integrityCheck(t, path)
			for _, suffix := range []string{"", "-wal", "-shm"} {
				os.Remove(path + suffix)
			}
		})
	}
}

// A damaged state file is refused when the store opens, with an error that
// names the file and says it is corrupt, and it is left byte for byte as
// it was: no migration, no WAL replay into it, nothing started over empty.
func TestSQLiteRefusesDamagedFile(t *testing.T) {
	ctx := context.Background()
	// One healthy store of 100 runs, copied for each kind of damage.
	healthy := filepath.Join(t.TempDir(), "state.db")
	s, err := store.OpenSQLite(ctx, healthy)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		r := sampleRun(fmt.Sprintf("r%03d", i), time.Now())
		if err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendLog(ctx, r.ID, []pipeline.LogLine{{Node: "deploy", At: time.Now(), Text: strings.Repeat("log ", 100)}}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	good, err := os.ReadFile(healthy)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	if len(good)%page != 0 || len(good) < 16*page {
		t.Fatalf("healthy store is %d bytes, want 16 pages of %d or more", len(good), page)
	}
	mid := (len(good) / page / 2) * page

	for _, tt := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"garbage header", func(b []byte) []byte { copy(b, "this is not SQLite, just garbage bytes"); return b }},
		{"a page in the middle overwritten", func(b []byte) []byte {
			copy(b[mid:mid+page], bytes.Repeat([]byte{0xAA}, page))
			return b
		}},
		{"truncated to half", func(b []byte) []byte { return b[:mid] }},
		{"last page cut off", func(b []byte) []byte { return b[:len(b)-page] }},
		{"truncated to nothing", func(b []byte) []byte { return nil }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			data := tt.damage(bytes.Clone(good))
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			old := time.Now().Add(-time.Hour)
			os.Chtimes(path, old, old)
			before := sha256.Sum256(data)

			for name, open := range map[string]func(context.Context, string) (*store.DB, error){"Open": store.Open, "OpenSQLite": store.OpenSQLite} {
				s, err := open(ctx, path)
				if err == nil {
					runs, lerr := s.Runs(ctx, pipeline.RunFilter{})
					s.Close()
					t.Fatalf("%s opened the damaged file (%d runs listed, %v)", name, len(runs), lerr)
				}
				if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "corrupt") {
					t.Errorf("%s: error %q does not name the file and say it is corrupt", name, err)
				}
				t.Logf("%s: %v", name, err)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(after) != before {
				t.Errorf("the damaged file was written to: %d bytes before, %d after", len(data), len(after))
			}
			if fi, err := os.Stat(path); err != nil || !fi.ModTime().Equal(old) {
				t.Errorf("the damaged file's mtime moved: %v", err)
			}
			if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
				t.Errorf("a WAL of %d bytes was left beside the damaged file", fi.Size())
			}
		})
	}
}
