package store

import (
	"errors"
	"net/url"
	"slices"
	"strings"

	"github.com/sweepboard/release/pipeline/redact"
)

// Kind is the store a state string names.
type Kind int

// The kinds of store.
const (
	SQLite Kind = iota + 1
	Postgres
)

// ErrRefused is wrapped by the error for a state string that names no store
// for certain: a malformed PostgreSQL URL, another scheme, something between
// a path and a connection string. It is refused before anything is created
// or dialled, and its error never quotes what could be a password.
var ErrRefused = errors.New("refused")

// refusedError is a refusal: shown is as much of the string as is safe to
// name it by, empty when nothing is.
type refusedError struct{ shown, why string }

func (e *refusedError) Error() string {
	if e.shown == "" {
		return "state store: refused: " + e.why
	}
	return "state store " + e.shown + ": refused: " + e.why
}

func (e *refusedError) Unwrap() error { return ErrRefused }

func refuse(shown, why string) error { return &refusedError{shown: shown, why: why} }

// Location is a state string parsed: which store, what the driver gets, how
// messages name it, and the secrets to scrub from what the driver says.
type Location struct {
	Kind Kind
	// Shown names the store for messages: no password in any form.
	Shown   string
	conn    string
	secrets []string
}

// keywords are libpq's connection keywords (its PQconninfoOptions).
var keywords = []string{
	"application_name", "channel_binding", "client_encoding", "connect_timeout", "dbname",
	"fallback_application_name", "gssdelegation", "gssencmode", "gsslib", "host", "hostaddr",
	"keepalives", "keepalives_count", "keepalives_idle", "keepalives_interval", "krbsrvname",
	"load_balance_hosts", "max_protocol_version", "min_protocol_version", "options", "passfile",
	"password", "port", "replication", "require_auth", "requirepeer", "service", "ssl_max_protocol_version",
	"ssl_min_protocol_version", "sslcert", "sslcertmode", "sslcompression", "sslcrl", "sslcrldir",
	"sslkey", "sslkeylogfile", "sslmode", "sslnegotiation", "sslpassword", "sslrootcert", "sslsni", "target_session_attrs",
	"tcp_user_timeout", "user",
}

// secretKeywords hold passwords, in a key=value string or a URL's query.
var secretKeywords = []string{"password", "sslpassword"}

// Parse says which store dsn names without touching anything: a
// postgres:// or postgresql:// URL, or a libpq key=value string whose
// keywords are all libpq's, is PostgreSQL; a plain path is SQLite; the rest
// is refused (ErrRefused). A URL is checked more strictly than url.Parse
// does, so that a password with an unescaped @, / or # is refused rather
// than split into a host name that the driver would look up.
func Parse(dsn string) (Location, error) {
	scheme, _, isURL := strings.Cut(dsn, "://")
	switch {
	case dsn == "":
		return Location{}, refuse("", "empty")
	case isURL && (strings.EqualFold(scheme, "postgres") || strings.EqualFold(scheme, "postgresql")):
		return parseURL(dsn)
	case isURL:
		if !isScheme(scheme) {
			scheme = "…"
		}
		return Location{}, refuse(scheme+"://…", "not a postgres:// or postgresql:// URL, nor a file path")
	}
	if pairs, ok := keywordValues(dsn); ok {
		return keywordLocation(dsn, pairs), nil
	}
	const hidden = "; it is not shown, as it may hold a password"
	first, _, _ := strings.Cut(dsn, "/")
	switch {
	case strings.Contains(strings.ToLower(dsn), "password="):
		return Location{}, refuse("", "it holds password= but is not a key=value connection string libpq reads (keywords such as host, port, dbname, user, password, sslmode; values with spaces in single quotes)"+hidden)
	case strings.Contains(dsn, "=") && strings.ContainsAny(dsn, " \t\n"):
		return Location{}, refuse("", "it has = and spaces like a key=value connection string, but is not one libpq reads (keywords such as host, port, dbname, user, password, sslmode; values with spaces in single quotes)"+hidden)
	case strings.Contains(first, "@") && strings.Contains(first, ":"):
		return Location{}, refuse("", "it looks like user:password@host without postgres://"+hidden)
	}
	return Location{Kind: SQLite, Shown: dsn, conn: dsn}, nil
}

func isScheme(s string) bool {
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return s != ""
}

