package store_test

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/store"
)

// canary is a password with every character a URL splits on: each of its
// fragments would be a host, a path or a fragment if it leaked.
const canary = "s3cr@t0p/s3cr3t#w0rd?x"

// leaks lists the forms of canary, and fragments of it, found in text.
func leaks(text string) []string {
	forms := []string{canary, url.QueryEscape(canary), url.PathEscape(canary),
		base64.StdEncoding.EncodeToString([]byte(canary)), base64.URLEncoding.EncodeToString([]byte(canary))}
	for _, frag := range regexp.MustCompile(`[@/#?]`).Split(canary, -1) {
		if len(frag) >= 3 {
			forms = append(forms, frag)
		}
	}
	var found []string
	for _, f := range forms {
		if strings.Contains(text, f) {
			found = append(found, f)
		}
	}
	return found
}

func TestParse(t *testing.T) {
	esc := url.QueryEscape(canary)
	kv := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(canary)
	for _, c := range []struct {
		name, dsn string
		kind      store.Kind // 0: refused
		shown     string
	}{
		{"sqlite relative path", ".release/state.db", store.SQLite, ".release/state.db"},
		{"sqlite absolute path", "/var/lib/release/state.db", store.SQLite, "/var/lib/release/state.db"},
		{"sqlite path with an = and no space", "data/a=b.db", store.SQLite, "data/a=b.db"},
		{"postgres URL", "postgres://u:" + esc + "@db.example:5432/release?sslmode=disable", store.Postgres, "postgres://u:***@db.example:5432/release?sslmode=disable"},
		{"postgresql URL", "postgresql://u:" + esc + "@db.example/release", store.Postgres, "postgresql://u:***@db.example/release"},
		{"scheme in capitals", "POSTGRES://u@db.example/release", store.Postgres, "postgres://u@db.example/release"},
		{"URL without a password", "postgres://release@db/release", store.Postgres, "postgres://release@db/release"},
		{"URL with the password in its query", "postgres://db/release?user=u&password=" + esc, store.Postgres, "postgres://db/release?password=***&user=u"},
		{"key=value", "host=db.example port=5432 dbname=release user=u password='" + kv + "' sslmode=disable", store.Postgres, "host=db.example port=5432 dbname=release user=u password=*** sslmode=disable"},
		{"key=value, bare escaped password", `host=db password=a\ b`, store.Postgres, "host=db password=***"},
		{"key=value, one pair", "host=db", store.Postgres, "host=db"},
		{"key=value, spaces around =", "host = db  dbname = x", store.Postgres, "host=db dbname=x"},

		{"empty", "", 0, ""},
		{"another scheme", "mysql://u:" + canary + "@db/x", 0, ""},
		{"sqlite file URL", "file:///tmp/state.db", 0, ""},
		{"unescaped @ in the password", "postgres://u:ab@cd.invalid-fragment@db/x", 0, ""},
		{"unescaped canary in the password", "postgres://u:" + canary + "@db/x", 0, ""},
		{"unescaped / in the password", "postgres://u:ab/cd@db/x", 0, ""},
		{"unescaped # in the password", "postgres://u:ab#cd@db/x", 0, ""},
		{"unescaped ? in the password", "postgres://u:ab?cd@db/x", 0, ""},
		{"numeric password with a /", "postgres://u:12/34@db/x", 0, ""},
		{"bad port", "postgres://u:" + esc + "@db:port/x", 0, ""},
		{"bad escape", "postgres://u:%zz" + esc + "@db/x", 0, ""},
		{"a space", "postgres://u:a b@db/x", 0, ""},
		{"key=value, unknown keyword", "host=db passwd=" + canary, 0, ""},
		{"key=value, unquoted password with a space", "host=db password=ab cd", 0, ""},
		{"key=value, unterminated quote", "host=db password='" + canary, 0, ""},
		{"password= in a path", "/tmp/x password=" + canary, 0, ""},
		{"password= without spaces", "./password=" + canary, 0, ""},
		{"= and spaces", "my dir/a=b.db", 0, ""},
		{"user:password@host without a scheme", "u:" + canary + "@db/x", 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			loc, err := store.Parse(c.dsn)
			if c.kind == 0 {
				if !errors.Is(err, store.ErrRefused) {
					t.Fatalf("Parse(%q) = %+v, %v; want refused", c.dsn, loc, err)
				}
				if l := leaks(err.Error() + store.Redact(c.dsn)); l != nil {
					t.Errorf("refusal %q (named %q) shows %q of the password", err, store.Redact(c.dsn), l)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", c.dsn, err)
			}
			if diff := cmp.Diff(c.kind, loc.Kind); diff != "" {
				t.Errorf("kind (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(c.shown, loc.Shown); diff != "" {
				t.Errorf("shown (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(c.shown, store.Redact(c.dsn)); diff != "" {
				t.Errorf("Redact (-want +got):\n%s", diff)
			}
			if l := leaks(loc.Shown); l != nil {
				t.Errorf("shown as %q: holds %q", loc.Shown, l)
			}
		})
	}
}

// TestOpenRefused: what Parse refuses, Open refuses before creating a file
// or dialling: it answers at once (no name lookup, no connection attempt
// could) and the working directory stays empty.
func TestOpenRefused(t *testing.T) {
	for _, dsn := range []string{
		"host=db.invalid password=" + canary + " extra",
		"/tmp/x password=" + canary,
		"postgres://u:" + canary + "@db.invalid/x",
		"postgres://u:ab@cd.invalid-fragment@db.invalid/x",
		"postgresql://u:12/34@db.invalid/x",
		"mysql://u:" + canary + "@db.invalid/x",
		"u:" + canary + "@db.invalid/x",
		"",
	} {
		t.Run(dsn, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			start := time.Now()
			for _, open := range []func(context.Context, string) (*store.DB, error){store.Open, store.OpenPostgres} {
				s, err := open(context.Background(), dsn)
				if err == nil {
					s.Close()
					t.Fatalf("opened %q", dsn)
				}
				if !errors.Is(err, store.ErrRefused) {
					t.Errorf("error %q: want it refused", err)
				}
				if l := leaks(err.Error()); l != nil {
					t.Errorf("error %q shows %q of the password", err, l)
				}
			}
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Errorf("refusing took %v: something was dialled or looked up", d)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("created %v", entries)
			}
		})
	}
}

// TestOpenScrubsDriverErrors: a well-formed URL or key=value string reaches
// the driver; what it answers never shows the password. The port is closed,
// so nothing is looked up and the error comes at once.
func TestOpenScrubsDriverErrors(t *testing.T) {
	esc := url.QueryEscape(canary)
	kv := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(canary)
	for _, dsn := range []string{
		"postgres://u:" + esc + "@127.0.0.1:1/x?sslmode=disable&connect_timeout=2",
		"postgres://127.0.0.1:1/x?sslmode=disable&user=u&password=" + esc,
		"host=127.0.0.1 port=1 user=u password='" + kv + "' dbname=x sslmode=disable connect_timeout=2",
	} {
		t.Run(dsn, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir(dir)
			s, err := store.Open(context.Background(), dsn)
			if err == nil {
				s.Close()
				t.Fatal("opened a store on a closed port")
			}
			if errors.Is(err, store.ErrRefused) {
				t.Fatalf("refused a valid form: %v", err)
			}
			if l := leaks(err.Error()); l != nil {
				t.Errorf("error %q shows %q of the password", err, l)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("created %v", entries)
			}
		})
	}
}

// TestScrub: the driver's text, should it quote the password in any form
// (a server or proxy echoing it back), is scrubbed.
func TestScrub(t *testing.T) {
	loc, err := store.Parse("postgres://u:" + url.QueryEscape(canary) + "@db/x")
	if err != nil {
		t.Fatal(err)
	}
	inner := errors.New("echo: " + canary + " " + url.QueryEscape(canary) + " " + url.PathEscape(canary) + " " +
		base64.StdEncoding.EncodeToString([]byte("u:"+canary)))
	err = loc.Scrub(fmt.Errorf("dial: %w", inner))
	if l := leaks(err.Error()); l != nil {
		t.Errorf("scrubbed %q still shows %q", err, l)
	}
	if !errors.Is(err, inner) {
		t.Error("the scrubbed error no longer wraps the driver's")
	}
}

// TestOpenKeywordValue: a key=value string opens the team store.
func TestOpenKeywordValue(t *testing.T) {
	openPostgres(t) // fails in CI, skips elsewhere, when the cluster is missing
	u, err := url.Parse(postgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	schema := fmt.Sprintf("t_kv_%d", os.Getpid())
	admin, err := sql.Open("pgx", postgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE; CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.ExecContext(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE") })
	pw, _ := u.User.Password()
	dsn := fmt.Sprintf("host=%s port=%s user=%s password='%s' dbname=%s sslmode=disable options='-c search_path=%s'",
		u.Hostname(), u.Port(), u.User.Username(), pw, strings.TrimPrefix(u.Path, "/"), schema)
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Runs(ctx, pipeline.RunFilter{}); err != nil {
		t.Fatal(err)
	}
	var tables int
	if err := admin.QueryRowContext(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'runs'", schema).Scan(&tables); err != nil || tables != 1 {
		t.Errorf("no runs table in %s: %d, %v", schema, tables, err)
	}
}
