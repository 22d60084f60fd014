// Package pipeline builds what `trace` and `serve` share: the probe loaded
// into the kernel, the process table, and the agent between them, wired one
// way for both.
package pipeline

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/orphanwatch/orphanwatch/internal/agent"
	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/probe"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
)

// TableSize bounds the user-space process table.
const TableSize = 65536

// Config is what differs between the commands.
type Config struct {
	Probe probe.Config
	Sinks []agent.Sink
	Names container.Namer // may be nil
	Log   *slog.Logger
}

// Pipeline is a loaded probe, its table and its agent.
type Pipeline struct {
	Probe *probe.Probe
	Table *lineage.Table
	Agent *agent.Agent
	// Postmasters are those running when it opened, now watched.
	Postmasters []*lineage.Postmaster
}

// Open loads and attaches the programs, learns the running postmasters
// from /proc and tells the kernel about them. On error nothing stays
// attached; a probe error is returned as it is (the commands turn its
// Problem into an exit status).
func Open(cfg Config) (*Pipeline, error) {
	p, err := probe.Load(cfg.Probe)
	if err != nil {
		return nil, err
	}
	table := lineage.New(procfs.Default, TableSize)
	clock := p.Clock()
	ag := agent.New(agent.Config{
		Kernel: p, Lost: lost(p),
		Table: table, Proc: procfs.Default,
		Wall: clock.Wall, Now: clock.BootNow,
		Sinks: cfg.Sinks, All: cfg.Probe.StreamAll,
		Log: cfg.Log, Names: cfg.Names,
	})
	postmasters, err := ag.Start()
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("learning the running postmasters from /proc: %w", err)
	}
	return &Pipeline{Probe: p, Table: table, Agent: ag, Postmasters: postmasters}, nil
}

// lost reads the kernel's count of events the ring buffer dropped.
func lost(p *probe.Probe) func() uint64 {
	return func() uint64 {
		n, err := p.Lost()
		if err != nil {
			return 0
		}
		return n
	}
}

// Run reports the postmasters found at start, then reads events until ctx
// ends.
func (p *Pipeline) Run(ctx context.Context) error {
	p.Agent.ReportRunning(p.Postmasters)
	return p.Agent.Run(ctx, p.Probe.Read)
}

// Close detaches everything.
func (p *Pipeline) Close() error { return p.Probe.Close() }
