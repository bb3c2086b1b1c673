package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/postgres/*.sql
var postgresMigrations embed.FS

// pgMaxConns bounds the PostgreSQL connections one server opens.
const pgMaxConns = 16

// pgBeatConns bounds the connections of the replicas' heartbeats' own pool
// (sqlStore.beatDB): the lease's renewal, the replica's record, and the
// leader's reading of the others' and of which streams they hold.
const pgBeatConns = 3

// pgConnectTimeout is how long connecting waits for the server, unless
// the URL says (connect_timeout).
const pgConnectTimeout = 10 * time.Second

// eventsLock is the advisory lock every transaction that inserts events
// holds until it ends. An identity column hands out sequence numbers at
// insert, not at commit: without the lock, a transaction could take seq 7,
// another seq 8 and commit first, and a reader polling for events after
// 8 would never see 7. Under the lock, inserting transactions commit in the
// order they took their numbers. ("dockfleet events", as an integer.)
const eventsLock = 0x646f636b6576

var postgresDialect = newDialect(&dialect{
	goose:      goose.DialectPostgres,
	migrations: postgresMigrations,
	dir:        "migrations/postgres",
	dollar:     true,
	// Serializable transactions, run again when they lose a race (see
	// sqlStore.tx), give what SQLite's one writer at a time gives: a
	// transaction's reads still hold when it commits.
	txOptions:      &sql.TxOptions{Isolation: sql.LevelSerializable},
	blindTxOptions: &sql.TxOptions{Isolation: sql.LevelReadCommitted},
	greatest:       "GREATEST",
	lockTable:      "LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE",
	// The database server's clock: replicas never compare their own.
	now:              `SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000`,
	lockEvents:       "SELECT pg_advisory_xact_lock(" + strconv.Itoa(eventsLock) + ")",
	rolloutRevisions: `(o.data::json->>'fromRevision')::bigint, (o.data::json->>'toRevision')::bigint`,
})

// Postgres is the store on a PostgreSQL server, which several server
// replicas can share.
type Postgres struct {
	sqlStore
	url string
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the PostgreSQL database url names (a
// postgres:// URL or a keyword/value DSN, as libpq takes them) and
// migrates it to the newest schema. Of several servers starting at once
// on a new database, one migrates it and the others wait.
func OpenPostgres(ctx context.Context, url string) (*Postgres, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's message names the URL with its password masked.
		return nil, fmt.Errorf("store: the PostgreSQL URL is not valid: %w", err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = pgConnectTimeout
	}
	where := fmt.Sprintf("PostgreSQL at %s (database %s, user %s)", pgAddr(cfg.Host, cfg.Port), cfg.Database, cfg.User)
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(pgMaxConns)
	db.SetMaxIdleConns(pgMaxConns)
	// The timeout bounds each address pgx tries; this bounds them all.
	pingCtx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connecting to %s: %s", where, connectCause(err, cfg.ConnectTimeout))
	}
	// Servers starting together migrate one at a time, under an advisory
	// lock: the others ask for it every second, for 5 minutes at most.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := migrate(ctx, db, postgresDialect, []goose.ProviderOption{goose.WithSessionLocker(locker)}); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: %w", where, err)
	}
	st := &Postgres{sqlStore: newSQLStore(db, postgresDialect), url: url}
	st.beatDB = stdlib.OpenDB(*cfg)
	st.beatDB.SetMaxOpenConns(pgBeatConns)
	st.beatDB.SetMaxIdleConns(pgBeatConns)
	return st, nil
}

// URL is the URL (or DSN) the store was opened with, password included.
func (s *Postgres) URL() string { return s.url }

func pgAddr(host string, port uint16) string {
	if strings.HasPrefix(host, "/") {
		return fmt.Sprintf("%s/.s.PGSQL.%d", host, port)
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// connectCause is the reason a connection failed, in a few words: the
// server's own message, or the network's, without pgx's wrapping (which
// repeats the user and database).
func connectCause(err error, timeout time.Duration) string {
	var pe *pgconn.PgError
	var errno syscall.Errno
	var dns *net.DNSError
	switch {
	case errors.As(err, &pe):
		return pe.Message
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return fmt.Sprintf("no answer within %s", timeout)
	case errors.As(err, &dns):
		return dns.Error()
	case errors.As(err, &errno):
		return errno.Error()
	}
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
