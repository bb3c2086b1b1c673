package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dockfleet/dockfleet/internal/api"
	"github.com/dockfleet/dockfleet/internal/authz"
)

// Who may do what: users, API tokens and sessions, roles, bindings and
// projects. Their writes run in transactions, so that the audit record of
// the request making them goes with them.

const apiTokenCols = `id, name, secret_hash, kind, owner, role, project, groups, created_at, expires_at`

func scanAPIToken(row interface{ Scan(...any) error }) (api.APIToken, string, error) {
	var (
		t                api.APIToken
		hash, groups     string
		created, expires int64
	)
	if err := row.Scan(&t.ID, &t.Name, &hash, &t.Kind, &t.Owner, &t.Role, &t.Project, &groups, &created, &expires); err != nil {
		return t, "", err
	}
	if err := json.Unmarshal([]byte(groups), &t.Groups); err != nil {
		return t, "", fmt.Errorf("api token %s groups: %w", t.ID, err)
	}
	if len(t.Groups) == 0 {
		t.Groups = nil
	}
	if t.Kind == api.TokenSession {
		t.Role, t.Project = "", ""
	}
	t.CreatedAt, t.ExpiresAt = fromNanos(created), fromNanos(expires)
	return t, hash, nil
}

// CreateAPIToken stores token t by the hash of its secret. An API token's
// role and project must exist.
func (s *sqlStore) CreateAPIToken(ctx context.Context, t api.APIToken, secretHash string) error {
	groups := t.Groups
	if groups == nil {
		groups = []string{}
	}
	return s.tx(ctx, func(tx dbtx) error {
		if t.Kind != api.TokenSession {
			if err := checkBindable(ctx, tx, t.Role, t.Project); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO api_tokens (`+apiTokenCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			t.ID, t.Name, secretHash, t.Kind, t.Owner, t.Role, t.Project, toJSON(groups), nanos(t.CreatedAt), nanos(t.ExpiresAt))
		if isUnique(err) {
			return fmt.Errorf("api token %s: %w", t.ID, ErrExists)
		}
		return err
	})
}

// GetAPIToken returns token id and the hash of its secret.
func (s *sqlStore) GetAPIToken(ctx context.Context, id string) (api.APIToken, string, error) {
	t, hash, err := scanAPIToken(s.db.QueryRowContext(ctx, `SELECT `+apiTokenCols+` FROM api_tokens WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, "", fmt.Errorf("api token %s: %w", id, ErrNotFound)
	}
	return t, hash, err
}

// ListAPITokens lists the tokens of kind (every kind if ""), oldest first.
func (s *sqlStore) ListAPITokens(ctx context.Context, kind string) ([]api.APIToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+apiTokenCols+` FROM api_tokens WHERE ? = '' OR kind = ? ORDER BY created_at, id`, kind, kind)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.APIToken
	for rows.Next() {
		t, _, err := scanAPIToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// DeleteAPIToken deletes token id: it is refused from then on. The
// bootstrap token is kept, expired since 1970, so that no later start of
// a server makes it anew from the secret it sealed.
func (s *sqlStore) DeleteAPIToken(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx dbtx) error {
		res, err := tx.ExecContext(ctx, `UPDATE api_tokens SET expires_at = 1 WHERE id = ? AND kind = ?`, id, api.TokenBootstrap)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		res, err = tx.ExecContext(ctx, `DELETE FROM api_tokens WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("api token %s: %w", id, ErrNotFound)
		}
		return nil
	})
}

// PruneAPITokens deletes the tokens that expired before before, but for
// a revoked bootstrap token, and returns how many.
func (s *sqlStore) PruneAPITokens(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx dbtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM api_tokens WHERE expires_at <> 0 AND expires_at < ? AND kind <> ?`, nanos(before), api.TokenBootstrap)
		if err == nil {
			n, _ = res.RowsAffected()
		}
		return err
	})
	return n, err
}

const userCols = `name, password_hash, disabled, sso, created_at, version`

func scanUser(row interface{ Scan(...any) error }) (api.User, string, error) {
	var (
		u       api.User
		hash    string
		created int64
	)
	err := row.Scan(&u.Name, &hash, &u.Disabled, &u.SSO, &created, &u.Version)
	u.CreatedAt = fromNanos(created)
	return u, hash, err
}

// CreateUser stores user u with its password hash ("" for an SSO user).
func (s *sqlStore) CreateUser(ctx context.Context, u api.User, passwordHash string) error {
	return s.tx(ctx, func(tx dbtx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?, 1)`,
			u.Name, passwordHash, boolInt(u.Disabled), boolInt(u.SSO), nanos(u.CreatedAt))
		if isUnique(err) {
			return fmt.Errorf("user %s: %w", u.Name, ErrExists)
		}
		return err
	})
}

// GetUser returns user name and its password hash.
func (s *sqlStore) GetUser(ctx context.Context, name string) (api.User, string, error) {
	u, hash, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return u, "", fmt.Errorf("user %s: %w", name, ErrNotFound)
	}
	return u, hash, err
}

// ListUsers lists the users by name.
func (s *sqlStore) ListUsers(ctx context.Context) ([]api.User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.User
	for rows.Next() {
		u, _, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// UpdateUser sets user name's password hash (when passwordHash is not nil)
// and disabled flag (when disabled is not nil). A new password or a
// disabled user ends the user's sessions, in the same transaction.
func (s *sqlStore) UpdateUser(ctx context.Context, name string, passwordHash *string, disabled *bool) (api.User, error) {
	var u api.User
	err := s.tx(ctx, func(tx dbtx) error {
		cur, hash, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE name = ?`, name))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if passwordHash != nil {
			hash = *passwordHash
		}
		if disabled != nil {
			cur.Disabled = *disabled
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ?, disabled = ?, version = version + 1 WHERE name = ?`,
			hash, boolInt(cur.Disabled), name); err != nil {
			return err
		}
		if passwordHash != nil || cur.Disabled {
			if _, err := tx.ExecContext(ctx, `DELETE FROM api_tokens WHERE kind = ? AND owner = ?`, api.TokenSession, name); err != nil {
				return err
			}
		}
		cur.Version++
		u = cur
		return nil
	})
	return u, err
}

// DeleteUser deletes user name with its tokens, sessions and bindings.
func (s *sqlStore) DeleteUser(ctx context.Context, name string) error {
	return s.tx(ctx, func(tx dbtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM users WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM api_tokens WHERE owner = ?`, name); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM bindings WHERE subject = ?`, "user:"+name)
		return err
	})
}

// roleExists reports whether role is built in or stored.
func roleExists(ctx context.Context, tx dbtx, role string) (bool, error) {
	if _, ok := authz.Builtin[role]; ok {
		return true, nil
	}
	var n int
	err := tx.QueryRowContext(ctx, `SELECT count(*) FROM roles WHERE name = ?`, role).Scan(&n)
	return n > 0, err
}

// checkBindable says, as a bad request, what is wrong with binding role in
// project: either may not exist.
func checkBindable(ctx context.Context, tx dbtx, role, project string) error {
	ok, err := roleExists(ctx, tx, role)
	if err != nil {
		return err
	}
	if !ok {
		return &InvalidError{fmt.Sprintf("role %q does not exist; dockfleet role list shows the roles", role)}
	}
	if project == authz.AllProjects {
		return nil
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM projects WHERE name = ?`, project).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return &InvalidError{fmt.Sprintf("project %q does not exist; dockfleet project list shows the projects", project)}
	}
	return nil
}

