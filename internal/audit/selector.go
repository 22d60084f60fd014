package audit

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
)

// hexID: what could be a container id or a prefix of one.
var hexID = regexp.MustCompile(`^[0-9a-f]{1,64}$`)

// pickContainer selects the postmasters of one container, given as docker
// inspect takes it: a whole id, else a name (Docker's, or the Kubernetes
// container's, also as pod/container or namespace/pod/container), else a
// prefix of an id. It says so when nothing, or more than one container,
// matches.
func (h Host) pickContainer(arg string, found []*lineage.Postmaster) ([]*lineage.Postmaster, string) {
	prefix, err := ContainerPrefix(arg)
	if err != nil {
		return nil, err.Error()
	}
	name := strings.TrimPrefix(arg, "/")
	label := func(pm *lineage.Postmaster) string { return h.containerLabel(pm.Container) }

	if out := matching(found, func(pm *lineage.Postmaster) bool { return pm.Container.ID == prefix }); len(out) > 0 {
		return out, ""
	}
	named := matching(found, func(pm *lineage.Postmaster) bool { return h.isNamed(pm.Container, name) })
	if out, problem := one(named, label, fmt.Sprintf("%q names several containers", arg), "give the container id"); len(out) > 0 || problem != "" {
		return out, problem
	}
	if hexID.MatchString(prefix) {
		byPrefix := matching(found, func(pm *lineage.Postmaster) bool { return strings.HasPrefix(pm.Container.ID, prefix) })
		// Ids long enough to tell them apart.
		longer := func(pm *lineage.Postmaster) string { return h.containerLabelID(pm.Container, len(prefix)+8) }
		if out, problem := one(byPrefix, longer, fmt.Sprintf("%q matches several containers", arg), "give more of the id"); len(out) > 0 || problem != "" {
			return out, problem
		}
	}

	msg := fmt.Sprintf("no running postmaster in a container named %q", name)
	if hexID.MatchString(prefix) {
		msg = fmt.Sprintf("no running postmaster in a container whose id starts with %q or named %q", prefix, name)
	}
	if ids := container.IDsNamed(h.Names, name); len(ids) > 0 {
		short := make([]string, len(ids))
		for i, id := range ids {
			short[i] = container.Ref{ID: id}.Short()
		}
		msg = fmt.Sprintf("container %s (%s) has no running postmaster (is PostgreSQL running in it? docker ps -a, docker logs %s)", name, strings.Join(short, ", "), name)
	}
	var running []string
	for _, pm := range found {
		if !pm.Container.IsZero() {
			if l := label(pm); !slices.Contains(running, l) {
				running = append(running, l)
			}
		}
	}
	slices.Sort(running)
	if len(running) == 0 {
		return nil, msg + "; no postmaster runs in a container here"
	}
	return nil, msg + "; postmasters run in " + strings.Join(running, ", ")
}

func matching(found []*lineage.Postmaster, ok func(*lineage.Postmaster) bool) []*lineage.Postmaster {
	var out []*lineage.Postmaster
	for _, pm := range found {
		if ok(pm) {
			out = append(out, pm)
		}
	}
	return out
}

// one returns the postmasters when they are all in one container, else the
// problem: ambiguous, listing the containers.
func one(pms []*lineage.Postmaster, label func(*lineage.Postmaster) string, ambiguous, hint string) ([]*lineage.Postmaster, string) {
	var labels []string
	for _, pm := range pms {
		if l := label(pm); !slices.Contains(labels, l) {
			labels = append(labels, l)
		}
	}
	if len(labels) > 1 {
		slices.Sort(labels)
		return nil, fmt.Sprintf("%s (%s): %s", ambiguous, strings.Join(labels, ", "), hint)
	}
	return pms, ""
}

// isNamed: the container is called name, as Docker or Kubernetes calls it.
func (h Host) isNamed(ref container.Ref, name string) bool {
	n := h.names(ref)
	if n.Container == "" {
		return false
	}
	return name == n.Container ||
		n.Pod != "" && (name == n.Pod+"/"+n.Container || name == n.Namespace+"/"+n.Pod+"/"+n.Container)
}

// containerLabel is how the selector's messages name a container:
// "db (0123456789ab)", "app/db-0/postgres (0123456789ab)", or the short id.
func (h Host) containerLabel(ref container.Ref) string { return h.containerLabelID(ref, 12) }

// containerLabelID is containerLabel with idLen digits of the id.
func (h Host) containerLabelID(ref container.Ref, idLen int) string {
	n := h.names(ref)
	name := n.Container
	if n.Pod != "" && name != "" {
		name = n.Namespace + "/" + n.Pod + "/" + name
	}
	if ref.ID == "" {
		return cmpOr(name, "pod "+ref.PodUID)
	}
	id := ref.ID[:min(len(ref.ID), idLen)]
	if name == "" {
		return id
	}
	return fmt.Sprintf("%s (%s)", name, id)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