// parseURL checks a PostgreSQL URL. Its one @, if any, must end the
// authority (so a password's unescaped @, /, ? or # is caught: each moves
// an @ past the authority's end or adds one), and it has no fragment.
func parseURL(dsn string) (Location, error) {
	scheme, rest, _ := strings.Cut(dsn, "://")
	scheme = strings.ToLower(scheme)
	malformed := func(why string) error {
		return refuse(scheme+"://***@…", "malformed URL ("+why+"), its password not shown; percent-encode @ / ? # : in the user and password")
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	switch {
	case strings.Contains(rest, "#"):
		return Location{}, malformed("a # in it")
	case strings.Count(rest, "@") > 1:
		return Location{}, malformed("more than one @")
	case strings.Contains(rest, "@") && !strings.Contains(authority, "@"):
		return Location{}, malformed("an @ after the host")
	case strings.ContainsAny(dsn, " \t\n\x00"):
		return Location{}, malformed("a space in it")
	}
	u, err := url.Parse(dsn)
	if err != nil { // its text quotes the URL
		return Location{}, malformed("it does not parse")
	}
	loc := Location{Kind: Postgres}
	shown := *u
	shown.User = nil
	userinfo := ""
	if u.User != nil {
		userinfo = url.User(u.User.Username()).String()
		if pw, ok := u.User.Password(); ok {
			loc.secrets = append(loc.secrets, pw)
			userinfo += ":***" // url.UserPassword would escape it to %2A%2A%2A
		}
		userinfo += "@"
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Location{}, malformed("its query does not parse")
	}
	for _, k := range secretKeywords {
		if vs, ok := q[k]; ok {
			loc.secrets = append(loc.secrets, vs...)
			q[k] = []string{"***"}
		}
	}
	shown.RawQuery = strings.ReplaceAll(q.Encode(), "%2A%2A%2A", "***")
	loc.Shown = scheme + "://" + userinfo + strings.TrimPrefix(shown.String(), scheme+"://")
	if q := u.Query(); q.Get("idle_in_transaction_session_timeout") == "" {
		q.Set("idle_in_transaction_session_timeout", idleInTransactionMillis())
		u.RawQuery = q.Encode()
	}
	loc.conn = u.String()
	return loc, nil
}

type pair struct{ key, value string }

// keywordValues reads s as libpq reads a key=value connection string:
// pairs separated by spaces, a value either bare (a backslash escapes the
// next character) or in single quotes. It answers ok only when every
// keyword is one of libpq's.
func keywordValues(s string) (pairs []pair, ok bool) {
	const space = " \t\n\r\v\f"
	s = strings.TrimLeft(s, space)
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, false
		}
		key := strings.TrimRight(s[:eq], space)
		if !slices.Contains(keywords, key) {
			return nil, false
		}
		s = strings.TrimLeft(s[eq+1:], space)
		var b strings.Builder
		if strings.HasPrefix(s, "'") {
			s = s[1:]
			for {
				if s == "" {
					return nil, false // unterminated quote
				}
				c := s[0]
				s = s[1:]
				if c == '\'' {
					break
				}
				if c == '\\' {
					if s == "" {
						return nil, false
					}
					c, s = s[0], s[1:]
				}
				b.WriteByte(c)
			}
			if s != "" && !strings.ContainsAny(s[:1], space) {
				return nil, false
			}
		} else {
			for s != "" && !strings.ContainsAny(s[:1], space) {
				c := s[0]
				s = s[1:]
				if c == '\\' && s != "" {
					c, s = s[0], s[1:]
				}
				b.WriteByte(c)
			}
		}
		pairs = append(pairs, pair{key, b.String()})
		s = strings.TrimLeft(s, space)
	}
	return pairs, len(pairs) > 0
}

func keywordLocation(dsn string, pairs []pair) Location {
	loc := Location{Kind: Postgres, conn: dsn}
	var shown []string
	for _, p := range pairs {
		v := p.value
		if slices.Contains(secretKeywords, p.key) {
			loc.secrets = append(loc.secrets, v)
			v = "***"
		}
		if strings.ContainsAny(v, ` '\\`) || v == "" {
			v = "'" + strings.NewReplacer(`\\`, `\\\\`, `'`, `\\'`).Replace(v) + "'"
		}
		shown = append(shown, p.key+"="+v)
	}
	loc.Shown = strings.Join(shown, " ")
	// Not a libpq keyword: the driver sends it to the server as a setting.
	loc.conn += " idle_in_transaction_session_timeout=" + idleInTransactionMillis()
	return loc
}

// Scrub hides the location's passwords in err, in every form they travel
// in (plain, URL-escaped, base64).
func (l Location) Scrub(err error) error {
	return redact.Error(err, l.secrets...)
}
