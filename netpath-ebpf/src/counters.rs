//! The programs' counters: packets by (hook, class), forwards by way, drops by (hook,
//! reason), and each endpoint's traffic. All per-CPU: a program owns its CPU's slot while
//! it runs (no preemption inside a BPF program), so a plain read-modify-write cannot race.

use aya_ebpf::maps::PerCpuArray;
use netpath_common::{
    maps::{Counter, DropReason, EndpointCounters, Forward, Hook, drop_index, stat_index},
    packet::PacketClass,
};

use crate::maps::{NETPATH_DROPS, NETPATH_EP_STATS, NETPATH_FORWARDS, NETPATH_STATS};

#[inline(always)]
fn count(map: &PerCpuArray<Counter>, slot: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot, no concurrent writer while this program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

/// A packet of `class` seen at `hook`.
#[inline(always)]
pub fn count_class(hook: Hook, class: PacketClass, bytes: u64) {
    count(&NETPATH_STATS, stat_index(hook, class), bytes);
}

/// A packet dropped at `hook` for `reason` (also remembered for the drop's event).
#[inline(always)]
pub fn count_drop(hook: Hook, reason: DropReason, bytes: u64) {
    let at = drop_index(hook, reason);
    count(&NETPATH_DROPS, at, bytes);
    crate::events::remember_drop(at);
}

#[inline(always)]
pub fn count_forward(way: Forward, bytes: u64) {
    count(&NETPATH_FORWARDS, way as u32, bytes);
}

/// The traffic counters of the endpoint behind host-side device `ifindex`, updated by
/// `add` (nothing if the control plane made no entry for it).
#[inline(always)]
fn count_endpoint(ifindex: u32, add: impl FnOnce(&mut EndpointCounters)) {
    if let Some(c) = NETPATH_EP_STATS.get_ptr_mut(ifindex) {
        // SAFETY: this CPU's value, valid for this run, no concurrent writer while this
        // program runs: the only reference to it.
        add(unsafe { &mut *c });
    }
}

/// A packet the endpoint behind host-side device `ifindex` sent.
#[inline(always)]
pub fn count_tx(ifindex: u32, bytes: u64) {
    count_endpoint(ifindex, |c| {
        c.tx_packets += 1;
        c.tx_bytes += bytes;
    });
}

/// A packet delivered to the endpoint behind host-side device `ifindex`.
#[inline(always)]
pub fn count_rx(ifindex: u32, bytes: u64) {
    count_endpoint(ifindex, |c| {
        c.rx_packets += 1;
        c.rx_bytes += bytes;
    });
}
