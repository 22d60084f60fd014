package container

import (
	"cmp"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultDockerRoot is where Docker Engine keeps each container's
// config.v2.json (its data-root, /var/lib/docker, + containers).
const DefaultDockerRoot = "/var/lib/docker/containers"

// dockerMaxEntries bounds the cache on hosts with heavy container churn.
const dockerMaxEntries = 4096

// DockerNamer names Docker Engine containers from their config.v2.json:
// the container name and, for containers Kubernetes started through
// dockershim or cri-dockerd, the pod labels; and tells their HEALTHCHECK.
// It needs read access to the directory (root); when the directory is
// absent every lookup is a cheap miss. A lookup costs a stat: the file is
// read again when it changed (docker rename rewrites it). Safe for
// concurrent use.
type DockerNamer struct {
	root string

	mu    sync.Mutex
	cache map[string]dockerEntry
}

type dockerEntry struct {
	names       Names
	healthcheck *Healthcheck
	modified    time.Time // the file's mtime when read; zero: no file
}

// NewDockerNamer reads container configs under root (DefaultDockerRoot
// when empty).
func NewDockerNamer(root string) *DockerNamer {
	if root == "" {
		root = DefaultDockerRoot
	}
	return &DockerNamer{root: root, cache: make(map[string]dockerEntry)}
}

// Names implements Namer. Only the container id is used: the record may not
// say which runtime made it, and a config file exists only for Docker's.
func (d *DockerNamer) Names(ref Ref) Names { return d.entry(ref).names }

// Checks implements CheckSource: the container's HEALTHCHECK.
func (d *DockerNamer) Checks(ref Ref) Checks { return Checks{Healthcheck: d.entry(ref).healthcheck} }

func (d *DockerNamer) entry(ref Ref) dockerEntry {
	if d == nil || !bareID.MatchString(ref.ID) { // the id becomes a path: hex only
		return dockerEntry{}
	}
	file := filepath.Join(d.root, ref.ID, "config.v2.json")
	var modified time.Time
	if st, err := os.Stat(file); err == nil {
		modified = st.ModTime()
	}
	d.mu.Lock()
	e, ok := d.cache[ref.ID]
	d.mu.Unlock()
	if ok && e.modified.Equal(modified) {
		return e
	}
	e = readDockerConfig(file)
	e.modified = modified
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.cache) >= dockerMaxEntries {
		clear(d.cache) // a churn storm: start over rather than grow
	}
	d.cache[ref.ID] = e
	return e
}

// dockerConfig is the part of config.v2.json used here.
type dockerConfig struct {
	Name   string
	Config struct {
		Labels      map[string]string
		Healthcheck *struct {
			Test    []string
			Timeout time.Duration // ns, 0 for Docker's default
		}
	}
}

// The labels dockershim and cri-dockerd put on the containers they create.
const (
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodName      = "io.kubernetes.pod.name"
	labelContainer    = "io.kubernetes.container.name"
)

// dockerDefaultHealthTimeout is what Docker uses when --health-timeout is 0.
const dockerDefaultHealthTimeout = 30 * time.Second

func readDockerConfig(file string) dockerEntry {
	data, err := os.ReadFile(file)
	if err != nil {
		return dockerEntry{}
	}
	var c dockerConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return dockerEntry{}
	}
	var e dockerEntry
	if l := c.Config.Labels; l[labelPodName] != "" && l[labelContainer] != "" {
		e.names = Names{Namespace: l[labelPodNamespace], Pod: l[labelPodName], Container: l[labelContainer]}
	} else {
		e.names = Names{Container: strings.TrimPrefix(c.Name, "/")}
	}
	if h := c.Config.Healthcheck; h != nil && len(h.Test) > 1 && h.Test[0] != "NONE" {
		e.healthcheck = &Healthcheck{Test: h.Test, Timeout: cmp.Or(h.Timeout, dockerDefaultHealthTimeout)}
	}
	return e
}

// IDsNamed lists the containers whose config.v2.json names them name
// (with or without Docker's leading /): what `docker inspect NAME` finds.
// It reads every config under the root, so it is for a person's lookup
// (check --container NAME), not for each record.
func (d *DockerNamer) IDsNamed(name string) []string {
	if d == nil || name == "" {
		return nil
	}
	name = strings.TrimPrefix(name, "/")
	entries, err := os.ReadDir(d.root)
	if err != nil {
		return nil
	}
	var ids []string
	for _, en := range entries {
		if !bareID.MatchString(en.Name()) {
			continue
		}
		if d.Names(Ref{ID: en.Name()}).Container == name {
			ids = append(ids, en.Name())
		}
	}
	return ids
}

// nameLister finds containers by name.
type nameLister interface {
	IDsNamed(name string) []string
}

// IDsNamed asks every namer that can list containers by name (Docker's
// config files) which containers are called name.
func IDsNamed(n Namer, name string) []string {
	sources := []Namer{n}
	if c, ok := n.(chain); ok {
		sources = c
	}
	var ids []string
	for _, s := range sources {
		if l, ok := s.(nameLister); ok {
			ids = append(ids, l.IDsNamed(name)...)
		}
	}
	return ids
}
