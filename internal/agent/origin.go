package agent

import (
	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/origin"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// addOrigin says where an adoptee came from, on a record about it, and
// gives the fix for that origin.
func (a *Agent) addOrigin(r *report.Record, ev *event.Event, proc *lineage.Process, pm *lineage.Postmaster) {
	d := verdict.Describe(verdict.Verdict(r.Verdict))
	if !d.Adoptee || pm == nil {
		return
	}
	f := origin.Facts{Start: ev.Task.Start, PostmasterExec: pm.ExecAt, Postmaster: pm.Key.PID, Runtime: r.ContainerRuntime}
	if ev.Flags&event.HasBirth != 0 && ev.Birth.Flags&event.BirthForked != 0 {
		for _, anc := range ev.Birth.Ancestry {
			if anc.PID == 0 {
				break
			}
			f.Ancestry = append(f.Ancestry, origin.Ancestor{PID: anc.PID, Comm: anc.Comm.String()})
		}
	}
	father := &ev.PreviousExec
	if ev.Flags&event.HasPreviousExec == 0 {
		father = nil
		if proc != nil {
			father = proc.PreviousExec
		}
	}
	if father != nil {
		f.FatherArgv, f.FatherTruncated = father.Argv(), father.Truncated()
	}
	ref := container.Ref{ID: r.ContainerID, PodUID: r.PodUID, Runtime: r.ContainerRuntime}
	f.Container = r.Container
	if f.Container == "" {
		f.Container = ref.Short()
	}
	if a.cfg.Names != nil {
		f.Checks = container.ChecksOf(a.cfg.Names, ref)
	}
	o := origin.Of(f)
	r.Origin, r.OriginDetail = string(o.Kind), o.Detail
	if d.Fix != "" {
		r.Fix = o.Fix
	}
}
