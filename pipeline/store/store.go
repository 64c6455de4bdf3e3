// Package store keeps run state in SQL: an embedded SQLite file by default,
// PostgreSQL for a team. Both implement pipeline.Store with the same
// numbered migrations and pass the same conformance suite.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // the team store's driver
	"github.com/sweepboard/release/pipeline"
	"github.com/sweepboard/release/pipeline/deadline"
	"github.com/sweepboard/release/pipeline/retry"
	"github.com/sweepboard/release/stages"
	sqlitedrv "modernc.org/sqlite" // the embedded store's driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Open opens the store named by dsn (see Parse) with the default Options:
// a PostgreSQL URL or key=value connection string, or a file path for
// SQLite, created with its directory when missing. Migrations run first. A
// dsn Parse refuses is refused here before anything is created or dialled.
func Open(ctx context.Context, dsn string) (*DB, error) {
	return OpenWith(ctx, dsn, Options{})
}

// OpenWith is Open with the deadlines, retries and reports of o.
func OpenWith(ctx context.Context, dsn string, o Options) (*DB, error) {
	loc, err := Parse(dsn)
	if err != nil {
		return nil, err
	}
	if loc.Kind == Postgres {
		return openPostgres(ctx, loc, o)
	}
	return openSQLite(ctx, dsn, o)
}

// IsPostgres reports whether dsn names a PostgreSQL store.
func IsPostgres(dsn string) bool {
	loc, err := Parse(dsn)
	return err == nil && loc.Kind == Postgres
}

// OpenPostgres opens a PostgreSQL state store (a team's, shared by CI
// runners and laptops) and runs the migrations in one transaction, under an
// advisory lock so that two processes starting at once do not race. A dsn
// that Parse does not take for PostgreSQL is refused without dialling.
func OpenPostgres(ctx context.Context, dsn string) (*DB, error) {
	loc, err := Parse(dsn)
	if err != nil {
		return nil, err
	}
	if loc.Kind != Postgres {
		return nil, refuse(loc.Shown, "not a PostgreSQL URL or connection string")
	}
	return openPostgres(ctx, loc, Options{})
}

// openPostgres connects within the connect bound (the URL's
// connect_timeout when it sets one), each connection bounded by the idle
// bound on every read and write, so that a server behind a black-holed
// network fails a call rather than holding it. The first connect and the
// migrations are one store call: a server that restarts is waited for
// within the budget.
func openPostgres(ctx context.Context, loc Location, o Options) (*DB, error) {
	cfg, err := pgx.ParseConfig(loc.conn)
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w", loc.Shown, loc.Scrub(err))
	}
	d := o.Deadlines.Or(deadline.Deadlines{})
	if cfg.ConnectTimeout == 0 { // neither connect_timeout nor PGCONNECT_TIMEOUT
		cfg.ConnectTimeout = d.Connect
	}
	cfg.DialFunc = deadline.Deadlines{Connect: cfg.ConnectTimeout, Idle: d.Idle}.Dialer()
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(4)
	s := &DB{db: db, dialect: postgres, name: loc.Shown, loc: loc, calls: newCalls(o)}
	s.calls.connect = cfg.ConnectTimeout
	err = s.do(ctx, "open", func(ctx context.Context) error {
		if err := db.PingContext(ctx); err != nil {
			return err
		}
		return s.migrate(ctx)
	})
	if err != nil {
		db.Close()
		var se *pipeline.StoreError
		if errors.As(err, &se) {
			err = se.Err
		}
		return nil, fmt.Errorf("open state store %s: %w", loc.Shown, loc.Scrub(err))
	}
	return s, nil
}

// idleInTransaction is how long the server lets a session of the store sit
// in a transaction without a statement before it ends the session. The
// store's transactions send their statements back to back: one that sits
// is a process stopped (SIGSTOP) or cut off from the server in the middle
// of it, and the rows it locked, a lease's, would otherwise stay locked
// until the server finds the connection dead (TCP keepalive: hours),
// holding every takeover of the lease past its expiry. Parse adds it to
// the connection unless the URL sets it.
const idleInTransaction = 5 * time.Second

func idleInTransactionMillis() string {
	return strconv.FormatInt(idleInTransaction.Milliseconds(), 10)
}

// Redact names a store for messages: never a password, in any form. A
// dsn that Parse refuses is named only as far as it is safe.
func Redact(dsn string) string {
	loc, err := Parse(dsn)
	var re *refusedError
	switch {
	case errors.As(err, &re) && re.shown != "":
		return re.shown
	case err != nil:
		return "(not shown: it may hold a password)"
	}
	return loc.Shown
}

// ErrCorrupt is wrapped by the error of opening a SQLite store whose file is
// damaged. Such a store is refused, never started over as an empty one: the
// runs it held are the history a resume, a promotion or a rollback reads.
var ErrCorrupt = errors.New("the file is corrupt")

// ErrNoSpace is wrapped by the error of a write that the store's disk had
// no room for. The write is rolled back whole; the store keeps what it had.
var ErrNoSpace = errors.New("no space left on its disk")

// OpenSQLite opens (or creates) a SQLite state file in WAL mode with full
// synchronous commits: a write that returned survives a crash.
//
// An existing file is checked before anything is written to it (PRAGMA
// quick_check: every page and index readable and consistent, in time
// linear in the file's size); a damaged one is refused with ErrCorrupt and
// left as it was. So is an existing empty file (0 bytes and no WAL), which a
// store this package made never is: it is a store truncated to nothing.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	return openSQLite(ctx, path, Options{})
}

func openSQLite(ctx context.Context, path string, o Options) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	_, err := os.Stat(path)
	existing := err == nil
	if existing && stillEmpty(ctx, path) {
		return nil, corrupt(path, "it is empty (0 bytes)")
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	s := &DB{db: db, dialect: sqlite, name: path, loc: Location{Kind: SQLite, Shown: path}, calls: newCalls(o)}
	if existing {
		if err := s.quickCheck(ctx); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, s.openErr(err)
	}
	return s, nil
}

