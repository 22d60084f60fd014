#!/usr/bin/env bash
# Builds helm from its Go module (helm.sh/helm/v3, pinned with its
# dependencies in tools/helm/go.mod and go.sum), once, into a cache outside
# the repository, and prints the path of the binary. Later runs print it at
# once; `--path` prints it without building. The chart's tests
# (deploy/helm) run `helm lint` and `helm template` with it.
#
# The cache is keyed by the helm version and a hash of tools/helm/go.sum,
# so a change of either builds anew.
#
#   ORPHANWATCH_CACHE    /var/cache/orphanwatch
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools=$root/tools/helm
cache=${ORPHANWATCH_CACHE:-/var/cache/orphanwatch}
version=$(sed -n 's/^\s*helm\.sh\/helm\/v3 \(v[0-9.]*\).*/\1/p' "$tools/go.mod")
[ -n "$version" ] || { echo "helm.sh: no helm.sh/helm/v3 requirement in $tools/go.mod" >&2; exit 1; }
sum=$(sha256sum "$tools/go.sum" | cut -c1-12)
out=$cache/helm-$version-$sum
if [ "${1:-}" = --path ] || [ -x "$out/helm" ]; then echo "$out/helm"; exit 0; fi

mkdir -p "$cache"
# Test packages may all find the binary missing: one builds, the others
# wait for it.
exec 9>"$cache/.helm.lock"
flock 9
[ -x "$out/helm" ] && { echo "$out/helm"; exit 0; }

echo "building helm $version into $out (minutes, once)" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cd "$tools"
# What helm's Makefile stamps: its version, and the Kubernetes version
# `helm template` and `helm lint` assume without a cluster (the client-go
# minor it was built with, as 1.<minor>).
k8s=$(go list -m -f '{{.Version}}' k8s.io/client-go 2>>"$log") || { cat "$log" >&2; exit 1; }
minor=$(echo "$k8s" | cut -d. -f2)
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
done
rm -rf "$out.tmp"
mkdir -p "$out.tmp"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out.tmp/helm" helm.sh/helm/v3/cmd/helm >>"$log" 2>&1 ||
  { cat "$log" >&2; echo "helm.sh: go build helm.sh/helm/v3/cmd/helm failed" >&2; exit 1; }
"$out.tmp/helm" version --short >&2
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out/helm"
