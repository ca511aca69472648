//! BPF map keys and values, and the names the maps are pinned under.
//!
//! Rules for every type here (the kernel/user ABI):
//! `#[repr(C)]`, fixed-width integers and byte arrays only, explicit `_pad` fields,
//! no `bool`/`Option`/`usize`, and a compile-time size assertion. Declared through
//! `map_type!`, which checks them all.

use crate::packet::PacketClass;

// The pin names of every map, in one place; the eBPF programs' map statics bear the same
// names, and `netpath::datapath::MAPS` lists them. `crate::nat` re-exports the NAT maps'.

/// Name of the layout marker: an array that holds nothing, whose size is [`LAYOUT`] —
/// so the kernel itself reports, for a pinned datapath, which layout its maps have
/// (absent: layout 1, before the marker existed). See `netpath::datapath::layout`.
pub const LAYOUT_MAP: &str = "NETPATH_LAYOUT";
/// Name of the per-CPU statistics array (also its pin file name).
pub const STATS_MAP: &str = "NETPATH_STATS";
/// Name of the endpoint map: endpoint IPv4 address → [`EndpointValue`].
pub const ENDPOINTS_MAP: &str = "NETPATH_ENDPOINTS";
/// Name of the IPv6 endpoint map: endpoint IPv6 address → [`EndpointValue`] (the same
/// value as under its IPv4 address; since layout 4). It also says which global IPv6
/// address is whose, for the guard's source check.
pub const ENDPOINTS6_MAP: &str = "NETPATH_ENDPOINTS6";
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
/// Host addresses (other than 127.0.0.0/8) whose connections to a port published on
/// 0.0.0.0 are rewritten by the socket hooks (value: unused).
pub const LOCAL_ADDRS_MAP: &str = "NETPATH_LOCAL_ADDRS";
/// Per-socket translations made by the socket hooks, for the reverse direction
/// (`getpeername`, UDP `recvmsg`).
pub const SOCK_NAT_MAP: &str = "NETPATH_SOCK_NAT";
/// One-slot array: the netns cookie of the host namespace, the only one whose sockets
/// the socket hooks translate (a cgroup's processes may sit in any namespace).
pub const HOST_NETNS_MAP: &str = "NETPATH_HOST_NETNS";
/// Masquerade state: an endpoint's connection (its original tuple) → the uplink address
/// and port it leaves with.
pub const SNAT_MAP: &str = "NETPATH_SNAT";
/// Masquerade state: a reply's tuple → the endpoint address and port it returns to.
pub const RNAT_MAP: &str = "NETPATH_RNAT";
/// Masquerade configuration: uplink ifindex → [`Uplink`](crate::nat::Uplink).
pub const UPLINKS_MAP: &str = "NETPATH_UPLINKS";
/// Masquerade configuration: the subnets whose traffic is masqueraded (value: network id).
pub const MASQ_SRC_MAP: &str = "NETPATH_MASQ_SRC";
/// Masquerade configuration: the destinations a network reaches unmasqueraded (keys:
/// [`no_masq_key`](crate::nat::no_masq_key)).
pub const NO_MASQ_MAP: &str = "NETPATH_NO_MASQ";
/// Activity of each masqueraded connection, keyed like `NETPATH_RNAT` (by the reply
/// tuple, the NAT port's owner): when a packet was last seen and how far TCP got. A
/// port whose connection went quiet long enough may be given to another connection.
pub const NAT_AGE_MAP: &str = "NETPATH_NAT_AGE";
/// NAT66, the IPv6 masquerade: the maps above for IPv6 ([`Tuple6`](crate::nat::Tuple6),
/// [`NatTarget6`](crate::nat::NatTarget6), [`Uplink6`](crate::nat::Uplink6), 16-byte
/// subnets, [`no_masq_key6`](crate::nat::no_masq_key6)). New maps (an older object has
/// none of them: a start creates them), so IPv4's keep their layout.
pub const SNAT6_MAP: &str = "NETPATH_SNAT6";
pub const RNAT6_MAP: &str = "NETPATH_RNAT6";
pub const UPLINKS6_MAP: &str = "NETPATH_UPLINKS6";
pub const MASQ_SRC6_MAP: &str = "NETPATH_MASQ_SRC6";
pub const NO_MASQ6_MAP: &str = "NETPATH_NO_MASQ6";
pub const NAT_AGE6_MAP: &str = "NETPATH_NAT_AGE6";
/// NAT66's per-CPU work space (no state between runs, never written by user space).
pub const NAT66_SCRATCH_MAP: &str = "NETPATH_NAT66_SCRATCH";
/// Name of the published-port map: [`PublishKey`](crate::nat::PublishKey) →
/// [`NatTarget`](crate::nat::NatTarget) (the endpoint).
pub const PUBLISH_MAP: &str = "NETPATH_PUBLISH";
/// Name of the published-port connection map: the endpoint-side tuple of a reply
/// (endpoint → client) → the host address and port the client connected to.
pub const DNAT_CT_MAP: &str = "NETPATH_DNAT_CT";
/// [`PUBLISH_MAP`] for IPv6: [`PublishKey6`](crate::nat::PublishKey6) →
/// [`NatTarget6`](crate::nat::NatTarget6) (the endpoint's IPv6 address). Optional: an
/// older object lacks it, and its datapath publishes on IPv4 only.
pub const PUBLISH6_MAP: &str = "NETPATH_PUBLISH6";
/// [`DNAT_CT_MAP`] for IPv6: [`Tuple6`](crate::nat::Tuple6) →
/// [`NatTarget6`](crate::nat::NatTarget6).
pub const DNAT_CT6_MAP: &str = "NETPATH_DNAT_CT6";
/// [`LOCAL_ADDRS_MAP`] for IPv6: the host's IPv6 addresses other than `::1` (value:
/// unused).
pub const LOCAL_ADDRS6_MAP: &str = "NETPATH_LOCAL_ADDRS6";
/// [`SOCK_NAT_MAP`] for native IPv6 sockets' translations:
/// [`SockNatKey6`](crate::nat::SockNatKey6) → [`NatTarget6`](crate::nat::NatTarget6).
pub const SOCK_NAT6_MAP: &str = "NETPATH_SOCK_NAT6";
/// Network policy ([`crate::policy`]): network id → [`NetworkValue`], for each network
/// whose policy needs more than its endpoints' flags say (an internal network: its
/// gateways). New in layout 8 (an older object has none: a start creates it).
pub const NETWORKS_MAP: &str = "NETPATH_NETWORKS";
/// Egress rules ([`crate::policy`]): an LPM trie over (network id, IPv4 destination),
/// keyed as the no-masquerade trie ([`egress_key`](crate::policy::egress_key)) → [`EGRESS_DENY`](crate::policy::EGRESS_DENY)
/// or [`EGRESS_ALLOW`](crate::policy::EGRESS_ALLOW); and the same for IPv6. New in layout 8.
pub const EGRESS_MAP: &str = "NETPATH_EGRESS";
pub const EGRESS6_MAP: &str = "NETPATH_EGRESS6";
/// Host access ([`crate::policy`]): the host ports a network with restricted host access
/// may still reach, [`HostAccessKey`] → 1. New in layout 8.
pub const HOST_ACCESS_MAP: &str = "NETPATH_HOST_ACCESS";
/// Fragment tracking ([`crate::frag`]): a datagram's identity as its fragments arrive
/// ([`FragKey`](crate::frag::FragKey)) → the addresses its later fragments get
/// ([`FragValue`](crate::frag::FragValue)); and the same for IPv6. New maps, the
/// programs' own (user space never writes them): an older object has none.
pub const FRAG_MAP: &str = "NETPATH_FRAG";
pub const FRAG6_MAP: &str = "NETPATH_FRAG6";
/// The fragment steps' per-CPU work space ([`FragWork`](crate::frag::FragWork)), never
/// written by user space.
pub const FRAG_WORK_MAP: &str = "NETPATH_FRAG_WORK";
pub const FRAG_WORK6_MAP: &str = "NETPATH_FRAG_WORK6";

