#!/usr/bin/env bash
# Installs what the test suite and `make generate` need, from Debian's
# packages, when something is missing. Idempotent; needs root to install.
set -euo pipefail
packages=(
  clang-19 llvm-19 libbpf-dev # make generate: the pinned BPF compiler and libbpf headers
  postgresql                  # PostgreSQL 15 server for the end-to-end tests
  tini dumb-init              # the init-as-PID-1 fix, tested
  catatonit                   # a pause process for the shared PID namespace tests (what Podman's pods run)
  prometheus                  # a real Prometheus server and promtool
  bpftrace hyperfine          # make bench: the peer detector and timing
  util-linux                  # unshare, nsenter, setpriv, taskset
  gcc libc6-dev               # cc for the fork/exit storm driver (bench/storm)
  etcd-server                 # etcd for the tests' kube-apiserver (scripts/kube-apiserver.sh)
  docker.io                   # a real Docker Engine (dockerd, containerd, runc, docker-init) for the Docker tests
  debootstrap debian-archive-keyring # their PostgreSQL images, from Debian's packages, signatures checked
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages: ${missing[*]}; run as root (sudo make test) to install them" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a packaged cluster on install; the tests run their own.
if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters -h 2>/dev/null | while read -r ver name _; do pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true; done
fi
