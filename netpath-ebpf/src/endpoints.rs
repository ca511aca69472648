//! Maps filled by the control plane: where each endpoint lives, which endpoint sits
//! behind each host-side device, and the per-endpoint and drop counters.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
};
use netpath_common::maps::{
    Counter, DropReason, EndpointCounters, EndpointKey, EndpointValue, Forward, MAX_ENDPOINTS,
};

/// Endpoint IPv4 → endpoint.
#[map(name = "NETPATH_ENDPOINTS")]
pub static NETPATH_ENDPOINTS: HashMap<EndpointKey, EndpointValue> =
    HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// Host-side ifindex → the endpoint behind that device.
#[map(name = "NETPATH_IFACES")]
pub static NETPATH_IFACES: HashMap<u32, EndpointValue> =
    HashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// Host-side ifindex → the endpoint's traffic counters. Entries are created by the
/// control plane; the programs only update existing ones.
#[map(name = "NETPATH_EP_STATS")]
pub static NETPATH_EP_STATS: PerCpuHashMap<u32, EndpointCounters> =
    PerCpuHashMap::with_max_entries(MAX_ENDPOINTS, 0);

/// Drops by reason.
#[map(name = "NETPATH_DROPS")]
pub static NETPATH_DROPS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(DropReason::COUNT, 0);

/// The fast path's forwards by [`Forward`].
#[map(name = "NETPATH_FORWARDS")]
pub static NETPATH_FORWARDS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(Forward::COUNT, 0);

#[inline(always)]
fn count(map: &PerCpuArray<Counter>, slot: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer while this program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_drop(reason: DropReason, bytes: u64) {
    count(&NETPATH_DROPS, reason as u32, bytes);
}

#[inline(always)]
pub fn count_forward(way: Forward, bytes: u64) {
    count(&NETPATH_FORWARDS, way as u32, bytes);
}

#[inline(always)]
pub fn count_tx(ifindex: u32, bytes: u64) {
    if let Some(c) = NETPATH_EP_STATS.get_ptr_mut(ifindex) {
        // SAFETY: per-CPU value, no concurrent writer while this program runs.
        unsafe {
            (*c).tx_packets += 1;
            (*c).tx_bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_rx(ifindex: u32, bytes: u64) {
    if let Some(c) = NETPATH_EP_STATS.get_ptr_mut(ifindex) {
        // SAFETY: per-CPU value, no concurrent writer while this program runs.
        unsafe {
            (*c).rx_packets += 1;
            (*c).rx_bytes += bytes;
        }
    }
}