// stillEmpty reports whether the file at path is empty, with no WAL beside
// it, and stays so for two seconds: another process that has just created
// the store writes its first page within milliseconds.
func stillEmpty(ctx context.Context, path string) bool {
	for range 40 {
		if size(path) != 0 || size(path+"-wal") > 0 {
			return false
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func size(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

func corrupt(path, detail string) error {
	return fmt.Errorf("open state store %s: %w: %s; refusing to use it: restore it from a backup, or move it away to start an empty store", path, ErrCorrupt, detail)
}

// quickCheck reads the whole file once, writing nothing, and reports a
// damaged one as corrupt with SQLite's first findings.
func (s *DB) quickCheck(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `PRAGMA quick_check(3)`)
	if err != nil {
		return s.openErr(err)
	}
	defer rows.Close()
	var found []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return s.openErr(err)
		}
		found = append(found, line)
	}
	if err := rows.Err(); err != nil {
		return s.openErr(err)
	}
	if len(found) != 1 || found[0] != "ok" {
		return corrupt(s.name, "quick_check: "+strings.ReplaceAll(strings.Join(found, "\n"), "\n", "; "))
	}
	return nil
}

func (s *DB) openErr(err error) error {
	switch sqliteCode(err) {
	case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
		return corrupt(s.name, err.Error())
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("open state store %s: %w: %w", s.name, ErrNoSpace, err)
	}
	return fmt.Errorf("open state store %s: %w", s.name, err)
}

// sqliteCode is the primary result code of a SQLite error, 0 for others.
func sqliteCode(err error) int {
	var se *sqlitedrv.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

type dialect int

const (
	sqlite dialect = iota
	postgres
)

// DB is a SQL state store.
type DB struct {
	db      *sql.DB
	dialect dialect
	name    string
	loc     Location
	calls   calls
	// guard, when set, is the lease every write checks first (Fenced).
	guard *pipeline.Lease
	view  bool // a Fenced view: Close closes nothing
}

// Fenced returns a view whose writes commit only while l is held.
func (s *DB) Fenced(l *pipeline.Lease) pipeline.Store {
	v := *s
	v.guard, v.view = l, true
	return &v
}

// checkGuard is the first statement of a fenced write: the lease row must
// still name the guard's holder and fence. On PostgreSQL the row is locked
// until the write commits, so a takeover waits for it. The lock conflicts
// with itself (FOR NO KEY UPDATE, not FOR SHARE) so that lockers queue: a
// share lock is granted at once to every newcomer while others hold it, and
// a stream of overlapping writes starved a takeover, and the owner's own
// renewals, for minutes. Fenced writes of one lease commit one at a time.
func (s *DB) checkGuard(ctx context.Context, tx *sql.Tx) error {
	if s.guard == nil {
		return nil
	}
	q := `SELECT holder, fence FROM leases WHERE name = ?`
	if s.dialect == postgres {
		q += ` FOR NO KEY UPDATE`
	}
	var holder string
	var fence int64
	err := tx.QueryRowContext(ctx, s.rebind(q), s.guard.Name).Scan(&holder, &fence)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (holder != s.guard.Holder || fence != s.guard.Fence)) {
		return fmt.Errorf("%s: %w", s.guard.Name, pipeline.ErrLeaseLost)
	}
	return err
}

// rebind turns ? placeholders into $n for PostgreSQL.
func (s *DB) rebind(q string) string {
	if s.dialect != postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (s *DB) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
	_, err := tx.ExecContext(ctx, s.rebind(q), args...)
	return err
}

// Close closes the database; a Fenced view closes nothing.
func (s *DB) Close() error {
	if s.view {
		return nil
	}
	return s.db.Close()
}

// migrations are numbered by their index + 1 and never edited once shipped:
// a change is a new entry. {{serial}} is the dialect's auto-numbered key.
var migrations = []string{
	`
CREATE TABLE runs (
	id TEXT PRIMARY KEY, kind TEXT NOT NULL, pipeline TEXT NOT NULL, environment TEXT NOT NULL,
	version TEXT NOT NULL, status TEXT NOT NULL, plan_hash TEXT NOT NULL,
	commits TEXT NOT NULL, images TEXT NOT NULL, params TEXT NOT NULL,
	started_at TEXT NOT NULL, finished_at TEXT);
CREATE TABLE nodes (
	run_id TEXT NOT NULL REFERENCES runs(id), id TEXT NOT NULL, seq INTEGER NOT NULL,
	stage TEXT NOT NULL, item TEXT NOT NULL, environment TEXT NOT NULL, needs TEXT NOT NULL,
	status TEXT NOT NULL, attempts INTEGER NOT NULL, outputs TEXT NOT NULL, error TEXT NOT NULL,
	approval TEXT, started_at TEXT, finished_at TEXT,
	PRIMARY KEY (run_id, id));
CREATE TABLE logs (
	seq {{serial}}, run_id TEXT NOT NULL, node TEXT NOT NULL,
	at TEXT NOT NULL, text TEXT NOT NULL);
CREATE INDEX logs_run ON logs (run_id, node, seq);`,
	`
CREATE TABLE releases (
	version TEXT PRIMARY KEY, pipeline TEXT NOT NULL, run_id TEXT NOT NULL,
	commits TEXT NOT NULL, images TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE deployments (
	seq {{serial}}, environment TEXT NOT NULL, version TEXT NOT NULL,
	run_id TEXT NOT NULL, kind TEXT NOT NULL, images TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX deployments_env ON deployments (environment, seq);
CREATE TABLE leases (
	name TEXT PRIMARY KEY, holder TEXT NOT NULL, fence BIGINT NOT NULL, expires_at TEXT NOT NULL);`,
	// 3: what a run's params held and was read back becomes typed columns
	// (moved over by migrateParams), and versions are handed out per
	// pipeline from a table of their own, seeded with every version a run
	// of kind "run" ever had.
	`
ALTER TABLE runs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN cancel TEXT;
ALTER TABLE runs ADD COLUMN override TEXT;
ALTER TABLE runs ADD COLUMN skip_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN schedule TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN slice_stages TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN progress TEXT;
CREATE TABLE versions (
	pipeline TEXT NOT NULL, version TEXT NOT NULL, run_id TEXT NOT NULL, allocated_at TEXT NOT NULL,
	PRIMARY KEY (pipeline, version));
INSERT INTO versions (pipeline, version, run_id, allocated_at)
	SELECT pipeline, version, MIN(id), MIN(started_at) FROM runs WHERE kind = 'run' AND version <> '' GROUP BY pipeline, version;`,
	// 4: a page of a run's log, from its end or from a cursor, reads only
	// the page (logs_run serves one node's lines, not a whole run's in
	// order); the dashboard lists the waiting runs however old they are.
	`
CREATE INDEX logs_run_seq ON logs (run_id, seq);
CREATE INDEX runs_status ON runs (status, started_at);`,
	// 5: branches. A run records the refs it was started with (a hotfix
	// from a release branch, a branch deployment), and an environment's
	// history the refs and commits of a branch deployment, which has no
	// release record to look them up in.
	`
ALTER TABLE runs ADD COLUMN refs TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments ADD COLUMN refs TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments ADD COLUMN commits TEXT NOT NULL DEFAULT '';`,
	// 6: environments per branch. An instance of a template (dev-login of
	// dev-*) is recorded while it exists, with the Caddy listen addresses
	// picked for it; an address is held by one instance of any pipeline
	// of the store at a time, which the primary key makes sure of.
	`
CREATE TABLE instances (
	pipeline TEXT NOT NULL, name TEXT NOT NULL, template TEXT NOT NULL,
	listen TEXT NOT NULL, created_at TEXT NOT NULL,
	PRIMARY KEY (pipeline, name));
CREATE TABLE instance_addresses (
	address TEXT PRIMARY KEY, pipeline TEXT NOT NULL, name TEXT NOT NULL);`,
}

// migrationSteps are the parts of migrations that SQL alone cannot do in
// both dialects, run right after the migration of the same number.
var migrationSteps = map[int]func(ctx context.Context, tx *sql.Tx, s *DB) error{
	3: migrateParams,
}

// migrateParams moves what migration 3 made typed out of each run's params.
func migrateParams(ctx context.Context, tx *sql.Tx, s *DB) error {
	rows, err := tx.QueryContext(ctx, `SELECT id, params, started_at FROM runs`)
	if err != nil {
		return err
	}
	type moved struct {
		id, params, skip, schedule, stages string
		cancel, override                   any
	}
	var todo []moved
	for rows.Next() {
		var id, raw, started string
		if err := rows.Scan(&id, &raw, &started); err != nil {
			rows.Close()
			return err
		}
		var params map[string]string
		if json.Unmarshal([]byte(raw), &params) != nil {
			continue
		}
		m := moved{id: id, skip: params["skipReason"], schedule: params["schedule"], stages: params["stages"]}
		if by := params["cancelledBy"]; by != "" {
			m.cancel = toJSON(pipeline.Cancel{By: by, At: parseStamp(started)})
		}
		if w := params["forced"]; w != "" {
			m.override = toJSON(pipeline.Override{By: params["forcedBy"], Reason: params["forceReason"], At: parseStamp(started), Windows: strings.Split(w, ",")})
		}
		for _, k := range []string{"skipReason", "schedule", "stages", "cancelledBy", "forced", "forcedBy", "forceReason", "pid", "host"} {
			delete(params, k)
		}
		m.params = toJSON(params)
		todo = append(todo, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range todo {
		if err := s.exec(ctx, tx, `UPDATE runs SET params = ?, skip_reason = ?, schedule = ?, slice_stages = ?, cancel = ?, override = ? WHERE id = ?`,
			m.params, m.skip, m.schedule, m.stages, m.cancel, m.override, m.id); err != nil {
			return err
		}
	}
	return nil
}

// ddl is a migration in the store's dialect.
func (s *DB) ddl(m string) string {
	serial := "INTEGER PRIMARY KEY AUTOINCREMENT"
	if s.dialect == postgres {
		serial = "BIGSERIAL PRIMARY KEY"
	}
	return strings.ReplaceAll(m, "{{serial}}", serial)
}

// SchemaVersion is the number of the newest migration.
var SchemaVersion = len(migrations)

func (s *DB) migrate(ctx context.Context) error {
	// A store already at the newest schema needs no write transaction: on
	// SQLite one would wait behind any process that holds the write lock
	// (an owner stopped mid-write), and every command, read-only ones
	// too, would fail with it.
	var current int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err == nil && current == len(migrations) {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	if s.dialect == postgres {
		// Held until the transaction ends: one migrator at a time.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7265636)`); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	if err := s.exec(ctx, tx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var have int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this release understands (%d)", have, len(migrations))
	}
	for i := have; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, s.ddl(migrations[i])); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if step := migrationSteps[i+1]; step != nil {
			if err := step(ctx, tx, s); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
		}
		if err := s.exec(ctx, tx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, i+1, stamp(time.Now())); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	return tx.Commit()
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func stampPtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return stamp(*t)
}

func parseStamp(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

func parseStampPtr(s sql.NullString) *time.Time {
	if !s.Valid {
		return nil
	}
	t := parseStamp(s.String)
	return &t
}

func toJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("store: marshal %T: %v", v, err)) // only plain maps and structs are stored
	}
	return string(b)
}

// mapOrBlank is m as JSON, or "" for an empty map: the columns of
// migration 5 are blank for the rows from before it and for a run without
// refs.
func mapOrBlank(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	return toJSON(m)
}

// blankOrMap reads a column that mapOrBlank wrote.
func blankOrMap(s string, m *map[string]string) error {
	if s == "" {
		*m = nil
		return nil
	}
	return json.Unmarshal([]byte(s), m)
}

// scrub hides the store's passwords in err.
func (s *DB) scrub(err error) error { return s.loc.Scrub(err) }

// CreateRun records a new run and its nodes in one transaction.
func (s *DB) CreateRun(ctx context.Context, r *pipeline.Run) error {
	tried := false
	return s.wtx(ctx, "record run "+r.ID, func(ctx context.Context, tx *sql.Tx) error {
		again := tried
		tried = true
		res, err := tx.ExecContext(ctx, s.rebind(`INSERT INTO runs (id, kind, pipeline, environment, version, status, plan_hash, commits, images, params, started_at, finished_at,
				owner, cancel, override, skip_reason, schedule, slice_stages, refs)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`),
			r.ID, r.Kind, r.Pipeline, r.Environment, r.Version, string(r.Status), r.PlanHash,
			toJSON(r.Commits), toJSON(r.Images), toJSON(r.Params), stamp(r.StartedAt), stampPtr(r.FinishedAt),
			r.Owner, jsonOrNil(r.Cancel), jsonOrNil(r.Override), r.SkipReason, r.Schedule, strings.Join(r.Stages, ","), mapOrBlank(r.Refs))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			// An earlier attempt of this call whose commit got through
			// but whose answer did not left the run recorded by this
			// same owner: done.
			var owner, started string
			if err := tx.QueryRowContext(ctx, s.rebind(`SELECT owner, started_at FROM runs WHERE id = ?`), r.ID).Scan(&owner, &started); err != nil {
				return err
			}
			if again && owner == r.Owner && started == stamp(r.StartedAt) {
				return nil
			}
			return fmt.Errorf("a run with id %s exists already", r.ID)
		}
		for i, n := range r.Nodes {
			err := s.exec(ctx, tx, `INSERT INTO nodes (run_id, id, seq, stage, item, environment, needs, status, attempts, outputs, error, approval, started_at, finished_at, progress)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				r.ID, n.ID, i, n.Stage, n.Item, n.Environment, toJSON(n.Needs), string(n.Status), n.Attempts,
				toJSON(n.Outputs), n.Error, approvalJSON(n), stampPtr(n.StartedAt), stampPtr(n.FinishedAt), progressJSON(n))
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// jsonOrNil is v as JSON, or SQL NULL for a nil pointer.
func jsonOrNil[T any](v *T) any {
	if v == nil {
		return nil
	}
	return toJSON(v)
}

func progressJSON(n *pipeline.Node) any {
	if len(n.Progress) == 0 {
		return nil
	}
	return toJSON(n.Progress)
}

func approvalJSON(n *pipeline.Node) any {
	if n.Approval == nil {
		return nil
	}
	return toJSON(n.Approval)
}

// Approve sets the approval of the waiting nodes among nodes, and only
// that column: what the owner writes of a node is left alone.
func (s *DB) Approve(ctx context.Context, id string, nodes []string, a *stages.Approval) ([]string, error) {
	var done []string
	err := s.tx(ctx, "approve run "+id, func(ctx context.Context, tx *sql.Tx) error {
		done = done[:0]
		for _, n := range nodes {
			res, err := tx.ExecContext(ctx, s.rebind(`UPDATE nodes SET approval = ? WHERE run_id = ? AND id = ? AND status = ?`), toJSON(a), id, n, string(pipeline.Waiting))
			if err != nil {
				return err
			}
			if c, _ := res.RowsAffected(); c > 0 {
				done = append(done, n)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return done, nil
}

// RequestCancel records that by asked run id to stop for good. It is the
// one write to a run that needs no claim: the owner reads it and stops.
func (s *DB) RequestCancel(ctx context.Context, id string, c pipeline.Cancel) error {
	return s.tx(ctx, "cancel run "+id, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.rebind(`UPDATE runs SET cancel = ? WHERE id = ? AND cancel IS NULL`), toJSON(c), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		var one int
		err = tx.QueryRowContext(ctx, s.rebind(`SELECT 1 FROM runs WHERE id = ?`), id).Scan(&one)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return pipeline.ErrNotFound
		case err != nil:
			return err
		}
		return pipeline.ErrAlreadyCancelled
	})
}

// SaveRun updates the run's own fields.
func (s *DB) SaveRun(ctx context.Context, r *pipeline.Run) error {
	return s.wtx(ctx, "record run "+r.ID, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.rebind(`UPDATE runs SET version = ?, status = ?, plan_hash = ?, commits = ?, images = ?, params = ?, finished_at = ?,
				owner = ?, override = ?, skip_reason = ?, schedule = ?, slice_stages = ?, refs = ? WHERE id = ?`),
			r.Version, string(r.Status), r.PlanHash, toJSON(r.Commits), toJSON(r.Images), toJSON(r.Params), stampPtr(r.FinishedAt),
			r.Owner, jsonOrNil(r.Override), r.SkipReason, r.Schedule, strings.Join(r.Stages, ","), mapOrBlank(r.Refs), r.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return pipeline.ErrNotFound
		}
		return nil
	})
}

// SaveNodes updates nodes of a run in one transaction.
func (s *DB) SaveNodes(ctx context.Context, runID string, nodes ...*pipeline.Node) error {
	if len(nodes) == 0 {
		return nil
	}
	return s.wtx(ctx, "record nodes of run "+runID, func(ctx context.Context, tx *sql.Tx) error {
		for _, n := range nodes {
			res, err := tx.ExecContext(ctx, s.rebind(`UPDATE nodes SET status = ?, attempts = ?, outputs = ?, error = ?, approval = ?, started_at = ?, finished_at = ?, progress = ? WHERE run_id = ? AND id = ?`),
				string(n.Status), n.Attempts, toJSON(n.Outputs), n.Error, approvalJSON(n), stampPtr(n.StartedAt), stampPtr(n.FinishedAt), progressJSON(n), runID, n.ID)
			if err != nil {
				return err
			}
			if c, _ := res.RowsAffected(); c == 0 {
				return fmt.Errorf("node %s: %w", n.ID, pipeline.ErrNotFound)
			}
		}
		return nil
	})
}

const runColumns = `id, kind, pipeline, environment, version, status, plan_hash, commits, images, params, started_at, finished_at,
	owner, cancel, override, skip_reason, schedule, slice_stages, refs`

func scanRun(row interface{ Scan(...any) error }) (*pipeline.Run, error) {
	var r pipeline.Run
	var status, commits, images, params, started, sliceStages, refs string
	var finished, cancel, override sql.NullString
	if err := row.Scan(&r.ID, &r.Kind, &r.Pipeline, &r.Environment, &r.Version, &status, &r.PlanHash, &commits, &images, &params, &started, &finished,
		&r.Owner, &cancel, &override, &r.SkipReason, &r.Schedule, &sliceStages, &refs); err != nil {
		return nil, err
	}
	if err := blankOrMap(refs, &r.Refs); err != nil {
		return nil, fmt.Errorf("run %s: corrupt record: %w", r.ID, err)
	}
	if sliceStages != "" {
		r.Stages = strings.Split(sliceStages, ",")
	}
	if cancel.Valid {
		if err := json.Unmarshal([]byte(cancel.String), &r.Cancel); err != nil {
			return nil, fmt.Errorf("run %s: corrupt record: %w", r.ID, err)
		}
	}
	if override.Valid {
		if err := json.Unmarshal([]byte(override.String), &r.Override); err != nil {
			return nil, fmt.Errorf("run %s: corrupt record: %w", r.ID, err)
		}
	}
	r.Status = pipeline.Status(status)
	r.StartedAt = parseStamp(started)
	r.FinishedAt = parseStampPtr(finished)
	for _, f := range []struct {
		src string
		dst *map[string]string
	}{{commits, &r.Commits}, {images, &r.Images}, {params, &r.Params}} {
		if err := json.Unmarshal([]byte(f.src), f.dst); err != nil {
			return nil, fmt.Errorf("run %s: corrupt record: %w", r.ID, err)
		}
	}
	return &r, nil
}

// Run returns a run with its nodes; a unique prefix of its id will do.
func (s *DB) Run(ctx context.Context, id string) (*pipeline.Run, error) {
	return read(ctx, s, "read run "+id, func(ctx context.Context) (*pipeline.Run, error) { return s.run(ctx, id) })
}

func (s *DB) run(ctx context.Context, id string) (*pipeline.Run, error) {
	if id == "" {
		return nil, fmt.Errorf("run %q: %w", id, pipeline.ErrNotFound)
	}
	rows, err := s.db.QueryContext(ctx, s.rebind(`SELECT id FROM runs WHERE id = ? OR id LIKE ? ESCAPE '!' ORDER BY id LIMIT 3`), id, likePrefix(id))
	if err != nil {
		return nil, fmt.Errorf("read run %s: %w", id, err)
	}
	var ids []string
	for rows.Next() {
		var got string
		if err := rows.Scan(&got); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read run %s: %w", id, err)
		}
		if got == id {
			ids = []string{got}
			break
		}
		ids = append(ids, got)
	}
	rows.Close()
	switch {
	case len(ids) == 0:
		return nil, fmt.Errorf("run %s: %w", id, pipeline.ErrNotFound)
	case len(ids) > 1:
		return nil, fmt.Errorf("run %s: the prefix matches several runs (%s, …)", id, strings.Join(ids[:2], ", "))
	}
	r, err := scanRun(s.db.QueryRowContext(ctx, s.rebind(`SELECT `+runColumns+` FROM runs WHERE id = ?`), ids[0]))
	if err != nil {
		return nil, fmt.Errorf("read run %s: %w", id, err)
	}
	nrows, err := s.db.QueryContext(ctx, s.rebind(`SELECT id, stage, item, environment, needs, status, attempts, outputs, error, approval, started_at, finished_at, progress FROM nodes WHERE run_id = ? ORDER BY seq`), r.ID)
	if err != nil {
		return nil, fmt.Errorf("read run %s: %w", id, err)
	}
	defer nrows.Close()
	for nrows.Next() {
		var n pipeline.Node
		var needs, status, outputs string
		var approval, started, finished, progress sql.NullString
		if err := nrows.Scan(&n.ID, &n.Stage, &n.Item, &n.Environment, &needs, &status, &n.Attempts, &outputs, &n.Error, &approval, &started, &finished, &progress); err != nil {
			return nil, fmt.Errorf("read run %s: %w", id, err)
		}
		n.Status = pipeline.Status(status)
		n.StartedAt, n.FinishedAt = parseStampPtr(started), parseStampPtr(finished)
		if err := errors.Join(json.Unmarshal([]byte(needs), &n.Needs), json.Unmarshal([]byte(outputs), &n.Outputs)); err != nil {
			return nil, fmt.Errorf("read run %s: node %s: corrupt record: %w", id, n.ID, err)
		}
		if progress.Valid {
			if err := json.Unmarshal([]byte(progress.String), &n.Progress); err != nil {
				return nil, fmt.Errorf("read run %s: node %s: corrupt record: %w", id, n.ID, err)
			}
		}
		if approval.Valid {
			if err := json.Unmarshal([]byte(approval.String), &n.Approval); err != nil {
				return nil, fmt.Errorf("read run %s: node %s: corrupt record: %w", id, n.ID, err)
			}
		}
		r.Nodes = append(r.Nodes, &n)
	}
	return r, nrows.Err()
}

// likePrefix is a LIKE pattern for ids starting with s, its wildcards
// escaped with '!'.
func likePrefix(s string) string {
	r := strings.NewReplacer(`!`, `!!`, `%`, `!%`, `_`, `!_`)
	return r.Replace(s) + "%"
}

// Runs lists runs, newest first, without nodes.
func (s *DB) Runs(ctx context.Context, f pipeline.RunFilter) ([]*pipeline.Run, error) {
	return read(ctx, s, "list runs", func(ctx context.Context) ([]*pipeline.Run, error) { return s.runs(ctx, f) })
}

func (s *DB) runs(ctx context.Context, f pipeline.RunFilter) ([]*pipeline.Run, error) {
	var where []string
	var args []any
	if len(f.Status) > 0 {
		where = append(where, `status IN (?`+strings.Repeat(`, ?`, len(f.Status)-1)+`)`)
		for _, st := range f.Status {
			args = append(args, string(st))
		}
	}
	if f.Environment != "" {
		where = append(where, `(environment = ? OR EXISTS (SELECT 1 FROM nodes WHERE nodes.run_id = runs.id AND nodes.environment = ?))`)
		args = append(args, f.Environment, f.Environment)
	}
	if f.Kind != "" {
		where = append(where, `kind = ?`)
		args = append(args, f.Kind)
	}
	// The order is (started_at, id), newest first: a cursor is a place in
	// it. Newer runs are read oldest first, so that the limit keeps the
	// ones nearest the cursor, and turned round below.
	order := ` ORDER BY started_at DESC, id DESC`
	for _, c := range []struct {
		id, cmp string
	}{{f.Before, "<"}, {f.After, ">"}} {
		if c.id == "" {
			continue
		}
		var started string
		err := s.db.QueryRowContext(ctx, s.rebind(`SELECT started_at FROM runs WHERE id = ?`), c.id).Scan(&started)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("list runs: run %s: %w", c.id, pipeline.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		where = append(where, `(started_at `+c.cmp+` ? OR (started_at = ? AND id `+c.cmp+` ?))`)
		args = append(args, started, started, c.id)
		if c.cmp == ">" {
			order = ` ORDER BY started_at, id`
		}
	}
	q := `SELECT ` + runColumns + ` FROM runs`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += order
	if f.Limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, s.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var out []*pipeline.Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		out = append(out, r)
	}
	if f.After != "" {
		slices.Reverse(out)
	}
	return out, rows.Err()
}

// AppendLog adds output lines of a run.
func (s *DB) AppendLog(ctx context.Context, runID string, lines []pipeline.LogLine) error {
	if len(lines) == 0 {
		return nil
	}
	return s.tx(ctx, "record log of run "+runID, func(ctx context.Context, tx *sql.Tx) error {
		for _, l := range lines {
			if err := s.exec(ctx, tx, `INSERT INTO logs (run_id, node, at, text) VALUES (?, ?, ?, ?)`, runID, l.Node, stamp(l.At), l.Text); err != nil {
				return err
			}
		}
		return nil
	})
}

// Logs returns a run's output lines in order, of one node when node is set.
func (s *DB) Logs(ctx context.Context, runID, node string) ([]pipeline.LogLine, error) {
	return s.logs(ctx, runID, node, "", nil, false, 0)
}

// LogPage returns up to limit lines after the cursor after, in order, and
// the cursor of the next page.
func (s *DB) LogPage(ctx context.Context, runID, node string, after int64, limit int) ([]pipeline.LogLine, int64, error) {
	lines, err := s.logs(ctx, runID, node, ` AND seq > ?`, []any{after}, false, limit)
	if n := len(lines); n > 0 {
		after = lines[n-1].Seq
	}
	return lines, after, err
}

// LogTail returns the last limit lines before the cursor before (0: the
// end), in order.
func (s *DB) LogTail(ctx context.Context, runID, node string, before int64, limit int) ([]pipeline.LogLine, error) {
	cond, args := "", []any(nil)
	if before > 0 {
		cond, args = ` AND seq < ?`, []any{before}
	}
	lines, err := s.logs(ctx, runID, node, cond, args, true, limit)
	slices.Reverse(lines)
	return lines, err
}

// logs reads the lines of a run's log that match cond (with its args), in
// order or from the last one back (desc); at most limit when limit > 0.
func (s *DB) logs(ctx context.Context, runID, node, cond string, condArgs []any, desc bool, limit int) ([]pipeline.LogLine, error) {
	return read(ctx, s, "read log of run "+runID, func(ctx context.Context) ([]pipeline.LogLine, error) {
		return s.queryLogs(ctx, runID, node, cond, condArgs, desc, limit)
	})
}

func (s *DB) queryLogs(ctx context.Context, runID, node, cond string, condArgs []any, desc bool, limit int) ([]pipeline.LogLine, error) {
	q := `SELECT seq, node, at, text FROM logs WHERE run_id = ?`
	args := []any{runID}
	if node != "" {
		q += ` AND node = ?`
		args = append(args, node)
	}
	q += cond
	args = append(args, condArgs...)
	q += ` ORDER BY seq`
	if desc {
		q += ` DESC`
	}
	if limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(limit)
	}
	rows, err := s.db.QueryContext(ctx, s.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("read log of run %s: %w", runID, err)
	}
	defer rows.Close()
	var out []pipeline.LogLine
	for rows.Next() {
		var l pipeline.LogLine
		var at string
		if err := rows.Scan(&l.Seq, &l.Node, &at, &l.Text); err != nil {
			return nil, fmt.Errorf("read log of run %s: %w", runID, err)
		}
		l.At = parseStamp(at)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read log of run %s: %w", runID, err)
	}
	return out, nil
}

// RecordRelease stores a release once.
func (s *DB) RecordRelease(ctx context.Context, r *pipeline.Release) error {
	return s.wtx(ctx, "record release "+r.Version, func(ctx context.Context, tx *sql.Tx) error {
		var commits, images string
		err := tx.QueryRowContext(ctx, s.rebind(`SELECT commits, images FROM releases WHERE version = ?`), r.Version).Scan(&commits, &images)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return s.exec(ctx, tx, `INSERT INTO releases (version, pipeline, run_id, commits, images, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
				r.Version, r.Pipeline, r.RunID, toJSON(orEmpty(r.Commits)), toJSON(orEmpty(r.Images)), stamp(r.CreatedAt))
		case err != nil:
			return err
		case commits == toJSON(orEmpty(r.Commits)) && images == toJSON(orEmpty(r.Images)):
			return nil
		}
		return pipeline.ErrReleaseChanged
	})
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// Release returns the release of a version.
func (s *DB) Release(ctx context.Context, version string) (*pipeline.Release, error) {
	return read(ctx, s, "read release "+version, func(ctx context.Context) (*pipeline.Release, error) { return s.release(ctx, version) })
}

func (s *DB) release(ctx context.Context, version string) (*pipeline.Release, error) {
	var r pipeline.Release
	var commits, images, created string
	err := s.db.QueryRowContext(ctx, s.rebind(`SELECT version, pipeline, run_id, commits, images, created_at FROM releases WHERE version = ?`), version).
		Scan(&r.Version, &r.Pipeline, &r.RunID, &commits, &images, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("release %s: %w", version, pipeline.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read release %s: %w", version, err)
	}
	if err := errors.Join(json.Unmarshal([]byte(commits), &r.Commits), json.Unmarshal([]byte(images), &r.Images)); err != nil {
		return nil, fmt.Errorf("read release %s: corrupt record: %w", version, err)
	}
	r.CreatedAt = parseStamp(created)
	return &r, nil
}

// RecordDeployment adds to an environment's history.
func (s *DB) RecordDeployment(ctx context.Context, d *pipeline.Deployment) error {
	return s.wtx(ctx, "record deployment of "+d.Version+" to "+d.Environment, func(ctx context.Context, tx *sql.Tx) error {
		return s.exec(ctx, tx, `INSERT INTO deployments (environment, version, run_id, kind, images, at, refs, commits) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			d.Environment, d.Version, d.RunID, d.Kind, toJSON(orEmpty(d.Images)), stamp(d.At), mapOrBlank(d.Refs), mapOrBlank(d.Commits))
	})
}

// Deployments returns history, newest first.
func (s *DB) Deployments(ctx context.Context, env string, limit int) ([]*pipeline.Deployment, error) {
	return read(ctx, s, "read deployments", func(ctx context.Context) ([]*pipeline.Deployment, error) { return s.deployments(ctx, env, limit) })
}

func (s *DB) deployments(ctx context.Context, env string, limit int) ([]*pipeline.Deployment, error) {
	q := `SELECT seq, environment, version, run_id, kind, images, at, refs, commits FROM deployments`
	var args []any
	if env != "" {
		q += ` WHERE environment = ?`
		args = append(args, env)
	}
	q += ` ORDER BY seq DESC`
	if limit > 0 {
		q += ` LIMIT ` + strconv.Itoa(limit)
	}
	rows, err := s.db.QueryContext(ctx, s.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("read deployments: %w", err)
	}
	defer rows.Close()
	var out []*pipeline.Deployment
	for rows.Next() {
		var d pipeline.Deployment
		var images, at, refs, commits string
		if err := rows.Scan(&d.Seq, &d.Environment, &d.Version, &d.RunID, &d.Kind, &images, &at, &refs, &commits); err != nil {
			return nil, fmt.Errorf("read deployments: %w", err)
		}
		if err := errors.Join(json.Unmarshal([]byte(images), &d.Images), blankOrMap(refs, &d.Refs), blankOrMap(commits, &d.Commits)); err != nil {
			return nil, fmt.Errorf("read deployments: corrupt record: %w", err)
		}
		d.At = parseStamp(at)
		out = append(out, &d)
	}
	return out, rows.Err()
}

// AcquireLease takes a lease when it is free, expired or already ours.
func (s *DB) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (*pipeline.Lease, error) {
	return s.takeLease(ctx, name, "", holder, ttl)
}

// TakeOverLease takes a lease from a holder known to be dead, if it still
// holds it.
func (s *DB) TakeOverLease(ctx context.Context, name, from, holder string, ttl time.Duration) (*pipeline.Lease, error) {
	return s.takeLease(ctx, name, from, holder, ttl)
}

// takeLease takes the lease for holder when it is free, expired, already
// the holder's, or held by from (when from is set). Every taking moves the
// fence on, so the writes of the one it was taken from are refused.
func (s *DB) takeLease(ctx context.Context, name, from, holder string, ttl time.Duration) (*pipeline.Lease, error) {
	var lease *pipeline.Lease
	err := s.tx(ctx, "acquire lease "+name, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.exec(ctx, tx, `INSERT INTO leases (name, holder, fence, expires_at) VALUES (?, '', 0, ?) ON CONFLICT (name) DO NOTHING`, name, stamp(time.Unix(0, 0))); err != nil {
			return err
		}
		q := `SELECT holder, fence, expires_at FROM leases WHERE name = ?`
		if s.dialect == postgres {
			q += ` FOR UPDATE`
		}
		var cur pipeline.Lease
		var expires string
		if err := tx.QueryRowContext(ctx, s.rebind(q), name).Scan(&cur.Holder, &cur.Fence, &expires); err != nil {
			return err
		}
		now := time.Now().UTC()
		free := cur.Holder == "" || cur.Holder == holder || !parseStamp(expires).After(now) || (from != "" && cur.Holder == from)
		if !free {
			return &pipeline.HeldError{Name: name, Holder: cur.Holder, Expires: parseStamp(expires)}
		}
		lease = &pipeline.Lease{Name: name, Holder: holder, Fence: cur.Fence + 1, Expires: now.Add(ttl)}
		return s.exec(ctx, tx, `UPDATE leases SET holder = ?, fence = ?, expires_at = ? WHERE name = ?`, holder, lease.Fence, stamp(lease.Expires), name)
	})
	if err != nil {
		return nil, err
	}
	return lease, nil
}

// RenewLease extends a lease that is still ours with the same fence.
func (s *DB) RenewLease(ctx context.Context, l *pipeline.Lease, ttl time.Duration) error {
	expires := time.Now().UTC().Add(ttl)
	err := s.tx(ctx, "renew lease "+l.Name, func(ctx context.Context, tx *sql.Tx) error {
		var holder, exp string
		var fence int64
		err := tx.QueryRowContext(ctx, s.rebind(`SELECT holder, fence, expires_at FROM leases WHERE name = ?`), l.Name).Scan(&holder, &fence, &exp)
		if errors.Is(err, sql.ErrNoRows) {
			return pipeline.ErrLeaseLost
		}
		if err != nil {
			return err
		}
		if holder != l.Holder || fence != l.Fence {
			return pipeline.ErrLeaseLost
		}
		return s.exec(ctx, tx, `UPDATE leases SET expires_at = ? WHERE name = ? AND fence = ?`, stamp(expires), l.Name, l.Fence)
	})
	if err != nil {
		return err
	}
	l.Expires = expires
	return nil
}

// ReleaseLease frees a lease still held with l's fence.
func (s *DB) ReleaseLease(ctx context.Context, l *pipeline.Lease) error {
	return s.tx(ctx, "release lease "+l.Name, func(ctx context.Context, tx *sql.Tx) error {
		return s.exec(ctx, tx, `UPDATE leases SET holder = '', expires_at = ? WHERE name = ? AND holder = ? AND fence = ?`, stamp(time.Unix(0, 0)), l.Name, l.Holder, l.Fence)
	})
}

// AllocateVersion hands out one version of a pipeline to runID. The
// primary key (pipeline, version) makes a second taker of the same version
// fail; pick is then asked again with the newer list.
func (s *DB) AllocateVersion(ctx context.Context, pipe, runID string, pick func(taken []string) (string, error)) (string, error) {
	for attempt := 0; ; attempt++ {
		var got string
		err := s.tx(ctx, "allocate a version of "+pipe, func(ctx context.Context, tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, s.rebind(`SELECT version, run_id FROM versions WHERE pipeline = ?`), pipe)
			if err != nil {
				return err
			}
			var taken []string
			mine := ""
			for rows.Next() {
				var v, owner string
				if err := rows.Scan(&v, &owner); err != nil {
					rows.Close()
					return err
				}
				taken = append(taken, v)
				if owner == runID {
					mine = v
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if mine != "" {
				// An attempt whose commit got through but whose answer
				// did not: the version is runID's already.
				got = mine
				return nil
			}
			v, err := pick(taken)
			if err != nil {
				return &pickError{err}
			}
			got = v
			return s.exec(ctx, tx, `INSERT INTO versions (pipeline, version, run_id, allocated_at) VALUES (?, ?, ?, ?)`, pipe, v, runID, stamp(time.Now()))
		})
		var pe *pickError
		switch {
		case err == nil:
			return got, nil
		case errors.As(err, &pe):
			return "", pe.err
		case uniqueViolation(err) && attempt < 20 && ctx.Err() == nil:
			// Another process took it between our read and insert. A
			// short random wait spreads out takers that keep colliding.
			_ = retry.Sleep(ctx, time.Duration(rand.IntN(5*(attempt+1)))*time.Millisecond)
			continue
		}
		return "", err
	}
}

// pickError carries the picker's own error through the transaction.
type pickError struct{ err error }

func (e *pickError) Error() string { return e.err.Error() }

// uniqueViolation reports a duplicate primary key (SQLite's constraint
// error, PostgreSQL's 23505).
func uniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT
}

// FreeVersion gives back a version allocated to a run that was never
// recorded.
func (s *DB) FreeVersion(ctx context.Context, pipe, version, runID string) error {
	return s.tx(ctx, "give back version "+version+" of "+pipe, func(ctx context.Context, tx *sql.Tx) error {
		return s.exec(ctx, tx, `DELETE FROM versions WHERE pipeline = ? AND version = ? AND run_id = ? AND NOT EXISTS (SELECT 1 FROM runs WHERE id = ?)`, pipe, version, runID, runID)
	})
}

// CreateInstance records an instance once: an instance recorded already
// is returned as it is; otherwise pick chooses its listen addresses, given
// those every instance of the store holds, and a second taker of one of
// them (another process, at the same time) makes pick be asked again.
func (s *DB) CreateInstance(ctx context.Context, pipe, name, template string, pick func(taken []string) (map[string]string, error)) (*pipeline.Instance, error) {
	for attempt := 0; ; attempt++ {
		var got *pipeline.Instance
		err := s.tx(ctx, "record environment "+name, func(ctx context.Context, tx *sql.Tx) error {
			if in, err := s.instanceTx(ctx, tx, pipe, name); err == nil {
				got = in
				return nil
			} else if !errors.Is(err, pipeline.ErrNotFound) {
				return err
			}
			rows, err := tx.QueryContext(ctx, `SELECT address FROM instance_addresses`)
			if err != nil {
				return err
			}
			var taken []string
			for rows.Next() {
				var a string
				if err := rows.Scan(&a); err != nil {
					rows.Close()
					return err
				}
				taken = append(taken, a)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			listen, err := pick(taken)
			if err != nil {
				return &pickError{err}
			}
			got = &pipeline.Instance{Pipeline: pipe, Name: name, Template: template, Listen: orEmpty(listen), CreatedAt: time.Now().UTC()}
			if err := s.exec(ctx, tx, `INSERT INTO instances (pipeline, name, template, listen, created_at) VALUES (?, ?, ?, ?, ?)`,
				pipe, name, template, toJSON(got.Listen), stamp(got.CreatedAt)); err != nil {
				return err
			}
			for _, a := range got.Listen {
				if err := s.exec(ctx, tx, `INSERT INTO instance_addresses (address, pipeline, name) VALUES (?, ?, ?)`, a, pipe, name); err != nil {
					return err
				}
			}
			return nil
		})
		var pe *pickError
		switch {
		case err == nil:
			return got, nil
		case errors.As(err, &pe):
			return nil, pe.err
		case uniqueViolation(err) && attempt < 20 && ctx.Err() == nil:
			_ = retry.Sleep(ctx, time.Duration(rand.IntN(5*(attempt+1)))*time.Millisecond)
			continue
		}
		return nil, err
	}
}

// Instance returns the record of an instance; ErrNotFound when there is
// none.
func (s *DB) Instance(ctx context.Context, pipe, name string) (*pipeline.Instance, error) {
	return read(ctx, s, "read environment "+name, func(ctx context.Context) (*pipeline.Instance, error) {
		return s.instanceTx(ctx, nil, pipe, name)
	})
}

func (s *DB) instanceTx(ctx context.Context, tx *sql.Tx, pipe, name string) (*pipeline.Instance, error) {
	list, err := s.instances(ctx, tx, `WHERE pipeline = ? AND name = ?`, pipe, name)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("environment %s: %w", name, pipeline.ErrNotFound)
	}
	return list[0], nil
}

// Instances returns the instances of a pipeline, by name.
func (s *DB) Instances(ctx context.Context, pipe string) ([]*pipeline.Instance, error) {
	return read(ctx, s, "read environments", func(ctx context.Context) ([]*pipeline.Instance, error) {
		return s.instances(ctx, nil, `WHERE pipeline = ?`, pipe)
	})
}

func (s *DB) instances(ctx context.Context, tx *sql.Tx, where string, args ...any) ([]*pipeline.Instance, error) {
	q := s.rebind(`SELECT pipeline, name, template, listen, created_at FROM instances ` + where + ` ORDER BY name`)
	var rows *sql.Rows
	var err error
	if tx != nil {
		rows, err = tx.QueryContext(ctx, q, args...)
	} else {
		rows, err = s.db.QueryContext(ctx, q, args...)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*pipeline.Instance
	for rows.Next() {
		var in pipeline.Instance
		var listen, created string
		if err := rows.Scan(&in.Pipeline, &in.Name, &in.Template, &listen, &created); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(listen), &in.Listen); err != nil {
			return nil, fmt.Errorf("environment %s: corrupt record: %w", in.Name, err)
		}
		in.CreatedAt = parseStamp(created)
		out = append(out, &in)
	}
	return out, rows.Err()
}

// RemoveInstance deletes an instance's record and frees its addresses; a
// missing one is fine.
func (s *DB) RemoveInstance(ctx context.Context, pipe, name string) error {
	return s.tx(ctx, "remove environment "+name, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.exec(ctx, tx, `DELETE FROM instance_addresses WHERE pipeline = ? AND name = ?`, pipe, name); err != nil {
			return err
		}
		return s.exec(ctx, tx, `DELETE FROM instances WHERE pipeline = ? AND name = ?`, pipe, name)
	})
}

var _ pipeline.Store = (*DB)(nil)
