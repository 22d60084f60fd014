#!/usr/bin/env bash
# Fails when the committed generated files (bpf2go's Go bindings and .o files for amd64
# and arm64, the PrometheusRule and the Helm chart's copies) differ from what `make generate` builds now, or
# when the BPF objects would come out differently in a clone at another path.
set -euo pipefail
cd "$(dirname "$0")/.."
files='internal/probe/*_bpfel.go internal/probe/*_bpfel.o deploy/kubernetes/prometheusrule.yaml deploy/helm/orphanwatch/files/*'
before=$(sha256sum $files)
make -s generate >/dev/null
after=$(sha256sum $files)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "the generated BPF files are stale: run 'make generate' and commit them" >&2
  exit 1
fi

# CI's clone lives elsewhere than yours: build again from a copy at a longer path
# (the clang behaviour this guards against is described in scripts/bpf-cc).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
copy="$tmp/a/path/longer/than/the/one/this/clone/lives/at/orphanwatch"
mkdir -p "$copy/internal" "$copy/scripts"
cp -r bpf vmlinux go.mod go.sum Makefile "$copy/"
cp -r internal/probe "$copy/internal/"
cp scripts/bpf-cc "$copy/scripts/"
make -s -C "$copy" generate-bpf >/dev/null
here=$(cd internal/probe && sha256sum *_bpfel.o)
there=$(cd "$copy/internal/probe" && sha256sum *_bpfel.o)
if [ "$here" != "$there" ]; then
  diff <(echo "$here") <(echo "$there") || true
  echo "the BPF objects depend on the clone's path: CI would call them stale; see scripts/bpf-cc" >&2
  exit 1
fi
echo "generated BPF files are up to date and the same at any path"
