// Package version is the build's version, stamped with -ldflags
// "-X github.com/orphanwatch/orphanwatch/internal/version.Version=v1.2.3".
package version

import "runtime/debug"

// Version is set at build time; without it, the module version or "dev".
var Version = ""

// Revision is the VCS commit the binary was built from, if known.
func Revision() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return ""
}

// String is the version to show.
func String() string {
	if Version != "" {
		return Version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "dev"
}
