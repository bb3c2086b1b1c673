// Package version holds the build's version, stamped by the Makefile with
// -ldflags "-X github.com/dockfleet/dockfleet/internal/version.Version=...".
package version

// Version is the dockfleet release; "dev" for unstamped builds.
var Version = "dev"
