#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from the Go module proxy, once, into a
# cache outside the repository, and prints the directory holding them.
# Later runs print it at once; `--path` prints it without building. The
# tests against a real API server (internal/testenv/kube.go) use both.
#
# Kubernetes publishes no kube-apiserver module of its own: k8s.io/kubernetes
# requires its staging modules (k8s.io/api, k8s.io/apiserver, ...) at v0.0.0
# and replaces them with directories the module zip does not hold. A wrapper
# module, generated here in a temporary directory, requires k8s.io/kubernetes
# and replaces each staging module with its published v0.x release instead.
# kubectl comes from the same build: Debian's kubernetes-client is 1.20,
# far outside kubectl's one-minor skew, and cannot be installed beside the
# kubectl package that owns /usr/bin/kubectl on this project's machines.
#
#   KUBE_VERSION         v1.34.2 (staging modules at v0.34.2)
#   ORPHANWATCH_CACHE    /var/cache/orphanwatch
set -euo pipefail
version=${KUBE_VERSION:-v1.34.2}
cache=${ORPHANWATCH_CACHE:-/var/cache/orphanwatch}
out=$cache/kubernetes-$version
built() { [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ]; }
if [ "${1:-}" = --path ] || built; then echo "$out"; exit 0; fi

mkdir -p "$cache"
# Test packages may all find the binaries missing: one builds, the others
# wait for it.
exec 9>"$cache/.kubernetes.lock"
flock 9
built && { echo "$out"; exit 0; }

minor=${version#v1.}
minor=${minor%%.*}
staging=v0.${version#v1.}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "building kube-apiserver and kubectl $version into $out (minutes, once)" >&2
# The go commands' output (hundreds of downloads) only when one fails.
quiet() { "$@" >>"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; echo "kube-apiserver.sh: $* failed" >&2; exit 1; }; }

gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$version" 2>>"$work/build.log" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { cat "$work/build.log" >&2; echo "kube-apiserver.sh: no go.mod for k8s.io/kubernetes@$version" >&2; exit 1; }
{
  echo "module orphanwatch.invalid/kubernetes"
  echo
  # The same language version and GODEBUG defaults Kubernetes builds with.
  sed -n -e '/^go /p' -e '/^godebug /p' "$gomod"
  echo
  echo "require k8s.io/kubernetes $version"
  echo
  # Every staging module Kubernetes replaces with ./staging/src/...
  sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
  echo
  echo "tool ("
  echo "	k8s.io/kubernetes/cmd/kube-apiserver"
  echo "	k8s.io/kubernetes/cmd/kubectl"
  echo ")"
} >"$work/go.mod"

cd "$work"
quiet go mod tidy
# What hack/lib/version.sh stamps, so that /version, the compatibility
# version and kubectl's skew check see the release, not v0.0.0-master.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
mkdir bin
quiet env CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o bin/ k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
bin/kube-apiserver --version >&2
rm -rf "$out.tmp" "$out"
mv bin "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
