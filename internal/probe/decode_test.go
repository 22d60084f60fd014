package probe

import (
	"testing"
	"unsafe"

	"github.com/orphanwatch/orphanwatch/internal/event"
)

func recordBytes(r *lifecycleEvent) []byte {
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(r)), RecordSize)...)
}

func chars(dst []int8, s string) {
	for i := range len(s) {
		dst[i] = int8(s[i])
	}
}

func TestDecodeRecord(t *testing.T) {
	var r lifecycleEvent
	r.TimeNs = 5_000_000_000
	r.Kind = uint32(lifecycleEventKindEVENT_EXIT)
	r.Flags = uint32(lifecycleEventFlagEVENT_HAS_BIRTH | lifecycleEventFlagEVENT_ADOPTED)
	r.ExitStatus = 13
	r.Task.Tgid, r.Task.NsPid, r.Task.NsLevel, r.Task.StartNs = 8911, 9, 1, 4_000_000_000
	chars(r.Task.Comm[:], "psql")
	r.Parent.Tgid, r.Parent.NsPid, r.Parent.Flags = 8900, 1, uint32(lifecycleTaskFlagTASK_NS_REAPER|lifecycleTaskFlagTASK_WATCHED)
	chars(r.Parent.Comm[:], "postgres")
	chars(r.Cgroup.Name[:], "docker-abc.scope")
	r.Oom.AnonRssPages = 10
	r.Birth.Fork.Flags = uint32(lifecycleBirthFlagBIRTH_FORKED | lifecycleBirthFlagBIRTH_EXECED)
	r.Birth.Fork.Ancestry[0].Tgid = 8910
	chars(r.Birth.Fork.Ancestry[0].Comm[:], "sh")
	chars(r.Birth.Exec.Args[:], "psql\x00-c\x00select 1")
	r.Birth.Exec.ArgsLen = 18
	chars(r.Birth.Exec.Exe[:], "/usr/bin/psql")

	var ev event.Event
	if err := Decode(recordBytes(&r), 4096, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Kind != event.KindExit || ev.Status.Signal() != 13 || ev.Flags&event.Adopted == 0 {
		t.Errorf("header = %v %v %#x", ev.Kind, ev.Status, ev.Flags)
	}
	if ev.Task.PID != 8911 || ev.Task.NSPid != 9 || !ev.Task.Comm.Is("psql") || ev.Task.Key().StartTicks != 400 {
		t.Errorf("task = %+v", ev.Task)
	}
	if ev.Parent.Flags != event.TaskNSReaper|event.TaskWatched || !ev.Parent.Comm.Is("postgres") {
		t.Errorf("parent = %+v", ev.Parent)
	}
	if got := ev.Birth.Argv(); len(got) != 3 || got[2] != "select 1" || ev.Birth.ExePath() != "/usr/bin/psql" || ev.Birth.Ancestry[0].PID != 8910 {
		t.Errorf("birth = %q %q %+v", ev.Birth.ExePath(), got, ev.Birth.Ancestry[0])
	}
	if ev.OOM.AnonRSSBytes != 40960 {
		t.Errorf("rss = %d bytes, want pages * page size", ev.OOM.AnonRSSBytes)
	}
}

func TestDecodeRejectsMalformedRecords(t *testing.T) {
	var ev event.Event
	var r lifecycleEvent
	r.Kind = 99
	var wide lifecycleEvent
	wide.Kind = 257 // would be KindExit as a byte
	for name, raw := range map[string][]byte{
		"empty":        nil,
		"short":        make([]byte, RecordSize-8),
		"long":         make([]byte, RecordSize+8),
		"unknown kind": recordBytes(&r),
		"zero kind":    make([]byte, RecordSize),
		"kind 257":     recordBytes(&wide),
	} {
		if err := Decode(raw, 4096, &ev); err == nil {
			t.Errorf("%s record decoded without error", name)
		}
	}
}

// The Go mirrors of bpf/events.h's enums must match what bpf2go read from
// the object's BTF.
func TestFlagsMatchTheBPFHeader(t *testing.T) {
	pairs := []struct {
		name      string
		go_, bpf_ uint32
	}{
		{"exit", uint32(event.KindExit), uint32(lifecycleEventKindEVENT_EXIT)},
		{"adoption", uint32(event.KindAdoption), uint32(lifecycleEventKindEVENT_ADOPTION)},
		{"exec", uint32(event.KindExec), uint32(lifecycleEventKindEVENT_EXEC)},
		{"signal", uint32(event.KindSignal), uint32(lifecycleEventKindEVENT_SIGNAL)},
		{"oom", uint32(event.KindOOM), uint32(lifecycleEventKindEVENT_OOM)},
		{"ns reaper", uint32(event.TaskNSReaper), uint32(lifecycleTaskFlagTASK_NS_REAPER)},
		{"subreaper", uint32(event.TaskSubreaper), uint32(lifecycleTaskFlagTASK_SUBREAPER)},
		{"watched", uint32(event.TaskWatched), uint32(lifecycleTaskFlagTASK_WATCHED)},
		{"zombie", uint32(event.TaskZombie), uint32(lifecycleTaskFlagTASK_ZOMBIE)},
		{"has birth", uint32(event.HasBirth), uint32(lifecycleEventFlagEVENT_HAS_BIRTH)},
		{"has signal", uint32(event.HasSignal), uint32(lifecycleEventFlagEVENT_HAS_SIGNAL)},
		{"adopted", uint32(event.Adopted), uint32(lifecycleEventFlagEVENT_ADOPTED)},
		{"reaper guessed", uint32(event.ReaperGuessed), uint32(lifecycleEventFlagEVENT_REAPER_GUESSED)},
		{"cgroup v1", uint32(event.CgroupV1), uint32(lifecycleEventFlagEVENT_CGROUP_V1)},
		{"reaped earlier", uint32(event.ReapedEarlier), uint32(lifecycleEventFlagEVENT_REAPED_EARLIER)},
		{"forked", uint32(event.BirthForked), uint32(lifecycleBirthFlagBIRTH_FORKED)},
		{"execed", uint32(event.BirthExeced), uint32(lifecycleBirthFlagBIRTH_EXECED)},
		{"walked", uint32(event.BirthWalked), uint32(lifecycleBirthFlagBIRTH_WALKED)},
		{"from kernel", uint32(event.SignalFromKernel), uint32(lifecycleSignalFlagSIGNAL_FROM_KERNEL)},
		{"from self", uint32(event.SignalFromSelf), uint32(lifecycleSignalFlagSIGNAL_FROM_SELF)},
		{"default action", uint32(event.SignalDefaultAction), uint32(lifecycleSignalFlagSIGNAL_DEFAULT_ACTION)},
		{"no info", uint32(event.SignalNoInfo), uint32(lifecycleSignalFlagSIGNAL_NO_INFO)},
		{"to child", uint32(event.SignalToChild), uint32(lifecycleSignalFlagSIGNAL_TO_CHILD)},
		{"memcg", uint32(event.OOMMemcg), uint32(lifecycleOomFlagOOM_MEMCG)},
	}
	for _, p := range pairs {
		if p.go_ != p.bpf_ {
			t.Errorf("%s: Go %d, BPF %d", p.name, p.go_, p.bpf_)
		}
	}
	if len(event.Birth{}.Args) != len(lifecycleExecRecord{}.Args) || len(event.Birth{}.Exe) != len(lifecycleExecRecord{}.Exe) ||
		len(event.Cgroup{}.Name) != len(lifecycleEvent{}.Cgroup.Name) || len(event.Cgroup{}.Parent) != len(lifecycleEvent{}.Cgroup.Parent) {
		t.Error("array sizes differ between bpf/events.h and package event")
	}
}

func FuzzDecode(f *testing.F) {
	var r lifecycleEvent
	r.Kind = uint32(lifecycleEventKindEVENT_ADOPTION)
	r.Birth.Exec.ArgsLen = 65535
	f.Add(recordBytes(&r))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var ev event.Event
		if err := Decode(raw, 4096, &ev); err != nil {
			return
		}
		// Whatever decoded must be safe to report.
		_ = ev.Birth.Argv()
		_ = ev.Birth.ExePath()
		_ = ev.Task.Comm.String()
		_ = ev.Status.String()
	})
}

func BenchmarkDecode(b *testing.B) {
	var r lifecycleEvent
	r.Kind = uint32(lifecycleEventKindEVENT_EXIT)
	raw := recordBytes(&r)
	var ev event.Event
	b.ReportAllocs()
	for b.Loop() {
		if err := Decode(raw, 4096, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMalformedRecordsAreCountedAndSkipped(t *testing.T) {
	p := &Probe{pageSize: 4096}
	var good lifecycleEvent
	good.Kind = uint32(lifecycleEventKindEVENT_EXIT)
	handled := 0
	var ev event.Event
	for _, raw := range [][]byte{recordBytes(&good), {1, 2, 3}, make([]byte, RecordSize), recordBytes(&good)} {
		p.consume(raw, &ev, func(*event.Event) { handled++ })
	}
	if handled != 2 || p.Malformed() != 2 {
		t.Errorf("handled %d, malformed %d; want 2 and 2", handled, p.Malformed())
	}
}
