# orphanwatch: `make help` lists the targets.

# The BPF toolchain is pinned: generated objects are committed and CI checks
# they match what this compiler produces.
BPF_CLANG  ?= clang-19
BPF_STRIP  ?= llvm-strip-19
BPF_CFLAGS ?= -O2 -g -Wall -Werror
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS    := -s -w -X github.com/orphanwatch/orphanwatch/internal/version.Version=$(VERSION)
BIN        := bin/orphanwatch
IMAGE      ?= orphanwatch:$(VERSION)

.DEFAULT_GOAL := help
.PHONY: help generate generate-bpf check-generated build run test test-unit pg-images bench soak fuzz lint image oracle

help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# scripts/bpf-cc runs $(BPF_CLANG) on a copy of bpf/ and vmlinux/ in a fixed
# place, so the objects are the same bytes in every clone (the script says why).
generate: generate-bpf ## Rebuild the committed BPF objects (needs clang-19, libbpf-dev), the PrometheusRule and the Helm chart's copies.
	go generate ./deploy/kubernetes ./deploy/helm

generate-bpf: ## Rebuild only the BPF objects and their Go bindings.
	BPF_CLANG=$(BPF_CLANG) BPF2GO_CC=$(CURDIR)/scripts/bpf-cc BPF2GO_STRIP=$(BPF_STRIP) BPF2GO_CFLAGS="$(BPF_CFLAGS)" go generate ./internal/probe

check-generated: ## Fail when the committed BPF objects differ from what `make generate` builds.
	./scripts/check-generated.sh

build: ## Build bin/orphanwatch (static, no clang needed).
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/orphanwatch

run: build ## Trace now (needs root): the live table of orphan deaths.
	./$(BIN) trace

test: ## The whole test suite: installs missing packages, then unit, kernel and PostgreSQL tests (as root).
	./scripts/test.sh

test-unit: ## Unit tests only (no root needed).
	go test ./...

PG_IMAGES ?= 13 15 17 18
pg-images: ## Build the Docker tests' PostgreSQL images (debootstrap, cached per machine; as root), e.g. PG_IMAGES=15.
	go run ./internal/testenv/pgimage $(PG_IMAGES)

BENCH_FLAGS ?=
bench: build ## Measure overhead, BPF cost by node configuration and storm kind (vs bpftrace), pgbench -C, lost events, agent cost, latency, startup (BENCH_FLAGS=-markdown for the docs).
	go run ./bench $(BENCH_FLAGS)

SOAK_DURATION ?= 10m
SOAK_INTERVAL ?= 30s
soak: ## A 10-minute soak against real PostgreSQL: churn, an incident every 30 s (as root).
	SOAK_DURATION=$(SOAK_DURATION) SOAK_INTERVAL=$(SOAK_INTERVAL) go test -count=1 -run '^TestSoak$$' -v -timeout 30m ./test/e2e

ROUNDS ?= 1000
SEED   ?=
PG     ?= 15
oracle: ## Differential oracle: ROUNDS seeded incidents on each PG major (PG=13,15,17,18: the host's 15 unshared, others in Docker), judged by PostgreSQL's log (SEED=s replays; as root).
	go run ./test/oracle -pg $(PG) -rounds $(ROUNDS) $(if $(SEED),-seed $(SEED))

FUZZTIME ?= 1m
fuzz: ## Run every fuzz target for FUZZTIME (default 1m; the test suite runs 30000 inputs each).
	./scripts/fuzz.sh $(FUZZTIME)

lint: ## gofmt and go vet.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./...

image: ## Build the container image (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .
