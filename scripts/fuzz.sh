#!/usr/bin/env bash
# Runs every go test -fuzz target for a while (default 5s each, or Nx for N
# inputs): the ring
# buffer decoder, the cgroup parser, redaction, and the /proc parsers.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-5s}
for target in $(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed 's/^func //' | sort -u); do
  pkg=$(grep -rlE "^func $target\(" --include='*_test.go' . | xargs -n1 dirname | sort -u | head -1)
  echo "== $target ($pkg, $fuzztime)"
  go test -run '^$' -fuzz "^$target\$" -fuzztime "$fuzztime" "$pkg"
done
