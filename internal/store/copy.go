package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// TableCount is how many rows of a table a copy moved.
type TableCount struct {
	Table string
	Rows  int64
}

// seeded are the tables a new store's migrations fill (state_seq's one
// row, the audit log's head, the default project): a copy replaces their
// rows rather than finding the store not empty.
var seeded = map[string]bool{"state_seq": true, "audit_head": true, "projects": true}

// copyBatch is how many rows one INSERT of a copy carries.
const copyBatch = 100

// Copy copies everything from, a SQLite store, holds into to, a
// PostgreSQL store that holds nothing yet: every table, row for row, read
// in one transaction and written in one, so the copy is whole or nothing.
// Both are at this binary's schema (their Open migrated them). It refuses
// a destination that holds any row, and checks each table's count before
// it commits. The server must be stopped while it runs: rows it wrote
// after the copy began would not be copied.
func Copy(ctx context.Context, from *SQLite, to *Postgres) ([]TableCount, error) {
	src, err := from.sqlDB.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", from.path, err)
	}
	defer src.Rollback()
	tables, err := columnNames(ctx, src, `SELECT name FROM sqlite_master WHERE type = 'table'
		AND name NOT LIKE 'sqlite_%' AND name <> 'goose_db_version' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("listing the tables of %s: %w", from.path, err)
	}
	dst, err := to.sqlDB.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("writing to PostgreSQL: %w", err)
	}
	defer dst.Rollback()
	dstTables, err := columnNames(ctx, dst, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()
		AND table_type = 'BASE TABLE' AND table_name <> 'goose_db_version' ORDER BY table_name`)
	if err != nil {
		return nil, fmt.Errorf("listing the tables in PostgreSQL: %w", err)
	}
	if !slices.Equal(tables, dstTables) {
		return nil, fmt.Errorf("the two stores have different tables (%s in SQLite, %s in PostgreSQL): "+
			"open both with this dockfleet first, so that both are at its schema", strings.Join(tables, ", "), strings.Join(dstTables, ", "))
	}
	var nonEmpty []string
	for _, t := range tables {
		if seeded[t] {
			continue
		}
		var n int64
		if err := dst.QueryRowContext(ctx, `SELECT count(*) FROM `+pgx.Identifier{t}.Sanitize()).Scan(&n); err != nil {
			return nil, err
		}
		if n > 0 {
			nonEmpty = append(nonEmpty, fmt.Sprintf("%s (%d rows)", t, n))
		}
	}
	if len(nonEmpty) > 0 {
		return nil, fmt.Errorf("the PostgreSQL database is not empty: %s; copy into a new database", strings.Join(nonEmpty, ", "))
	}
	var counts []TableCount
	for _, t := range tables {
		if seeded[t] {
			if _, err := dst.ExecContext(ctx, `DELETE FROM `+pgx.Identifier{t}.Sanitize()); err != nil {
				return nil, fmt.Errorf("copying table %s: %w", t, err)
			}
		}
		n, err := copyTable(ctx, src, dst, t)
		if err != nil {
			return nil, fmt.Errorf("copying table %s: %w", t, err)
		}
		var got int64
		if err := dst.QueryRowContext(ctx, `SELECT count(*) FROM `+pgx.Identifier{t}.Sanitize()).Scan(&got); err != nil {
			return nil, err
		}
		if got != n {
			return nil, fmt.Errorf("copying table %s: read %d rows but PostgreSQL holds %d", t, n, got)
		}
		counts = append(counts, TableCount{Table: t, Rows: n})
	}
	if err := restartIdentities(ctx, dst); err != nil {
		return nil, err
	}
	if err := dst.Commit(); err != nil {
		return nil, fmt.Errorf("committing the copy: %w", err)
	}
	return counts, nil
}

func columnNames(ctx context.Context, tx *sql.Tx, query string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// copyTable copies table's rows from src to dst in batches and says how
// many it read.
func copyTable(ctx context.Context, src, dst *sql.Tx, table string) (int64, error) {
	name := pgx.Identifier{table}.Sanitize()
	rows, err := src.QueryContext(ctx, `SELECT * FROM `+name)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return 0, err
	}
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = pgx.Identifier{c}.Sanitize()
	}
	// Identity columns (events.seq) keep their numbers: they are what
	// followers of the events have seen.
	insert := `INSERT INTO ` + name + ` (` + strings.Join(quoted, ", ") + `) OVERRIDING SYSTEM VALUE VALUES `
	var (
		n     int64
		batch []any
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		var b strings.Builder
		b.WriteString(insert)
		for r := range len(batch) / len(cols) {
			if r > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(")
			for c := range cols {
				if c > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "$%d", r*len(cols)+c+1)
			}
			b.WriteString(")")
		}
		_, err := dst.ExecContext(ctx, b.String(), batch...)
		batch = batch[:0]
		return err
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		batch = append(batch, vals...)
		n++
		if n%copyBatch == 0 {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return n, err
	}
	return n, flush()
}

// restartIdentities moves each identity column's sequence past the
// numbers copied in, so that new rows number on from them.
func restartIdentities(ctx context.Context, dst *sql.Tx) error {
	rows, err := dst.QueryContext(ctx, `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND is_identity = 'YES'`)
	if err != nil {
		return err
	}
	type col struct{ table, column string }
	var cols []col
	for rows.Next() {
		var c col
		if err := rows.Scan(&c.table, &c.column); err != nil {
			rows.Close()
			return err
		}
		cols = append(cols, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, c := range cols {
		t, k := pgx.Identifier{c.table}.Sanitize(), pgx.Identifier{c.column}.Sanitize()
		// setval's third argument false: the next number is max + 1, or 1
		// for an empty table.
		if _, err := dst.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence($1, $2), coalesce((SELECT max(`+k+`) FROM `+t+`), 0) + 1, false)`,
			t, c.column); err != nil {
			return fmt.Errorf("numbering %s.%s on from the copied rows: %w", c.table, c.column, err)
		}
	}
	return nil
}