// InvalidError is a request the store refused for what it asked (a role
// or project that does not exist): the caller's fault, nothing written.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

// PutRole creates custom role r, or replaces its permissions when update is set.
func (s *sqlStore) PutRole(ctx context.Context, r api.Role, update bool) error {
	return s.tx(ctx, func(tx dbtx) error {
		if update {
			res, err := tx.ExecContext(ctx, `UPDATE roles SET permissions = ? WHERE name = ?`, toJSON(r.Permissions), r.Name)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return fmt.Errorf("role %s: %w", r.Name, ErrNotFound)
			}
			return nil
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO roles (name, permissions, created_at) VALUES (?, ?, ?)`,
			r.Name, toJSON(r.Permissions), nanos(r.CreatedAt))
		if isUnique(err) {
			return fmt.Errorf("role %s: %w", r.Name, ErrExists)
		}
		return err
	})
}

func scanRole(row interface{ Scan(...any) error }) (api.Role, error) {
	var (
		r       api.Role
		perms   string
		created int64
	)
	if err := row.Scan(&r.Name, &perms, &created); err != nil {
		return r, err
	}
	r.CreatedAt = fromNanos(created)
	return r, json.Unmarshal([]byte(perms), &r.Permissions)
}

// GetRole returns custom role name.
func (s *sqlStore) GetRole(ctx context.Context, name string) (api.Role, error) {
	r, err := scanRole(s.db.QueryRowContext(ctx, `SELECT name, permissions, created_at FROM roles WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return r, fmt.Errorf("role %s: %w", name, ErrNotFound)
	}
	return r, err
}

// ListRoles lists the custom roles by name.
func (s *sqlStore) ListRoles(ctx context.Context) ([]api.Role, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, permissions, created_at FROM roles ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Role
	for rows.Next() {
		r, err := scanRole(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// DeleteRole deletes custom role name, unless a binding or token holds it
// (ErrConflict, saying which).
func (s *sqlStore) DeleteRole(ctx context.Context, name string) error {
	return s.tx(ctx, func(tx dbtx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM bindings WHERE role = ?) + (SELECT count(*) FROM api_tokens WHERE role = ? AND kind = ?)`,
			name, name, api.TokenAPI).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("role %s is held by %d binding(s) or API token(s); delete those first: %w", name, n, ErrConflict)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM roles WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return fmt.Errorf("role %s: %w", name, ErrNotFound)
		}
		return nil
	})
}

const bindingCols = `id, subject, role, project, created_at`

func scanBinding(row interface{ Scan(...any) error }) (api.Binding, error) {
	var (
		b       api.Binding
		created int64
	)
	err := row.Scan(&b.ID, &b.Subject, &b.Role, &b.Project, &created)
	b.CreatedAt = fromNanos(created)
	return b, err
}

// CreateBinding stores binding b; its role and project must exist.
func (s *sqlStore) CreateBinding(ctx context.Context, b api.Binding) error {
	return s.tx(ctx, func(tx dbtx) error {
		if err := checkBindable(ctx, tx, b.Role, b.Project); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO bindings (`+bindingCols+`) VALUES (?, ?, ?, ?, ?)`,
			b.ID, b.Subject, b.Role, b.Project, nanos(b.CreatedAt))
		if isUnique(err) {
			return fmt.Errorf("%s holds role %s in project %s already: %w", b.Subject, b.Role, b.Project, ErrExists)
		}
		return err
	})
}

// ListBindings lists the bindings of subjects, or every binding when
// subjects is nil.
func (s *sqlStore) ListBindings(ctx context.Context, subjects []string) ([]api.Binding, error) {
	q, args := `SELECT `+bindingCols+` FROM bindings`, []any{}
	if subjects != nil {
		if len(subjects) == 0 {
			return nil, nil
		}
		q += ` WHERE subject IN (?` + strings.Repeat(", ?", len(subjects)-1) + `)`
		for _, s := range subjects {
			args = append(args, s)
		}
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY subject, project, role`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Binding
	for rows.Next() {
		b, err := scanBinding(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// DeleteBinding deletes binding id.
func (s *sqlStore) DeleteBinding(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx dbtx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM bindings WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("binding %s: %w", id, ErrNotFound)
		}
		return nil
	})
}

func scanProject(row interface{ Scan(...any) error }) (api.Project, error) {
	var (
		p       api.Project
		sel     string
		created int64
	)
	if err := row.Scan(&p.Name, &sel, &created); err != nil {
		return p, err
	}
	p.CreatedAt = fromNanos(created)
	return p, json.Unmarshal([]byte(sel), &p.NodeSelector)
}

// CreateProject stores project p.
func (s *sqlStore) CreateProject(ctx context.Context, p api.Project) error {
	return s.tx(ctx, func(tx dbtx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO projects (name, node_selector, created_at) VALUES (?, ?, ?)`,
			p.Name, toJSON(p.NodeSelector), nanos(p.CreatedAt))
		if isUnique(err) {
			return fmt.Errorf("project %s: %w", p.Name, ErrExists)
		}
		return err
	})
}