/// The layout of this build's maps; bumped when any map's keys, values or meaning change
/// (and the change recorded in `netpath::datapath::layout::CHANGES`).
pub const LAYOUT: u32 = 8;

/// Capacity of the endpoint map (endpoints per host).
pub const MAX_ENDPOINTS: u32 = 65_536;

/// Capacity of the network policy map ([`NETWORKS_MAP`]).
pub const MAX_NETWORKS: u32 = 4096;

/// Capacity of each egress trie ([`EGRESS_MAP`], [`EGRESS6_MAP`]): rules of every network.
pub const MAX_EGRESS: u32 = 16_384;

/// Capacity of the host access map ([`HOST_ACCESS_MAP`]): allowed ports of every network.
pub const MAX_HOST_ACCESS: u32 = 16_384;

map_type! {
    /// Key of the host access map: a port a network's endpoints may reach on the host.
    #[derive(Hash, PartialOrd, Ord)]
    pub struct HostAccessKey: 8 bytes {
        pub network: u32,
        /// The port, in host byte order.
        pub port: u16,
        /// IPPROTO_TCP or IPPROTO_UDP.
        pub proto: u8,
        pub _pad: u8,
    }
}

map_type! {
    /// Key of the endpoint map: the endpoint's IPv4 address in network byte order.
    #[derive(Hash)]
    pub struct EndpointKey: 4 bytes {
        pub ip: [u8; 4],
    }
}

