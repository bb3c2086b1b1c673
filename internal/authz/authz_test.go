package authz

import (
	"slices"
	"testing"
)

func TestValidatePermission(t *testing.T) {
	for _, ok := range []string{"*", "deployments:read", "deployments:*", "logs:read", "instances:exec"} {
		if err := ValidatePermission(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "deployments", "deployments:reed", "nosuch:*", ":read", "*:read"} {
		if err := ValidatePermission(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
	for role, perms := range Builtin {
		for _, p := range perms {
			if err := ValidatePermission(p); err != nil {
				t.Errorf("built-in role %s: %v", role, err)
			}
		}
	}
}

func TestPrincipal(t *testing.T) {
	op := &Principal{Grants: []Grant{{Project: "alpha", Permissions: Builtin[Operator]}, {Project: "beta", Permissions: Builtin[Viewer]}}}
	checks := []struct {
		perm, project string
		want          bool
	}{
		{DeploymentsWrite, "alpha", true},
		{DeploymentsWrite, "beta", false},
		{DeploymentsRead, "beta", true},
		{DeploymentsRead, "gamma", false},
		{NodesWrite, AllProjects, false}, // a project grant is not a fleet one
		{UsersWrite, "alpha", false},
	}
	for _, c := range checks {
		if got := op.Can(c.perm, c.project); got != c.want {
			t.Errorf("Can(%s, %s) = %v; want %v", c.perm, c.project, got, c.want)
		}
	}
	if !op.Sees("beta") || op.Sees("gamma") {
		t.Error("Sees: want beta seen and gamma not")
	}
	if all, ps := op.ProjectsWith(DeploymentsWrite); all || !slices.Equal(ps, []string{"alpha"}) {
		t.Errorf("ProjectsWith(deployments:write) = %v %v; want alpha", all, ps)
	}
	if !op.Covers(Builtin[Viewer], "alpha") || op.Covers(Builtin[Operator], "beta") || op.Covers(Builtin[Viewer], AllProjects) {
		t.Error("Covers: an operator in alpha grants viewer there, not operator in beta nor viewer everywhere")
	}
	admin := &Principal{Grants: []Grant{{Project: AllProjects, Permissions: Builtin[Admin]}}}
	if !admin.CanGlobally(StoreWrite) || !admin.Covers([]string{"*"}, AllProjects) || !admin.Sees("anything") {
		t.Error("an admin in every project may do everything everywhere")
	}
	custom := &Principal{Grants: []Grant{{Project: "alpha", Permissions: []string{"deployments:*"}}}}
	if !custom.Can(DeploymentsDelete, "alpha") || custom.Can(RolloutsWrite, "alpha") {
		t.Error("deployments:* grants every deployments verb and nothing else")
	}
}
