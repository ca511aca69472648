//! BPF map keys and values, and the names the maps are pinned under.
//!
//! Rules for every type here (the kernel/user ABI):
//! `#[repr(C)]`, fixed-width integers and byte arrays only, explicit `_pad` fields,
//! no `bool`/`Option`/`usize`, and a compile-time size assertion.

use crate::packet::PacketClass;

/// Name of the layout marker: an array that holds nothing, whose size is [`LAYOUT`] —
/// so the kernel itself reports, for a pinned datapath, which layout its maps have
/// (absent: layout 1, before the marker existed). See `netpath::datapath::layout`.
pub const LAYOUT_MAP: &str = "NETPATH_LAYOUT";
/// The layout of this build's maps; bumped when any map's keys, values or meaning change
/// (and the change recorded in `netpath::datapath::layout::CHANGES`).
pub const LAYOUT: u32 = 2;

/// Name of the per-CPU statistics array (also its pin file name).
pub const STATS_MAP: &str = "NETPATH_STATS";

/// Name of the endpoint map: endpoint IPv4 address → [`EndpointValue`].
pub const ENDPOINTS_MAP: &str = "NETPATH_ENDPOINTS";
/// Capacity of the endpoint map (endpoints per host).
pub const MAX_ENDPOINTS: u32 = 65_536;

/// Key of the endpoint map: the endpoint's IPv4 address in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub ip: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 4);

/// Endpoint kinds, as stored in [`EndpointValue::kind`].
pub const ENDPOINT_KIND_VETH: u8 = 1;
pub const ENDPOINT_KIND_TAP: u8 = 2;

/// The endpoint has had ports published: its packets may be replies of hairpinned
/// connections, which the endpoint program looks up in the connection-tracking map. For
/// any other endpoint's packets to another endpoint the program skips that work (about
/// a quarter of its cost per packet). Set before the first publish reaches the datapath,
/// never cleared while the endpoint lives (a stale flag only costs the lookup).
pub const ENDPOINT_FLAG_PUBLISHED: u8 = 1;

/// Name of the interface map: host-side ifindex → [`EndpointValue`] of the endpoint
/// behind that device. Packets arriving on a device not in this map are not from an
/// endpoint (e.g. the bridge itself) and are left to the kernel.
pub const IFACES_MAP: &str = "NETPATH_IFACES";
/// Name of the per-endpoint counter map: host-side ifindex → [`EndpointCounters`].
pub const EP_STATS_MAP: &str = "NETPATH_EP_STATS";
/// Name of the drop counter array, indexed by [`DropReason`].
pub const DROPS_MAP: &str = "NETPATH_DROPS";
/// Name of the per-CPU counter array of the fast path's forwards, by [`Forward`].
pub const FORWARDS_MAP: &str = "NETPATH_FORWARDS";

/// What the datapath knows about a local endpoint (a container veth or a microVM TAP).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointValue {
    /// The endpoint's IPv4 address (network order).
    pub ip: [u8; 4],
    /// ifindex of the host-side device (veth host end, or the TAP).
    pub ifindex: u32,
    /// MAC of the endpoint's own interface (in the container or guest).
    pub mac: [u8; 6],
    /// MAC of the host-side device, i.e. the gateway MAC the endpoint talks to.
    pub host_mac: [u8; 6],
    /// Network the endpoint belongs to (isolation: no fast path across networks).
    pub network_id: u16,
    /// [`ENDPOINT_KIND_VETH`] or [`ENDPOINT_KIND_TAP`].
    pub kind: u8,
    /// `ENDPOINT_FLAG_*` bits.
    pub flags: u8,
}
const _: () = assert!(core::mem::size_of::<EndpointValue>() == 24);

/// Per-endpoint traffic, from the endpoint's point of view: `tx` is what it sent (seen
/// on its host-side device's ingress), `rx` what the fast path delivered to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}
const _: () = assert!(core::mem::size_of::<EndpointCounters>() == 32);

impl EndpointCounters {
    /// Sums per-CPU values.
    pub fn sum<'a>(values: impl IntoIterator<Item = &'a EndpointCounters>) -> Self {
        values
            .into_iter()
            .fold(Self::default(), |a, c| EndpointCounters {
                tx_packets: a.tx_packets.wrapping_add(c.tx_packets),
                tx_bytes: a.tx_bytes.wrapping_add(c.tx_bytes),
                rx_packets: a.rx_packets.wrapping_add(c.rx_packets),
                rx_bytes: a.rx_bytes.wrapping_add(c.rx_bytes),
            })
    }
}