map_type! {
    /// Key of the IPv6 endpoint map: the endpoint's IPv6 address in network byte order.
    #[derive(Hash)]
    pub struct EndpointKey6: 16 bytes {
        pub ip: [u8; 16],
    }
}

/// Endpoint kinds, as stored in [`EndpointValue::kind`].
pub const ENDPOINT_KIND_VETH: u8 = 1;
pub const ENDPOINT_KIND_TAP: u8 = 2;

/// The endpoint has had ports published: its packets may be replies of hairpinned
/// connections, which the endpoint program looks up in the connection-tracking map. For
/// any other endpoint's packets to another endpoint the program skips that work (about
/// a quarter of its cost per packet). Set before the first publish reaches the datapath,
/// never cleared while the endpoint lives (a stale flag only costs the lookup).
pub const ENDPOINT_FLAG_PUBLISHED: u8 = 1;

/// The endpoint has an IPv6 address (its network is dual-stack): its IPv6 frames pass
/// the guard (`crate::ipv6::guard`) and take the fast path. Without the flag they are
/// dropped (`ipv6_not_enabled`): an endpoint of an IPv4-only network has no IPv6 to
/// speak, and its router advertisements or neighbour advertisements must not reach its
/// neighbours (CVE-2020-10749's class).
pub const ENDPOINT_FLAG_IPV6: u8 = 2;

/// The endpoint has no IPv4 address (its network is IPv6-only): its IPv4 frames are
/// dropped as `spoofed_ip` and its ARP as `spoofed_arp` (no IPv4 source, 0.0.0.0
/// included, is its own), and it is in no IPv4 map but the interface map, where its
/// `ip` is 0.0.0.0.
pub const ENDPOINT_FLAG_NO_IPV4: u8 = 4;

/// The endpoint's network is isolated (`--isolate`, Docker's `icc=false`): its endpoints
/// do not reach each other directly (`isolated`); a neighbour's published port through a
/// host address still answers (hairpin). See [`crate::policy`].
pub const ENDPOINT_FLAG_ISOLATED: u8 = 8;

