package container

// Names are the human names of a container, where a runtime or the
// Kubernetes API can tell them.
type Names struct {
	Namespace string // Kubernetes namespace
	Pod       string
	Container string
}

// IsZero reports whether no name is known.
func (n Names) IsZero() bool { return n == Names{} }

// Namer looks names up. Implementations must be safe for concurrent use
// and must not block: the agent calls them while building each record.
type Namer interface {
	Names(Ref) Names
}

// Chain asks each namer in turn; each field comes from the first namer
// that knows it. Put the most authoritative first: the Kubernetes API
// before Docker's files (which, under cri-dockerd, name containers
// k8s_<container>_<pod>_...). Nil namers are skipped.
func Chain(namers ...Namer) Namer {
	var c chain
	for _, n := range namers {
		if n != nil {
			c = append(c, n)
		}
	}
	return c
}

type chain []Namer

func (c chain) Names(ref Ref) Names {
	var out Names
	for _, n := range c {
		got := n.Names(ref)
		if out.Namespace == "" {
			out.Namespace = got.Namespace
		}
		if out.Pod == "" {
			out.Pod = got.Pod
		}
		if out.Container == "" {
			out.Container = got.Container
		}
		if out.Namespace != "" && out.Pod != "" && out.Container != "" {
			break
		}
	}
	return out
}
