//! Every map of the datapath, in one place: what the control plane fills, the
//! programs' connection state, and the counters. Names are the pin names
//! (`netpath::datapath::MAPS` lists the same set, and a host test checks the built object
//! against it); sizes come from `netpath-common`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use netpath_common::{
    events::{EVENTS_BYTES, MonitorConfig},
    frag::{FRAG_ENTRIES, FragKey, FragKey6, FragValue, FragValue6, FragWork},
    maps::{
        Counter, DROP_ENTRIES, EndpointCounters, EndpointKey, EndpointKey6, EndpointValue, Forward,
        HostAccessKey, LAYOUT, MAX_EGRESS, MAX_ENDPOINTS, MAX_HOST_ACCESS, MAX_NETWORKS,
        NetworkValue, STATS_ENTRIES,
    },
    nat::{
        CtFront, CtFront6, MAX_LOCAL_ADDRS, MAX_NO_MASQ, MAX_PUBLISHED, NAT_ENTRIES, NatAge,
        NatTarget, NatTarget6, PublishKey, PublishKey6, SockNatKey, SockNatKey6, Tuple, Tuple6,
        Uplink, Uplink6,
    },
};

use crate::nat::Scratch;

/// Declares each `NAME: Kind<types>[max_entries];` as a `pub static NAME` map of that kind
/// with that many entries and no flags. `#[map]` without `name = …` exports a map under
/// its static's own name, so `NAME` is the pin name.
macro_rules! maps {
    ($( $(#[$doc:meta])* $name:ident: $kind:ident<$($t:ty),+>[$max:expr]; )+) => {
        $(
            $(#[$doc])*
            #[map]
            pub static $name: $kind<$($t),+> = $kind::with_max_entries($max, 0);
        )+
    };
}

maps! {
    /// The layout marker: never read or written; its size is this build's [`LAYOUT`].
    NETPATH_LAYOUT: Array<u8>[LAYOUT];

    // Endpoints and counters.

    /// Endpoint IPv4 → endpoint.
    NETPATH_ENDPOINTS: HashMap<EndpointKey, EndpointValue>[MAX_ENDPOINTS];
    /// Endpoint IPv6 → endpoint (dual-stack endpoints).
    NETPATH_ENDPOINTS6: HashMap<EndpointKey6, EndpointValue>[MAX_ENDPOINTS];
    /// Host-side ifindex → the endpoint behind that device.
    NETPATH_IFACES: HashMap<u32, EndpointValue>[MAX_ENDPOINTS];
    /// Host-side ifindex → the endpoint's traffic counters. Entries are created by the
    /// control plane; the programs only update existing ones.
    NETPATH_EP_STATS: PerCpuHashMap<u32, EndpointCounters>[MAX_ENDPOINTS];
    /// Network id → its gateways, for each internal network (`netpath_common::policy`).
    NETPATH_NETWORKS: HashMap<u32, NetworkValue>[MAX_NETWORKS];
    /// Egress rules: (network id, IPv4 destination) → deny or allow
    /// (`netpath_common::policy::egress_key`).
    NETPATH_EGRESS: LpmTrie<[u8; 8], u8>[MAX_EGRESS];
    /// Egress rules for IPv6 destinations (`egress_key6`).
    NETPATH_EGRESS6: LpmTrie<[u8; 20], u8>[MAX_EGRESS];
    /// The host ports a network with restricted host access may reach (value unused).
    NETPATH_HOST_ACCESS: HashMap<HostAccessKey, u8>[MAX_HOST_ACCESS];
    /// Drops by (hook, reason): `netpath_common::maps::drop_index`.
    NETPATH_DROPS: PerCpuArray<Counter>[DROP_ENTRIES];
    /// The fast path's forwards by [`Forward`].
    NETPATH_FORWARDS: PerCpuArray<Counter>[Forward::COUNT];
    /// Packets by (hook, class): `netpath_common::maps::stat_index`.
    NETPATH_STATS: PerCpuArray<Counter>[STATS_ENTRIES];

    // Host-local access (socket hooks).

    /// The host's own addresses outside 127.0.0.0/8 (kept by the control plane).
    NETPATH_LOCAL_ADDRS: HashMap<[u8; 4], u8>[MAX_LOCAL_ADDRS];
    /// (socket, endpoint address/port) → the published address/port it stands for.
    NETPATH_SOCK_NAT: LruHashMap<SockNatKey, NatTarget>[NAT_ENTRIES];
    /// The host's own IPv6 addresses other than `::1` (kept by the control plane).
    NETPATH_LOCAL_ADDRS6: HashMap<[u8; 16], u8>[MAX_LOCAL_ADDRS];
    /// `NETPATH_SOCK_NAT` for native IPv6 sockets and endpoint addresses.
    NETPATH_SOCK_NAT6: LruHashMap<SockNatKey6, NatTarget6>[NAT_ENTRIES];
    /// Slot 0: the host namespace's netns cookie (0 until the control plane sets it, which
    /// matches no namespace).
    NETPATH_HOST_NETNS: Array<u64>[1];

    // NAT: masquerade, published ports, hairpin.

    /// Masquerade: original tuple → the uplink address and port it leaves with.
    NETPATH_SNAT: LruHashMap<Tuple, NatTarget>[NAT_ENTRIES];
    /// Masquerade: reply tuple → the endpoint address and port it returns to.
    NETPATH_RNAT: LruHashMap<Tuple, NatTarget>[NAT_ENTRIES];
    /// Reply tuple → when the connection was last active and how far TCP got (see
    /// `netpath_common::nat::NatAge`): lets `allocate` take back the ports of dead
    /// connections, which the LRU maps alone would keep until 262,144 entries pushed them out.
    NETPATH_NAT_AGE: LruHashMap<Tuple, NatAge>[NAT_ENTRIES];
    /// Uplink ifindex → its address and port range.
    NETPATH_UPLINKS: HashMap<u32, Uplink>[256];
    /// Subnets whose traffic is masqueraded (value: network id).
    NETPATH_MASQ_SRC: LpmTrie<[u8; 4], u32>[4096];
    /// Destinations a network's traffic reaches unmasqueraded (`--no-masquerade`), keyed by
    /// `no_masq_key(network id, destination)`; the value is unused.
    NETPATH_NO_MASQ: LpmTrie<[u8; 8], u8>[MAX_NO_MASQ];
    /// Published ports: (protocol, host address or 0.0.0.0, port) → endpoint address/port.
    NETPATH_PUBLISH: HashMap<PublishKey, NatTarget>[MAX_PUBLISHED];
    /// Connections to published ports, keyed by the endpoint-side tuple of their replies:
    /// the front their replies leave with, and their clock and state.
    NETPATH_DNAT_CT: LruHashMap<Tuple, CtFront>[NAT_ENTRIES];

    // NAT66: the masquerade maps for IPv6 (configuration, its work space, its state).

    /// Uplink ifindex → its global IPv6 address and port range.
    NETPATH_UPLINKS6: HashMap<u32, Uplink6>[256];
    /// IPv6 subnets whose traffic is masqueraded (value: network id).
    NETPATH_MASQ_SRC6: LpmTrie<[u8; 16], u32>[4096];
    /// IPv6 destinations a network reaches unmasqueraded, keyed by `no_masq_key6`.
    NETPATH_NO_MASQ6: LpmTrie<[u8; 20], u8>[MAX_NO_MASQ];
    /// NAT66's per-CPU work space (see `nat::family::Scratch`); no state between runs.
    NETPATH_NAT66_SCRATCH: PerCpuArray<Scratch<[u8; 16]>>[1];
    /// Original IPv6 tuple → the uplink's IPv6 address and the port it leaves with.
    NETPATH_SNAT6: LruHashMap<Tuple6, NatTarget6>[NAT_ENTRIES];
    /// IPv6 reply tuple → the endpoint address and port it returns to.
    NETPATH_RNAT6: LruHashMap<Tuple6, NatTarget6>[NAT_ENTRIES];
    /// IPv6 reply tuple → last seen and state, as `NETPATH_NAT_AGE`.
    NETPATH_NAT_AGE6: LruHashMap<Tuple6, NatAge>[NAT_ENTRIES];
    /// Published ports over IPv6: (protocol, host IPv6 address or `::`, port) → the
    /// endpoint's IPv6 address and port.
    NETPATH_PUBLISH6: HashMap<PublishKey6, NatTarget6>[MAX_PUBLISHED];
    /// Connections to IPv6 published ports, keyed by the endpoint-side tuple of their
    /// replies.
    NETPATH_DNAT_CT6: LruHashMap<Tuple6, CtFront6>[NAT_ENTRIES];

    // Fragment tracking (`nat::frag`).

    /// A datagram being fragmented through an uplink (its first fragment's source,
    /// destination, identification and protocol, before translation) → the addresses its
    /// later fragments get.
    NETPATH_FRAG: LruHashMap<FragKey, FragValue>[FRAG_ENTRIES];
    /// `NETPATH_FRAG` for IPv6.
    NETPATH_FRAG6: LruHashMap<FragKey6, FragValue6>[FRAG_ENTRIES];
    /// Per-CPU work space of the fragment steps (see `nat::frag`); no state between runs.
    NETPATH_FRAG_WORK: PerCpuArray<FragWork<[u8; 4]>>[1];
    NETPATH_FRAG_WORK6: PerCpuArray<FragWork<[u8; 16]>>[1];

    // Events (`events`).

    /// Slot 0: what to report, set by the daemon while someone watches.
    NETPATH_MONITOR: Array<MonitorConfig>[1];
    /// Slot 0: events the ring could not take, on this CPU.
    NETPATH_EVENTS_LOST: PerCpuArray<u64>[1];
    /// Slot 0: this CPU's last drop (`netpath_common::events::last_drop`).
    NETPATH_LAST_DROP: PerCpuArray<u32>[1];
}

/// The events themselves (`netpath_common::events::Event`), for the daemon to read. A
/// ring buffer is sized in bytes, not entries.
#[map]
pub static NETPATH_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