/// The endpoint's network is internal (`--internal`): nothing it sends leaves the network
/// (`internal_network`): only its network's endpoints, its gateway ([`NetworkValue`]) and
/// link-scope addresses answer. See [`crate::policy`].
pub const ENDPOINT_FLAG_INTERNAL: u8 = 16;

/// The endpoint's network has egress rules (`--egress-deny`, `--egress-allow`): a
/// packet to no endpoint and no host address is looked up in the egress trie of its
/// family ([`EGRESS_MAP`], [`EGRESS6_MAP`]), and dropped (`egress_denied`) where the
/// longest matching rule denies it. See [`crate::policy`].
pub const ENDPOINT_FLAG_EGRESS: u8 = 32;

/// The endpoint's network restricts host access (`--host-access none|PORT,…`): a new
/// connection to one of the host's own addresses is refused (`host_access_denied`)
/// unless its port is one the network allows ([`HOST_ACCESS_MAP`]) or published (hairpin
/// comes first). See [`crate::policy`].
pub const ENDPOINT_FLAG_HOST: u8 = 64;

/// The flags a network's policy sets on each of its endpoints.
pub const POLICY_FLAGS: u8 =
    ENDPOINT_FLAG_ISOLATED | ENDPOINT_FLAG_INTERNAL | ENDPOINT_FLAG_EGRESS | ENDPOINT_FLAG_HOST;

