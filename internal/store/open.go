package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// urlForms lists the store URLs Open takes, for the errors that say so.
const urlForms = `use sqlite:PATH, postgres://USER:PASSWORD@HOST:PORT/DATABASE (or postgresql://…, ` +
	`or a keyword/value DSN such as "host=HOST dbname=DATABASE user=USER"), or nothing for DATA_DIR/dockfleet.db`

// Open opens the store url names: "" is SQLite in dataDir (dockfleet.db);
// sqlite:PATH a SQLite file; a postgres:// or postgresql:// URL, or a
// keyword/value DSN (host=… dbname=…), a PostgreSQL database.
func Open(ctx context.Context, url, dataDir string) (Store, error) {
	engine, target, err := parseURL(url)
	if err != nil {
		return nil, err
	}
	switch engine {
	case "postgres":
		return OpenPostgres(ctx, target)
	case "sqlite":
		return OpenSQLite(ctx, target)
	}
	return OpenSQLite(ctx, filepath.Join(dataDir, "dockfleet.db"))
}

// CheckURL says what is wrong with the form of store URL url, nil if Open
// takes it. It does not connect.
func CheckURL(url string) error {
	_, _, err := parseURL(url)
	return err
}

// parseURL returns the engine url names ("" for the default) and what to
// open with it: a path or a PostgreSQL URL.
func parseURL(url string) (engine, target string, err error) {
	switch {
	case url == "":
		return "", "", nil
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return "postgres", url, nil
	case strings.HasPrefix(url, "sqlite:"):
		// sqlite:///var/lib/x.db is sqlite:/var/lib/x.db, as in URLs.
		path := strings.TrimPrefix(strings.TrimPrefix(url, "sqlite:"), "//")
		if path == "" {
			return "", "", fmt.Errorf("store: %q names no file: %s", url, urlForms)
		}
		return "sqlite", path, nil
	}
	scheme, _, hasScheme := strings.Cut(url, ":")
	switch {
	case hasScheme && !strings.ContainsAny(scheme, " ="):
		// Only the scheme: the rest may hold a password.
		return "", "", fmt.Errorf("store: unknown kind of store URL %q: %s", scheme+":", urlForms)
	case strings.Contains(url, "="):
		return "postgres", url, nil
	}
	return "", "", fmt.Errorf("store: %q names no engine: %s", url, urlForms)
}
