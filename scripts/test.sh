#!/usr/bin/env bash
# The whole test suite: vet, unit tests, the kernel tests (real BPF), the
# end-to-end tests against real PostgreSQL and Prometheus, alert rule tests,
# and short fuzz runs. Privileged tests run one package at a time: they all
# watch the same kernel. Under CI=true a skipped test is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
# The Docker tests' PostgreSQL images: built once per machine (minutes, side
# by side), cached outside the repository; as root only, like those tests.
[ "$(id -u)" -ne 0 ] || make -s pg-images
# kube-apiserver and kubectl for the tests against a real API server: built
# from the Go module proxy once (minutes), then cached outside the clone.
kube=$(./scripts/kube-apiserver.sh)
echo "== kube-apiserver, kubectl: $kube"
# helm, for the chart's tests (deploy/helm): built from its Go module
# (pinned in tools/helm) once (minutes), then cached outside the clone.
helm=$(./scripts/helm.sh)
echo "== helm: $helm"

echo "== go vet"
go vet ./...

log=$(mktemp)
fuzzlog=$(mktemp)
trap 'rm -f "$fuzzlog"' EXIT
echo "== go test (full log: $log, kept when a test fails)"
status=0
go test -count=1 -p 1 -timeout 45m -v ./... >"$log" 2>&1 || status=$?
grep -E '^(ok|FAIL|---|panic:|\s+\S+_test\.go:[0-9]+:|\*\*\* SKIPPED)' "$log" | grep -v -- '--- PASS' || true
if [ "$status" -ne 0 ]; then
  # Each failed test's own output: the lines above keep only the first line
  # of each message, and a CI machine's log is gone with it.
  for t in $(grep -oP '^--- FAIL: \K\S+' "$log"); do
    echo "== output of $t (its last 300 lines)"
    awk -v t="$t" '$0 == "=== RUN   " t {on = 1} on {print} on && index($0, "--- FAIL: " t " ") == 1 {exit}' "$log" | tail -n 300
  done
  echo "tests failed (status $status); full log: $log"; exit "$status"
fi
skips=$(grep -c -- '--- SKIP' "$log" || true)
if [ "$skips" -gt 0 ]; then
  grep -A2 -- '--- SKIP' "$log"
  if [ "${CI:-}" = true ]; then echo "CI=true: $skips test(s) skipped; full log: $log"; exit 1; fi
  echo "WARNING: $skips test(s) skipped: run as root (sudo make test) to run them all"
fi
rm -f "$log"
# A count, not a duration: a duration can end with the fuzzer's own
# "context deadline exceeded" while a worker is mid-input, which is no finding.
echo "== fuzzing each target for 30000 inputs (make fuzz FUZZTIME=5m for longer)"
./scripts/fuzz.sh 30000x >"$fuzzlog" 2>&1 || { cat "$fuzzlog"; echo "fuzzing found a failure"; exit 1; }
grep -E '^(== |ok|FAIL)' "$fuzzlog"
echo "== all tests passed"
