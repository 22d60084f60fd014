package container

import (
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

const (
	// dockerTTL bounds how long a name (or its absence) is believed: long
	// enough that a burst of records costs one read, short enough that a
	// docker rename or a config written just after the first event shows.
	dockerTTL = time.Minute
	// dockerMaxEntries bounds the cache on hosts with heavy container churn.
	dockerMaxEntries = 4096
)

// DockerNamer names Docker Engine containers from their config.v2.json:
// the container name and, for containers Kubernetes started through
// dockershim or cri-dockerd, the pod labels. It needs read access to the
// directory (root); when the directory is absent every lookup is a cheap
// miss. Safe for concurrent use.
type DockerNamer struct {
	root string
	now  func() time.Time

	mu    sync.Mutex
	cache map[string]dockerEntry
}

type dockerEntry struct {
	names Names
	read  time.Time
}

// NewDockerNamer reads container configs under root (DefaultDockerRoot
// when empty).
func NewDockerNamer(root string) *DockerNamer {
	if root == "" {
		root = DefaultDockerRoot
	}
	return &DockerNamer{root: root, now: time.Now, cache: make(map[string]dockerEntry)}
}

// Names implements Namer. Only the container id is used: the record may not
// say which runtime made it, and a config file exists only for Docker's.
func (d *DockerNamer) Names(ref Ref) Names {
	if d == nil || !bareID.MatchString(ref.ID) { // the id becomes a path: hex only
		return Names{}
	}
	now := d.now()
	d.mu.Lock()
	e, ok := d.cache[ref.ID]
	d.mu.Unlock()
	if ok && now.Sub(e.read) < dockerTTL {
		return e.names
	}

	names := d.read(ref.ID)
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.cache) >= dockerMaxEntries {
		for id, e := range d.cache {
			if now.Sub(e.read) >= dockerTTL {
				delete(d.cache, id)
			}
		}
		if len(d.cache) >= dockerMaxEntries {
			clear(d.cache) // all fresh: a churn storm; start over rather than grow
		}
	}
	d.cache[ref.ID] = dockerEntry{names: names, read: now}
	return names
}

// dockerConfig is the part of config.v2.json used here.
type dockerConfig struct {
	Name   string
	Config struct {
		Labels map[string]string
	}
}

// The labels dockershim and cri-dockerd put on the containers they create.
const (
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodName      = "io.kubernetes.pod.name"
	labelContainer    = "io.kubernetes.container.name"
)

func (d *DockerNamer) read(id string) Names {
	data, err := os.ReadFile(filepath.Join(d.root, id, "config.v2.json"))
	if err != nil {
		return Names{}
	}
	var c dockerConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return Names{}
	}
	if l := c.Config.Labels; l[labelPodName] != "" && l[labelContainer] != "" {
		return Names{Namespace: l[labelPodNamespace], Pod: l[labelPodName], Container: l[labelContainer]}
	}
	return Names{Container: strings.TrimPrefix(c.Name, "/")}
}
