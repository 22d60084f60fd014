package container

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeDockerConfig writes root/<id>/config.v2.json as Docker Engine does
// (only the fields the namer reads, plus some it ignores).
func writeDockerConfig(t *testing.T, root, id, body string) {
	t.Helper()
	dir := filepath.Join(root, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.v2.json"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDockerNamer(t *testing.T) {
	root := t.TempDir()
	writeDockerConfig(t, root, id, `{"ID":"`+id+`","Name":"/pg-primary","State":{"Running":true},"Config":{"Image":"postgres:15","Labels":{"com.docker.compose.service":"db"}}}`)
	writeDockerConfig(t, root, id2, `{"ID":"`+id2+`","Name":"/k8s_postgres_pg-0_db_`+uid+`_0","Config":{"Labels":{
		"io.kubernetes.pod.namespace":"db","io.kubernetes.pod.name":"pg-0","io.kubernetes.container.name":"postgres"}}}`)
	brokenID := id[:60] + "beef"
	writeDockerConfig(t, root, brokenID, `{"Name":`)
	d := NewDockerNamer(root)

	for _, tc := range []struct {
		why  string
		ref  Ref
		want Names
	}{
		{"a docker run container: its name without the slash", Ref{Runtime: RuntimeDocker, ID: id}, Names{Container: "pg-primary"}},
		{"the runtime is not needed: records carry only the id", Ref{ID: id}, Names{Container: "pg-primary"}},
		{"a container Kubernetes started through cri-dockerd: its pod labels", Ref{ID: id2, PodUID: uid}, Names{Namespace: "db", Pod: "pg-0", Container: "postgres"}},
		{"no such container", Ref{ID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}, Names{}},
		{"an unparsable config", Ref{ID: brokenID}, Names{}},
		{"no id", Ref{PodUID: uid}, Names{}},
		{"an id that is not one cannot walk the file system", Ref{ID: "../" + id}, Names{}},
	} {
		if got := d.Names(tc.ref); got != tc.want {
			t.Errorf("%s: Names(%+v) = %+v, want %+v", tc.why, tc.ref, got, tc.want)
		}
	}
}

func TestDockerNamerMissingRootIsIDsOnly(t *testing.T) {
	d := NewDockerNamer(filepath.Join(t.TempDir(), "no-docker-here"))
	if got := d.Names(Ref{Runtime: RuntimeDocker, ID: id}); !got.IsZero() {
		t.Errorf("Names without a Docker directory = %+v, want none", got)
	}
	var nilNamer *DockerNamer
	if got := nilNamer.Names(Ref{ID: id}); !got.IsZero() {
		t.Errorf("nil DockerNamer gave %+v", got)
	}
}

// docker rename rewrites config.v2.json: the new name shows at once.
func TestDockerNamerSeesARenameAtOnce(t *testing.T) {
	root := t.TempDir()
	writeDockerConfig(t, root, id, `{"Name":"/before"}`)
	d := NewDockerNamer(root)
	if got := d.Names(Ref{ID: id}).Container; got != "before" {
		t.Fatalf("first lookup = %q, want before", got)
	}
	file := filepath.Join(root, id, "config.v2.json")
	writeDockerConfig(t, root, id, `{"Name":"/after"}`)
	os.Chtimes(file, time.Now().Add(time.Second), time.Now().Add(time.Second))
	if got := d.Names(Ref{ID: id}).Container; got != "after" {
		t.Errorf("lookup after the rename = %q, want after", got)
	}
}

// The HEALTHCHECK of config.v2.json, CMD-SHELL and CMD forms, with Docker's
// default timeout when none was given.
func TestDockerNamerTellsTheHealthcheck(t *testing.T) {
	root := t.TempDir()
	writeDockerConfig(t, root, id, `{"Name":"/db","Config":{"Healthcheck":{"Test":["CMD-SHELL","pg_isready -U postgres || exit 1"],"Timeout":1000000000}}}`)
	writeDockerConfig(t, root, id2, `{"Name":"/db2","Config":{"Healthcheck":{"Test":["CMD","pg_isready","-U","postgres"]}}}`)
	d := NewDockerNamer(root)
	hc := d.Checks(Ref{ID: id}).Healthcheck
	if hc == nil || hc.Timeout != time.Second || !slices.Equal(hc.Argv(), []string{"/bin/sh", "-c", "pg_isready -U postgres || exit 1"}) {
		t.Errorf("CMD-SHELL healthcheck = %+v", hc)
	}
	hc = d.Checks(Ref{ID: id2}).Healthcheck
	if hc == nil || hc.Timeout != 30*time.Second || !slices.Equal(hc.Argv(), []string{"pg_isready", "-U", "postgres"}) {
		t.Errorf("CMD healthcheck = %+v", hc)
	}
	if got := ChecksOf(Chain(d), Ref{ID: id}); got.Healthcheck == nil {
		t.Error("the chain does not pass the healthcheck on")
	}
	match, _ := ChecksOf(Chain(d), Ref{ID: id}).Matching([]string{"sh", "-c", "pg_isready -U postgres || exit 1"}, false)
	if match == nil {
		t.Error("the probe's shell is not recognised as the healthcheck")
	}
	if match, _ := d.Checks(Ref{ID: id}).Matching([]string{"sh", "-c", "pg_isready -U post"}, true); match == nil {
		t.Error("a truncated argv is not recognised")
	}
	if match, _ := d.Checks(Ref{ID: id}).Matching([]string{"sh", "-c", "pg_isready -U post"}, false); match != nil {
		t.Error("a different command was taken for the healthcheck")
	}
}

func TestDockerNamerCacheIsBounded(t *testing.T) {
	d := NewDockerNamer(t.TempDir())
	for i := range dockerMaxEntries + 10 {
		ref := Ref{ID: id[:56] + hex8(i)}
		d.Names(ref)
	}
	if n := len(d.cache); n > dockerMaxEntries {
		t.Errorf("cache holds %d entries, bound is %d", n, dockerMaxEntries)
	}
}

func hex8(i int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 8)
	for j := 7; j >= 0; j-- {
		b[j] = digits[i&15]
		i >>= 4
	}
	return string(b)
}