map_type! {
    /// What the datapath knows about a local endpoint (a container veth or a microVM TAP).
    pub struct EndpointValue: 24 bytes {
        /// The endpoint's IPv4 address (network order); 0.0.0.0 with
        /// [`ENDPOINT_FLAG_NO_IPV4`].
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
}

/// A per-CPU counter value: a [`map_type!`] of `u64` fields, with `Default` and `sum`,
/// which adds the values userspace reads (one per possible CPU) field by field, wrapping
/// as the counters themselves do.
macro_rules! per_cpu_counters {
    (
        $(#[$meta:meta])*
        pub struct $name:ident: $size:literal bytes {
            $( pub $field:ident: u64 ),+ $(,)?
        }
    ) => {
        map_type! {
            $(#[$meta])*
            #[derive(Default)]
            pub struct $name: $size bytes {
                $( pub $field: u64, )+
            }
        }

        impl $name {
            /// Sums per-CPU values (userspace reads one value per possible CPU).
            pub fn sum<'a>(values: impl IntoIterator<Item = &'a $name>) -> $name {
                values.into_iter().fold($name::default(), |a, c| $name {
                    $( $field: a.$field.wrapping_add(c.$field), )+
                })
            }
        }
    };
}

map_type! {
    /// What the datapath knows about a network with a policy ([`NETWORKS_MAP`]): its
    /// gateways (the host's addresses on it; zero where it has none of that family).
    pub struct NetworkValue: 20 bytes {
        pub gateway: [u8; 4],
        pub gateway6: [u8; 16],
    }
}

per_cpu_counters! {
    /// Per-endpoint traffic, from the endpoint's point of view: `tx` is what it sent (seen
    /// on its host-side device's ingress), `rx` what the fast path delivered to it.
    pub struct EndpointCounters: 32 bytes {
        pub tx_packets: u64,
        pub tx_bytes: u64,
        pub rx_packets: u64,
        pub rx_bytes: u64,
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
        /// IPv4 or IPv6 source address is not the sending endpoint's.
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
        /// An IPv6 frame from an endpoint without IPv6 (of an IPv4-only network; see
        /// [`ENDPOINT_FLAG_IPV6`]). (Since layout 3.)
        Ipv6NotEnabled => "ipv6_not_enabled",
        // Since layout 4: the IPv6 guard (`crate::ipv6::guard`).
        /// A router advertisement or redirect from an endpoint.
        RouterMessage => "router_message",
        /// A neighbour advertisement for an address not the endpoint's own, or neighbour
        /// discovery naming a MAC not its own.
        SpoofedNd => "spoofed_nd",
        /// A DHCPv6 server's (or relay's) message from an endpoint.
        DhcpServer => "dhcpv6_server",
        /// An IPv6 packet from an endpoint that the guard cannot check: malformed, cut
        /// short, or an extension-header chain beyond the walk's bound.
        Ipv6Unparsed => "ipv6_unparsed",
        /// Since layout 5: a later fragment on a path the NAT translates on (to the
        /// uplink's address, from a masqueraded source) whose first fragment was not
        /// seen (see `crate::frag`), as Cilium's `DROP_FRAG_NOT_FOUND`.
        FragmentUnseen => "fragment_unseen",
        // Since layout 8: network policy (`crate::policy`).
        /// To another endpoint of an isolated network ([`ENDPOINT_FLAG_ISOLATED`]).
        Isolated => "isolated",
        /// From an internal network's endpoint to anything outside its network
        /// ([`ENDPOINT_FLAG_INTERNAL`]).
        Internal => "internal_network",
        /// To a destination the network's egress rules deny ([`ENDPOINT_FLAG_EGRESS`]).
        EgressDenied => "egress_denied",
        /// A new connection to a host address on a port the network's host access does
        /// not allow ([`ENDPOINT_FLAG_HOST`]).
        HostDenied => "host_access_denied",
    }
}

impl DropReason {
    /// A forged source (IP, MAC, ARP sender, neighbour discovery) or a message an
    /// endpoint may not send: such packets never reach the NAT.
    pub const fn is_spoofing(self) -> bool {
        matches!(
            self,
            DropReason::SpoofedIp
                | DropReason::SpoofedMac
                | DropReason::SpoofedArp
                | DropReason::SpoofedNd
                | DropReason::RouterMessage
                | DropReason::DhcpServer
                | DropReason::Ipv6Unparsed
                | DropReason::Ipv6NotEnabled
        )
    }

    /// A packet dropped for this reason never reaches the NAT (no hairpin translation
    /// may rescue it): a forgery, or one that would leave an internal network or go
    /// where egress rules deny. (A host address, where hairpin starts, is never subject
    /// to egress rules.)
    pub const fn bars_translation(self) -> bool {
        self.is_spoofing() || matches!(self, DropReason::Internal | DropReason::EgressDenied)
    }
}

/// Where a program runs; selects a block of slots in the stats map ([`stat_index`]).
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

/// Number of slots in the drops map: one per (hook, drop reason). (Before layout 6, one
/// per reason.)
pub const DROP_ENTRIES: u32 = Hook::ALL.len() as u32 * DropReason::COUNT;

/// Index into the drops map for a drop for `reason` at `hook`.
#[inline(always)]
pub const fn drop_index(hook: Hook, reason: DropReason) -> u32 {
    hook as u32 * DropReason::COUNT + reason as u32
}

per_cpu_counters! {
    /// One per-CPU counter slot: packets and bytes (whole frame length).
    pub struct Counter: 16 bytes {
        pub packets: u64,
        pub bytes: u64,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;

    use super::*;

    /// Every slot of an array of `len` is hit exactly once by `indices`.
    fn dense_and_unique(len: u32, indices: impl Iterator<Item = u32>) {
        let mut seen = vec![false; len as usize];
        for i in indices.map(|i| i as usize) {
            assert!(!seen[i], "duplicate index {i}");
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn stat_and_drop_indices_are_dense_and_unique() {
        let stats = Hook::ALL
            .iter()
            .flat_map(|h| PacketClass::ALL.iter().map(|c| stat_index(*h, *c)));
        dense_and_unique(STATS_ENTRIES, stats);
        let drops = Hook::ALL
            .iter()
            .flat_map(|h| DropReason::ALL.iter().map(|r| drop_index(*h, *r)));
        dense_and_unique(DROP_ENTRIES, drops);
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
