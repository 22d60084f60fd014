package e2e

import (
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }
