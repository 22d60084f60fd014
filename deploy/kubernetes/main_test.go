package kubernetes

import (
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// The API server the tests of apiserver_test.go share is stopped at the end.
func TestMain(m *testing.M) { testenv.MainWithKubeAPI(m) }
