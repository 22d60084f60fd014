#!/usr/bin/env bash
# Fails when the committed generated files (bpf2go's Go bindings and .o files for amd64
# and arm64, and the PrometheusRule) differ from what `make generate` builds now.
set -euo pipefail
cd "$(dirname "$0")/.."
files='internal/probe/*_bpfel.go internal/probe/*_bpfel.o deploy/kubernetes/prometheusrule.yaml'
before=$(sha256sum $files)
make -s generate >/dev/null
after=$(sha256sum $files)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") || true
  echo "the generated BPF files are stale: run 'make generate' and commit them" >&2
  exit 1
fi
echo "generated BPF files are up to date"