// GetProject returns project name.
func (s *sqlStore) GetProject(ctx context.Context, name string) (api.Project, error) {
	p, err := scanProject(s.db.QueryRowContext(ctx, `SELECT name, node_selector, created_at FROM projects WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("project %s: %w", name, ErrNotFound)
	}
	return p, err
}

// ListProjects lists the projects by name.
func (s *sqlStore) ListProjects(ctx context.Context) ([]api.Project, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, node_selector, created_at FROM projects ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []api.Project
	for rows.Next() {
		p, err := scanProject(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// DeleteProject deletes project name with its bindings, API tokens and
// events, unless deployments remain in it (ErrConflict).
func (s *sqlStore) DeleteProject(ctx context.Context, name string) error {
	return s.tx(ctx, func(tx dbtx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM deployments WHERE project = ?`, name).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("project %s still has %d deployment(s); delete them first: %w", name, n, ErrConflict)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM projects WHERE name = ?`, name)
		if err != nil {
			return err
		}
		if k, _ := res.RowsAffected(); k == 0 {
			return fmt.Errorf("project %s: %w", name, ErrNotFound)
		}
		for _, q := range []string{`DELETE FROM bindings WHERE project = ?`, `DELETE FROM api_tokens WHERE project = ?`, `DELETE FROM events WHERE project = ?`} {
			if _, err := tx.ExecContext(ctx, q, name); err != nil {
				return err
			}
		}
		return nil
	})
}