func TestDockerNamerConcurrent(t *testing.T) {
	root := t.TempDir()
	writeDockerConfig(t, root, id, `{"Name":"/pg"}`)
	d := NewDockerNamer(root)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if got := d.Names(Ref{ID: id}).Container; got != "pg" {
					t.Errorf("concurrent lookup = %q", got)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestChain(t *testing.T) {
	k8s := namerFunc(func(r Ref) Names {
		if r.PodUID == uid {
			return Names{Namespace: "db", Pod: "pg-0"} // knows the pod, not yet the new container
		}
		return Names{}
	})
	docker := namerFunc(func(r Ref) Names {
		if r.ID == id {
			return Names{Namespace: "stale", Container: "postgres"}
		}
		return Names{}
	})
	c := Chain(nil, k8s, docker)
	if got, want := c.Names(Ref{ID: id, PodUID: uid}), (Names{Namespace: "db", Pod: "pg-0", Container: "postgres"}); got != want {
		t.Errorf("chain = %+v, want %+v (first namer wins each field)", got, want)
	}
	if got := c.Names(Ref{ID: id2}); !got.IsZero() {
		t.Errorf("chain for an unknown container = %+v", got)
	}
	if got := Chain().Names(Ref{ID: id}); !got.IsZero() {
		t.Errorf("empty chain = %+v", got)
	}
}

type namerFunc func(Ref) Names

func (f namerFunc) Names(r Ref) Names { return f(r) }

func TestIDsNamed(t *testing.T) {
	root := t.TempDir()
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	for id, name := range map[string]string{a: "/db", b: "/web"} {
		if err := os.MkdirAll(filepath.Join(root, id), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, id, "config.v2.json"), []byte(`{"Name":"`+name+`"}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := NewDockerNamer(root)
	if got := IDsNamed(Chain(d), "db"); len(got) != 1 || got[0] != a {
		t.Errorf("IDsNamed(db) = %v", got)
	}
	if got := d.IDsNamed("/web"); len(got) != 1 || got[0] != b {
		t.Errorf("IDsNamed(/web) = %v", got)
	}
	if got := IDsNamed(Chain(d), "nope"); len(got) != 0 {
		t.Errorf("IDsNamed(nope) = %v", got)
	}
}

func TestFromCgroups(t *testing.T) {
	id := strings.Repeat("c", 64)
	if ref := FromCgroups(map[string]string{"": "/", "memory": "/docker/" + id}); ref.ID != id || ref.Runtime != RuntimeDocker {
		t.Errorf("v1 memory path: %+v", ref)
	}
	if ref := FromCgroups(map[string]string{"": "/system.slice/docker-" + id + ".scope"}); ref.ID != id {
		t.Errorf("v2 path: %+v", ref)
	}
}
