package probe

import (
	"fmt"
	"structs"
	"unsafe"

	"github.com/orphanwatch/orphanwatch/internal/event"
)

// RecordSize is the size of struct event in bpf/events.h.
const RecordSize = int(unsafe.Sizeof(lifecycleEvent{}))

// Decode fills ev from one ring-buffer record. The record is copied into an
// aligned struct first, so any byte slice is safe to decode.
func Decode(raw []byte, pageSize uint64, ev *event.Event) error {
	if len(raw) != RecordSize {
		return fmt.Errorf("record of %d bytes, want %d", len(raw), RecordSize)
	}
	var r lifecycleEvent
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&r)), RecordSize), raw)
	// Range-checked before the conversion: event.Kind is narrower than the
	// record's field, so 257 would pass as 1.
	if r.Kind < uint32(event.KindExit) || r.Kind > uint32(event.KindPMSignal) {
		return fmt.Errorf("unknown event kind %d", r.Kind)
	}
	kind := event.Kind(r.Kind)

	ev.Time = r.TimeNs
	ev.Kind = kind
	ev.Flags = event.Flags(r.Flags)
	ev.Status = event.ExitStatus(r.ExitStatus)
	decodeTask(&ev.Task, taskRef(r.Task))
	decodeTask(&ev.Parent, taskRef(r.Parent))
	decodeTask(&ev.Previous, taskRef(r.Previous))

	ev.Cgroup.ID = r.Cgroup.Id
	copyChars(ev.Cgroup.Name[:], r.Cgroup.Name[:])
	copyChars(ev.Cgroup.Parent[:], r.Cgroup.Parent[:])

	s := &r.Signal
	ev.Signal = event.Signal{
		Generated: s.GeneratedNs, Delivered: s.DeliveredNs, Signo: s.Signo, Code: s.Code,
		SenderPID: s.SenderTgid, Flags: event.SignalFlags(s.Flags),
	}
	copyChars(ev.Signal.SenderComm[:], s.SenderComm[:])

	ev.OOM = event.OOM{
		TotalVMBytes:  r.Oom.TotalVmPages * pageSize,
		AnonRSSBytes:  r.Oom.AnonRssPages * pageSize,
		FileRSSBytes:  r.Oom.FileRssPages * pageSize,
		ShmemRSSBytes: r.Oom.ShmemRssPages * pageSize,
		OOMScoreAdj:   r.Oom.OomScoreAdj,
		Flags:         event.OOMFlags(r.Oom.Flags),
	}

	b, x := &r.Birth.Fork, &r.Birth.Exec
	ev.Birth.Time = b.TimeNs
	ev.Birth.ParentStart = b.ParentStartNs
	ev.Birth.Flags = event.BirthFlags(b.Flags)
	for i := range b.Ancestry {
		ev.Birth.Ancestry[i].PID = b.Ancestry[i].Tgid
		copyChars(ev.Birth.Ancestry[i].Comm[:], b.Ancestry[i].Comm[:])
	}
	decodeExec(&ev.Birth.Exec, x)
	decodeExec(&ev.PreviousExec, &r.PreviousExec)
	return nil
}

func decodeExec(x *event.Exec, r *lifecycleExecRecord) {
	x.ArgsLen = min(r.ArgsLen, uint16(len(x.Args)))
	copyChars(x.Exe[:], r.Exe[:])
	copyChars(x.Args[:], r.Args[:])
}

// taskRef names the anonymous struct bpf2go generates for struct task_ref
// (task, parent and previous); the conversion fails to compile if they differ.
type taskRef struct {
	_       structs.HostLayout
	StartNs uint64
	PidNs   uint64
	Tgid    uint32
	NsPid   uint32
	NsLevel uint32
	Flags   uint32
	Comm    [16]int8
}

func decodeTask(t *event.Task, r taskRef) {
	t.PID, t.NSPid, t.NSLevel, t.PidNS = r.Tgid, r.NsPid, r.NsLevel, r.PidNs
	t.Start, t.Flags = r.StartNs, event.TaskFlags(r.Flags)
	copyChars(t.Comm[:], r.Comm[:])
}

func copyChars(dst []byte, src []int8) {
	copy(dst, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(src))), len(src)))
}
