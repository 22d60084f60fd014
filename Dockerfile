# syntax=docker/dockerfile:1
# The orphanwatch agent image: a static binary on distroless. No clang is
# needed: the BPF objects are generated and committed (make generate).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/orphanwatch/orphanwatch/internal/version.Version=${VERSION}" \
      -o /out/orphanwatch ./cmd/orphanwatch

# The agent loads BPF programs and reads every process's /proc entries: it
# runs as root inside the container, with the capabilities the DaemonSet
# grants (deploy/kubernetes/daemonset.yaml).
FROM gcr.io/distroless/static-debian12
ARG VERSION=dev
LABEL org.opencontainers.image.title="orphanwatch" \
      org.opencontainers.image.description="Finds the orphaned processes that make a containerised PostgreSQL crash-restart" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/orphanwatch/orphanwatch"
COPY --from=build /out/orphanwatch /orphanwatch
EXPOSE 9877
ENTRYPOINT ["/orphanwatch", "serve"]
