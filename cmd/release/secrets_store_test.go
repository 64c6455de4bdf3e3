package main

// TestSecretsStore runs the real binary against a PostgreSQL role whose
// password is a canary holding the characters that break a URL (@, /, #,
// :, ?), given as the state in every form a user may write it: a URL with
// the password escaped, a key=value connection string, the same with a
// wrong password, and URLs where the password is not escaped (refused). It
// scans every place for every form of the password, and every name lookup
// the process made (GODEBUG=netdns=go+2 prints each) for any fragment of
// it: a password cut at an unescaped '@' or '/' must never become a host
// name that goes out to DNS.
//
//	eval "$(fixtures/up.sh)"
//	go test -count=1 -run TestSecretsStore -v ./cmd/release

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sweepboard/release/fixtures/parts"
)

const secretsStorePipeline = `
name: secretsstore
environments:
  dev: {}
stages:
  env:   {uses: exec, with: {command: [env]}}
  say:   {uses: exec, environment: dev, needs: [env], with: {command: [sh, -c, 'echo "state is $RELEASE_STATE"; echo done']}}
`

func TestSecretsStore(t *testing.T) {
	bin := buildRelease(t)
	adminDSN := os.Getenv("RELEASE_TEST_POSTGRES")
	if adminDSN == "" {
		adminDSN = parts.PostgresDSN
	}
	admin, err := sql.Open("pgx", adminDSN)
	if err == nil {
		err = admin.Ping()
	}
	if err != nil {
		parts.Missing(t, "PostgreSQL at "+adminDSN, err)
	}
	defer admin.Close()
	au, err := url.Parse(adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	host, port, db := au.Hostname(), au.Port(), strings.TrimPrefix(au.Path, "/")
	if host == "127.0.0.1" {
		host = "localhost" // a name, so that the lookups the test reads happen
	}

	b := make([]byte, 8)
	rand.Read(b)
	// Every character a URL gives a meaning to, between two halves that
	// would each pass for a host name.
	password := "PgCanary" + hex.EncodeToString(b[:4]) + "@sec/ret#frag:" + hex.EncodeToString(b[4:]) + "?x=y"
	role := fmt.Sprintf("canary_%d", os.Getpid())
	schema := fmt.Sprintf("secstore_%d", os.Getpid())
	for _, q := range []string{
		"DROP SCHEMA IF EXISTS " + schema + " CASCADE",
		"DROP ROLE IF EXISTS " + role,
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", role, password),
		"CREATE SCHEMA " + schema,
		fmt.Sprintf("GRANT USAGE, CREATE ON SCHEMA %s TO %s", schema, role),
	} {
		if _, err := admin.Exec(q); err != nil {
			t.Fatalf("%s: %v (fixtures/up.sh gives the release role createrole)", strings.ReplaceAll(q, password, "***"), err)
		}
	}
	t.Cleanup(func() {
		admin.Exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE")
		admin.Exec("DROP ROLE IF EXISTS " + role)
	})

	userinfo := url.UserPassword(role, password).String()
	good := fmt.Sprintf("postgres://%s@%s:%s/%s?sslmode=disable&search_path=%s", userinfo, host, port, db, schema)
	keyValue := fmt.Sprintf("host=%s port=%s dbname=%s user=%s password=%s sslmode=disable options=-csearch_path=%s", host, port, db, role, password, schema)
	wrongKV := strings.Replace(keyValue, "password="+password, "password="+password+"Wrong", 1)

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pipeline.yaml"), []byte(secretsStorePipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	sc := &scanner{needles: canaryForms("store password", password, role), places: map[string]bool{}}
	// Fragments: the pieces a URL parser cuts the password into.
	var fragments []string
	for _, f := range regexp.MustCompile(`[@/#:?=]`).Split(password, -1) {
		if len(f) >= 3 {
			fragments = append(fragments, f)
		}
	}
	var lookups []string
	lookup := regexp.MustCompile(`hostLookupOrder\(([^)]*)\)`)

	release := func(state string, args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = dir
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "RELEASE_") || strings.HasPrefix(kv, "GODEBUG=")
		}), "RELEASE_STATE="+state, "GODEBUG=netdns=go+2", "NO_COLOR=1", "RELEASE_USER=secrets-test")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		r := resultOf(t, args, cmd.Run(), &stdout, &stderr)
		line := "release " + strings.Join(args, " ")
		// The resolver's own lines name hosts only; keep them out of the
		// canary scan and look at them below.
		for _, m := range lookup.FindAllStringSubmatch(stderr.String(), -1) {
			lookups = append(lookups, m[1])
		}
		sc.scan("stdout of "+line, stdout.Bytes())
		sc.scan("stderr of "+line, stderr.Bytes())
		scanDir(sc, dir)
		return r
	}
	want := func(code int, state string, args ...string) result {
		t.Helper()
		r := release(state, args...)
		if r.code != code {
			t.Fatalf("release %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, code, r)
		}
		return r
	}

	// The escaped URL and the key=value string both reach the store.
	r := want(0, good, "run", "--yes")
	id := r.id()
	want(0, good, "logs", id)
	want(0, good, "runs", "show", id, "-o", "json")
	want(0, good, "-v", "doctor")
	r = want(0, keyValue, "run", "--yes")
	want(0, keyValue, "runs", "list", "-o", "json")
	want(0, keyValue, "status")
	// The exec stage's environment holds no state string.
	if logs := want(0, keyValue, "logs", r.id(), "say").stdout; !strings.Contains(logs, "state is \n") {
		t.Errorf("the exec stage sees RELEASE_STATE: its log %q", logs)
	}

	// A wrong password fails, naming the store without the password.
	r = release(wrongKV, "runs", "list")
	if r.code == 0 || !strings.Contains(r.stderr, role) {
		t.Errorf("a wrong password: exit %d, want a failure naming the role\n%s", r.code, r)
	}

	// A password that is not escaped: refused before anything is made or
	// looked up.
	before := listDir(t, dir)
	for _, state := range []string{
		fmt.Sprintf("postgres://%s:%s@%s:%s/%s", role, password, host, port, db),
		fmt.Sprintf("postgresql://%s:%s@%s/%s?sslmode=disable", role, password, host, db),
		fmt.Sprintf("postgres://%s@%s:%s/%s", password, host, port, db),
		fmt.Sprintf("postgres://%s:%s", role, password),
	} {
		r := release(state, "runs", "list")
		if r.code != exitUsage {
			t.Errorf("state %s: exit %d, want %d\n%s", strings.ReplaceAll(state, password, "***"), r.code, exitUsage, r)
		}
	}
	if after := listDir(t, dir); !slices.Equal(before, after) {
		t.Errorf("a refused state changed the directory: %v, then %v", before, after)
	}

	// The store's own rows.
	rows, err := admin.Query(`SELECT tablename FROM pg_tables WHERE schemaname = $1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		rows.Scan(&name)
		tables = append(tables, name)
	}
	rows.Close()
	if len(tables) == 0 {
		t.Fatalf("no tables in schema %s: the runs did not use it", schema)
	}
	owner, err := sql.Open("pgx", good)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	for _, table := range tables {
		var dump sql.NullString
		if err := owner.QueryRow(fmt.Sprintf(`SELECT string_agg(row_to_json(t)::text, E'\n') FROM %s.%s t`, schema, table)).Scan(&dump); err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		sc.scan("table "+table, []byte(dump.String))
	}

	if len(lookups) == 0 {
		t.Errorf("no name lookup seen: GODEBUG=netdns=go+2 should print the lookup of %s", host)
	}
	for _, h := range slices.Compact(slices.Sorted(slices.Values(lookups))) {
		for _, f := range fragments {
			if strings.Contains(h, f) {
				t.Errorf("a fragment of the password was looked up as a host: %q", h)
			}
		}
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	t.Logf("store password: %d hits in %d places, %.1f KB scanned in %d forms; %d name lookups (%s)",
		len(sc.hits), len(sc.places), float64(sc.bytes)/1e3, len(sc.needles), len(lookups), strings.Join(slices.Compact(slices.Sorted(slices.Values(lookups))), ", "))
	for _, h := range slices.Compact(slices.Sorted(slices.Values(sc.hits))) {
		t.Errorf("secret found: %s", h)
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil {
			out = append(out, path)
		}
		return nil
	})
	return out
}
