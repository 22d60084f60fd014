package e2e

import (
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// MainWithKubeAPI: the Kubernetes Events test starts an API server.
func TestMain(m *testing.M) { testenv.MainWithKubeAPI(m) }
