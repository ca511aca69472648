//! Every map of the datapath, in one place: what the control plane fills, the
//! programs' connection state, and the counters. Names are the pin names
//! (`netpath::datapath::MAPS` lists the same set, and a host test checks the built object
//! against it); sizes come from `netpath-common`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use netpath_common::{
    maps::{
        Counter, DropReason, EndpointCounters, EndpointKey, EndpointValue, Forward, LAYOUT,
        MAX_ENDPOINTS, STATS_ENTRIES,
    },
    nat::{
        MAX_LOCAL_ADDRS, MAX_NO_MASQ, MAX_PUBLISHED, NAT_ENTRIES, NatAge, NatTarget, PublishKey,
        SockNatKey, Tuple, Uplink,
    },
};

/// The layout marker: never read or written; its size is this build's [`LAYOUT`].
#[map(name = "NETPATH_LAYOUT")]
pub static NETPATH_LAYOUT: Array<u8> = Array::with_max_entries(LAYOUT, 0);

// Endpoints and counters.

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

#[map(name = "NETPATH_STATS")]
pub static NETPATH_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STATS_ENTRIES, 0);

// Host-local access (socket hooks).

/// The host's own addresses outside 127.0.0.0/8 (kept by the control plane).
#[map(name = "NETPATH_LOCAL_ADDRS")]
pub static NETPATH_LOCAL_ADDRS: HashMap<[u8; 4], u8> =
    HashMap::with_max_entries(MAX_LOCAL_ADDRS, 0);

/// (socket, endpoint address/port) → the published address/port it stands for.
#[map(name = "NETPATH_SOCK_NAT")]
pub static NETPATH_SOCK_NAT: LruHashMap<SockNatKey, NatTarget> =
    LruHashMap::with_max_entries(NAT_ENTRIES, 0);

/// Slot 0: the host namespace's netns cookie (0 until the control plane sets it, which
/// matches no namespace).
#[map(name = "NETPATH_HOST_NETNS")]
pub static NETPATH_HOST_NETNS: Array<u64> = Array::with_max_entries(1, 0);

// NAT: masquerade, published ports, hairpin.

#[map(name = "NETPATH_SNAT")]
pub static NETPATH_SNAT: LruHashMap<Tuple, NatTarget> =
    LruHashMap::with_max_entries(NAT_ENTRIES, 0);

#[map(name = "NETPATH_RNAT")]
pub static NETPATH_RNAT: LruHashMap<Tuple, NatTarget> =
    LruHashMap::with_max_entries(NAT_ENTRIES, 0);

/// Reply tuple → when the connection was last active and how far TCP got (see
/// `netpath_common::nat::NatAge`): lets `allocate` take back the ports of dead
/// connections, which the LRU maps alone would keep until 262,144 entries pushed them out.
#[map(name = "NETPATH_NAT_AGE")]
pub static NETPATH_NAT_AGE: LruHashMap<Tuple, NatAge> =
    LruHashMap::with_max_entries(NAT_ENTRIES, 0);

/// Uplink ifindex → its address and port range.
#[map(name = "NETPATH_UPLINKS")]
pub static NETPATH_UPLINKS: HashMap<u32, Uplink> = HashMap::with_max_entries(256, 0);

/// Subnets whose traffic is masqueraded (value: network id).
#[map(name = "NETPATH_MASQ_SRC")]
pub static NETPATH_MASQ_SRC: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(4096, 0);

/// Destinations a network's traffic reaches unmasqueraded (`--no-masquerade`), keyed by
/// `no_masq_key(network id, destination)`; the value is unused.
#[map(name = "NETPATH_NO_MASQ")]
pub static NETPATH_NO_MASQ: LpmTrie<[u8; 8], u8> = LpmTrie::with_max_entries(MAX_NO_MASQ, 0);

/// Published ports: (protocol, host address or 0.0.0.0, port) → endpoint address/port.
#[map(name = "NETPATH_PUBLISH")]
pub static NETPATH_PUBLISH: HashMap<PublishKey, NatTarget> =
    HashMap::with_max_entries(MAX_PUBLISHED, 0);

/// Connections to published ports, keyed by the endpoint-side tuple of their replies.
#[map(name = "NETPATH_DNAT_CT")]
pub static NETPATH_DNAT_CT: LruHashMap<Tuple, NatTarget> =
    LruHashMap::with_max_entries(NAT_ENTRIES, 0);