counter_slots! {
    /// Which way the fast path handed a packet on, past the kernel's path; also the slot
    /// in the forward counter array.
    pub enum Forward {
        /// From an endpoint straight into another (same network, or a hairpin).
        EndpointToEndpoint => "endpoint_to_endpoint",
        /// From an uplink, translated, straight into its endpoint.
        UplinkToEndpoint => "uplink_to_endpoint",
        /// From an endpoint straight out of an uplink, past the host's IP stack.
        EndpointToUplink => "endpoint_to_uplink",
    }
}

counter_slots! {
    /// Why the datapath dropped a packet; also the slot in the drop counter array.
    pub enum DropReason {
        /// IPv4 source address is not the sending endpoint's.
        SpoofedIp => "spoofed_ip",
        /// Ethernet source address is not the sending endpoint's.
        SpoofedMac => "spoofed_mac",
        /// ARP sender IP or MAC is not the sending endpoint's.
        SpoofedArp => "spoofed_arp",
        /// Destination is an endpoint of another network (isolation).
        OtherNetwork => "other_network",
        /// Rewriting or redirecting the packet failed.
        RedirectFailed => "redirect_failed",
        /// A NAT rewrite of the packet (a store or checksum helper) failed. (Before
        /// layout 2 this slot counted every NAT failure; see `datapath::layout`.)
        NatRewriteFailed => "nat_rewrite_failed",
        /// Masquerade found no free port: every port it tried is held by a live
        /// connection to the same destination. Widen the uplink's port range or spread
        /// the traffic over more destinations or uplink addresses.
        NatPortsExhausted => "nat_ports_exhausted",
        /// A NAT state map refused a new entry (no free LRU node, or out of memory).
        NatMapFull => "nat_map_full",
    }
}

impl DropReason {
    /// A forged source (IP, MAC or ARP sender): such packets never reach the NAT.
    pub const fn is_spoofing(self) -> bool {
        matches!(
            self,
            DropReason::SpoofedIp | DropReason::SpoofedMac | DropReason::SpoofedArp
        )
    }
}

// SAFETY: both are `repr(C)`, made only of integers and byte arrays, with every padding
// byte an explicit field, so any bit pattern is valid: what `aya::Pod` requires.
#[cfg(feature = "user")]
unsafe impl aya::Pod for EndpointKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for EndpointValue {}
// SAFETY: `repr(C)`, four `u64`s, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for EndpointCounters {}

/// Where a program runs; selects a block of [`StatIndex`] slots in the stats map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// XDP program (driver or generic mode).
    Xdp = 0,
    /// tc (tcx) ingress classifier on endpoints' host-side devices and bridges.
    TcIngress = 1,
    /// tc (tcx) egress on an uplink: egress masquerade (SNAT).
    UplinkEgress = 2,
    /// tc (tcx) ingress on an uplink: replies to masqueraded connections (reverse SNAT).
    UplinkIngress = 3,
}

impl Hook {
    pub const ALL: [Hook; 4] = [
        Hook::Xdp,
        Hook::TcIngress,
        Hook::UplinkEgress,
        Hook::UplinkIngress,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::TcIngress => "tc_ingress",
            Hook::UplinkEgress => "uplink_egress",
            Hook::UplinkIngress => "uplink_ingress",
        }
    }
}

/// Number of slots in the stats map: one per (hook, packet class).
pub const STATS_ENTRIES: u32 = Hook::ALL.len() as u32 * PacketClass::COUNT;

/// Index into the stats map for a packet of `class` seen at `hook`.
#[inline(always)]
pub const fn stat_index(hook: Hook, class: PacketClass) -> u32 {
    hook as u32 * PacketClass::COUNT + class as u32
}

/// One per-CPU counter slot: packets and bytes (whole frame length).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

impl Counter {
    /// Sums per-CPU values (userspace reads one value per possible CPU).
    pub fn sum<'a>(values: impl IntoIterator<Item = &'a Counter>) -> Counter {
        values
            .into_iter()
            .fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets.wrapping_add(c.packets),
                bytes: acc.bytes.wrapping_add(c.bytes),
            })
    }
}

// SAFETY: `Counter` is `repr(C)`, made of `u64`s only, has no padding and every bit
// pattern is a valid value, which is what `aya::Pod` requires.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Counter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_indices_are_dense_and_unique() {
        let mut seen = [false; STATS_ENTRIES as usize];
        for hook in Hook::ALL {
            for class in PacketClass::ALL {
                let i = stat_index(hook, class) as usize;
                assert!(!seen[i], "duplicate index {i}");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn counter_sum_adds_every_cpu() {
        let v = [
            Counter {
                packets: 1,
                bytes: 60,
            },
            Counter {
                packets: 2,
                bytes: 100,
            },
        ];
        assert_eq!(
            Counter::sum(&v),
            Counter {
                packets: 3,
                bytes: 160
            }
        );
    }
}
