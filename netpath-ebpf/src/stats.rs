//! Per-CPU packet/byte counters by (hook, packet class).

use aya_ebpf::{macros::map, maps::PerCpuArray};
use netpath_common::{
    maps::{Counter, Hook, STATS_ENTRIES, stat_index},
    packet::PacketClass,
};

#[map(name = "NETPATH_STATS")]
static NETPATH_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STATS_ENTRIES, 0);

#[inline(always)]
pub fn count(hook: Hook, class: PacketClass, bytes: u64) {
    if let Some(slot) = NETPATH_STATS.get_ptr_mut(stat_index(hook, class)) {
        // SAFETY: per-CPU slot owned by this CPU for the program's run (no preemption
        // inside a BPF program), so a plain read-modify-write cannot race.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += bytes;
        }
    }
}
