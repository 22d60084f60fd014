package oracle

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// A server that stays down is explained by its processes: the tree names
// the postmaster (here, the test) and each child with its state.
func TestProcessTreeNamesEachChild(t *testing.T) {
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	tree := processTree(os.Getpid())
	lines := strings.Split(tree, "\n")
	if !strings.HasPrefix(lines[0], strconv.Itoa(os.Getpid())+" ") {
		t.Errorf("the first line is not the parent's:\n%s", tree)
	}
	want := "  " + strconv.Itoa(child.Process.Pid) + " "
	found := false
	for _, l := range lines[1:] {
		found = found || (strings.HasPrefix(l, want) && strings.HasSuffix(l, "sleep 30"))
	}
	if !found {
		t.Errorf("no line %q... ending in \"sleep 30\":\n%s", want, tree)
	}
}
