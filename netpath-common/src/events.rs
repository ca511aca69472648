//! Events the datapath reports as they happen, for `netpath monitor`: every drop, and
//! forwards sampled at a rate the daemon sets while someone watches. The programs write
//! [`Event`]s into a BPF ring buffer ([`EVENTS_MAP`]) and never wait for it: an event the
//! ring has no room for is counted in [`EVENTS_LOST_MAP`] (per CPU) and forgotten, so a
//! slow reader never slows the datapath. [`MONITOR_MAP`] says what to report; all off
//! (nobody watching), the programs pay one array lookup per packet.

/// The ring buffer of [`Event`]s.
pub const EVENTS_MAP: &str = "NETPATH_EVENTS";
/// Events the ring could not take, per CPU (slot 0).
pub const EVENTS_LOST_MAP: &str = "NETPATH_EVENTS_LOST";
/// What to report: slot 0, a [`MonitorConfig`].
pub const MONITOR_MAP: &str = "NETPATH_MONITOR";
/// This CPU's last drop ([`last_drop`]), for the event the program's end reports.
pub const LAST_DROP_MAP: &str = "NETPATH_LAST_DROP";

/// Bytes of the ring: about 14,500 events (each 64 bytes and the ring's 8-byte header).
pub const EVENTS_BYTES: u32 = 1 << 20;

/// Data in the ring (bytes) from which an event wakes the reader. Below it, events go in
/// without a wakeup and the daemon collects them every [`POLL_MS`]: a wakeup is an
/// `irq_work` — a self-IPI, on a virtual machine an exit — that cost 10 µs and more per
/// event when each one woke the reader (tracing at 1 in 100 added ~110 ns to every
/// packet's run time; bench `cost`).
pub const WAKEUP_BYTES: u64 = EVENTS_BYTES as u64 / 4;
/// How often the daemon drains the ring while someone watches, in milliseconds: the
/// longest an event waits below [`WAKEUP_BYTES`].
pub const POLL_MS: u64 = 100;

/// An [`Event`] of a dropped packet: `code` is its `DropReason`.
pub const EVENT_DROP: u8 = 1;
/// An [`Event`] of a packet the fast path forwarded (sampled): `code` is its tc action.
pub const EVENT_TRACE: u8 = 2;

map_type! {
    /// What the programs report (`NETPATH_MONITOR` slot 0).
    pub struct MonitorConfig: 8 bytes {
        /// Non-zero: every drop.
        pub drops: u32,
        /// One forwarded packet in `trace_every` (1: each; 0: none).
        pub trace_every: u32,
    }
}

map_type! {
    /// One event in the ring: when, where, what, and the packet's addresses as they were
    /// when it happened (IPv4 in the first 4 bytes; ports 0 but for TCP/UDP, whose
    /// ports they are, and ICMP echo, whose identifier both are).
    pub struct Event: 64 bytes {
        /// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns`).
        pub ts_ns: u64,
        /// The device the program ran on.
        pub ifindex: u32,
        /// The frame's length.
        pub len: u32,
        pub src: [u8; 16],
        pub dst: [u8; 16],
        pub sport: u16,
        pub dport: u16,
        /// `EVENT_*`.
        pub kind: u8,
        /// The `Hook`.
        pub hook: u8,
        /// A drop's `DropReason`; a trace's tc action.
        pub code: u8,
        /// 4, 6, or 0 (not IP).
        pub family: u8,
        /// `IPPROTO_*` (0 if not IP).
        pub proto: u8,
        pub _pad: [u8; 7],
    }
}

/// The value of `LAST_DROP_MAP` for a drop at slot `drop_index` of the drop counters
/// (0 stands for none).
pub const fn last_drop(drop_index: u32) -> u32 {
    drop_index + 1
}

/// The drop-counter slot a `LAST_DROP_MAP` value stands for, if any.
pub const fn drop_of(last: u32) -> Option<u32> {
    last.checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{DropReason, Hook, drop_index};

    #[test]
    fn the_last_drop_round_trips_and_zero_is_none() {
        let at = drop_index(Hook::UplinkIngress, DropReason::SpoofedIp);
        assert_eq!(drop_of(last_drop(at)), Some(at));
        assert_eq!(drop_of(last_drop(0)), Some(0));
        assert_eq!(drop_of(0), None);
    }
}
