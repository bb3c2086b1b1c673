// Package authz decides who may do what: the permissions a role grants,
// the built-in roles, and a caller's grants per project. It is pure logic;
// the REST API resolves a request's caller to a Principal (package restapi)
// and asks it.
//
// A permission is "resource:verb". A role is a set of permissions; "*"
// grants every permission and "resource:*" every verb of a resource. A
// grant holds a role's permissions in one project, or in all ("*").
package authz

import (
	"fmt"
	"slices"
	"strings"
)

// AllProjects is the project of a grant that holds in every project.
const AllProjects = "*"

// Permissions: every permission a role may name. An unknown one is an
// error where a role is made, so a typo cannot grant nothing silently.
const (
	NodesRead          = "nodes:read"
	NodesWrite         = "nodes:write"  // labels, cordon, drain, uncordon
	NodesDelete        = "nodes:delete" // revoke, remove
	EnrollTokensRead   = "enrolltokens:read"
	EnrollTokensWrite  = "enrolltokens:write"
	DeploymentsRead    = "deployments:read"
	DeploymentsWrite   = "deployments:write" // apply
	DeploymentsDelete  = "deployments:delete"
	RolloutsRead       = "rollouts:read"
	RolloutsWrite      = "rollouts:write" // pause, resume, promote, abort, undo, restart
	InstancesRead      = "instances:read"
	InstancesExec      = "instances:exec"
	EventsRead         = "events:read"
	LogsRead           = "logs:read"
	ConfigsRead        = "configs:read"
	ConfigsWrite       = "configs:write"
	SecretsRead        = "secrets:read"
	SecretsWrite       = "secrets:write"
	ProjectsRead       = "projects:read"
	ProjectsWrite      = "projects:write"
	UsersRead          = "users:read"
	UsersWrite         = "users:write"
	RolesRead          = "roles:read"      // roles and bindings
	RolesWrite         = "roles:write"     // roles and bindings
	APITokensRead      = "apitokens:read"  // every user's API tokens
	APITokensWrite     = "apitokens:write" // every user's API tokens
	AuditRead          = "audit:read"
	CARead             = "ca:read"
	CAWrite            = "ca:write"
	StoreWrite         = "store:write" // accept a restored store
	allPermissionsMark = "*"
)

// Catalog lists every permission, for validation and for `role` help.
var Catalog = []string{
	NodesRead, NodesWrite, NodesDelete, EnrollTokensRead, EnrollTokensWrite,
	DeploymentsRead, DeploymentsWrite, DeploymentsDelete, RolloutsRead, RolloutsWrite,
	InstancesRead, InstancesExec, EventsRead, LogsRead, ConfigsRead, ConfigsWrite, SecretsRead, SecretsWrite,
	ProjectsRead, ProjectsWrite, UsersRead, UsersWrite, RolesRead, RolesWrite,
	APITokensRead, APITokensWrite, AuditRead, CARead, CAWrite, StoreWrite,
}

// Built-in role names.
const (
	Admin    = "admin"
	Operator = "operator"
	Viewer   = "viewer"
)

// Builtin holds the built-in roles. An operator deploys, rolls out, and
// labels and drains nodes; a viewer reads what belongs to its projects.
var Builtin = map[string][]string{
	Admin: {allPermissionsMark},
	Operator: {NodesRead, NodesWrite, DeploymentsRead, DeploymentsWrite, DeploymentsDelete,
		RolloutsRead, RolloutsWrite, InstancesRead, EventsRead, LogsRead, ConfigsRead, ConfigsWrite, ProjectsRead},
	Viewer: {NodesRead, DeploymentsRead, RolloutsRead, InstancesRead, EventsRead, ProjectsRead},
}

// ValidatePermission says what is wrong with a permission a role names.
func ValidatePermission(p string) error {
	if p == allPermissionsMark || slices.Contains(Catalog, p) {
		return nil
	}
	res, verb, ok := strings.Cut(p, ":")
	if ok && verb == "*" && slices.ContainsFunc(Catalog, func(c string) bool { return strings.HasPrefix(c, res+":") }) {
		return nil
	}
	return fmt.Errorf("unknown permission %q: a permission is resource:verb, one of %s, resource:* or *",
		p, strings.Join(Catalog, ", "))
}

// Grant holds permissions in one project, or in every project when
// Project is AllProjects.
type Grant struct {
	Project     string
	Permissions []string
}

// grants reports whether perms hold perm.
func grants(perms []string, perm string) bool {
	res, _, _ := strings.Cut(perm, ":")
	for _, p := range perms {
		if p == allPermissionsMark || p == perm || p == res+":*" {
			return true
		}
	}
	return false
}

// Principal is an authenticated caller: a user (by password, SSO or a
// client certificate) or an API token, with its grants.
type Principal struct {
	// Kind is "user" or "token".
	Kind string
	// Name is the user's name, or for a token "token:" and its ID.
	Name string
	// User is the user acting: the user itself, or a token's owner.
	User string
	// TokenID is the credential's token ID, when it came with one.
	TokenID string
	Grants  []Grant
}

// Can reports whether p holds perm in project (AllProjects: in every
// project, as the fleet-wide endpoints need).
func (p *Principal) Can(perm, project string) bool {
	for _, g := range p.Grants {
		if (g.Project == AllProjects || g.Project == project) && grants(g.Permissions, perm) {
			return true
		}
	}
	return false
}

// CanGlobally reports whether p holds perm in every project.
func (p *Principal) CanGlobally(perm string) bool { return p.Can(perm, AllProjects) }

// Sees reports whether project is visible to p: p holds a grant in it
// or in every project. Another project's objects are answered as not
// found, never as forbidden, so that their existence does not show.
func (p *Principal) Sees(project string) bool {
	for _, g := range p.Grants {
		if g.Project == AllProjects || g.Project == project {
			return true
		}
	}
	return false
}

// ProjectsWith returns the projects in which p holds perm, and whether it
// holds it in all.
func (p *Principal) ProjectsWith(perm string) (all bool, projects []string) {
	for _, g := range p.Grants {
		if !grants(g.Permissions, perm) {
			continue
		}
		if g.Project == AllProjects {
			return true, nil
		}
		if !slices.Contains(projects, g.Project) {
			projects = append(projects, g.Project)
		}
	}
	slices.Sort(projects)
	return false, projects
}

// Covers reports whether p holds every permission of perms in project
// (every project when project is AllProjects): no caller may grant what
// it does not hold, to a token or to anyone.
func (p *Principal) Covers(perms []string, project string) bool {
	for _, perm := range expand(perms) {
		ok := false
		for _, g := range p.Grants {
			if (g.Project == AllProjects || g.Project == project) && grants(g.Permissions, perm) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// expand lists the catalogue permissions perms grant.
func expand(perms []string) []string {
	var out []string
	for _, c := range Catalog {
		if grants(perms, c) {
			out = append(out, c)
		}
	}
	return out
}
