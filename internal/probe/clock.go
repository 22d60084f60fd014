package probe

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Clock turns the kernel's CLOCK_BOOTTIME stamps (bpf_ktime_get_boot_ns,
// task start_boottime) into wall-clock time. The offset is taken once: a
// later settimeofday shifts reported times by the same amount.
type Clock struct {
	offset int64 // realtime - boottime, ns
}

// NewClock samples both clocks.
func NewClock() (Clock, error) {
	var boot, real unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return Clock{}, fmt.Errorf("reading CLOCK_BOOTTIME: %w", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &real); err != nil {
		return Clock{}, fmt.Errorf("reading CLOCK_REALTIME: %w", err)
	}
	return Clock{offset: real.Nano() - boot.Nano()}, nil
}

// Wall converts a boot-clock timestamp in ns.
func (c Clock) Wall(bootNS uint64) time.Time { return time.Unix(0, int64(bootNS)+c.offset) }

// BootNow is the current boot-clock time in ns.
func (c Clock) BootNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) // cannot fail once NewClock succeeded
	return uint64(ts.Nano())
}
