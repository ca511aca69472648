//! Pure NAT logic shared by the eBPF programs and host tests: connection tuples, the
//! map keys/values of the NAT tables, source-port selection with bounded retries, and
//! RFC 1624 incremental checksum updates ([`csum`]).
//!
//! Tuples, NAT targets and uplinks are generic over the address family ([`Address`]:
//! `[u8; 4]` or `[u8; 16]`); the IPv4 names ([`Tuple`], [`NatTarget`], [`Uplink`]) are
//! the 4-byte instances, with the byte layouts IPv4's pinned maps have always had, and
//! NAT66 uses the 16-byte ones ([`Tuple6`], [`NatTarget6`], [`Uplink6`]).
//!
//! The kernel side applies rewrites with `bpf_l3_csum_replace`/`bpf_l4_csum_replace`
//! (which also handle checksum offload); the functions here compute the same updates
//! for packets whose checksums are complete, so host tests and the fuzz target can
//! check every rewrite byte for byte.

/// The NAT maps' pin names, declared with every other map's in [`crate::maps`].
pub use crate::maps::{
    DNAT_CT_MAP, DNAT_CT6_MAP, HOST_NETNS_MAP, LOCAL_ADDRS_MAP, LOCAL_ADDRS6_MAP, MASQ_SRC_MAP,
    NAT_AGE_MAP, NO_MASQ_MAP, PUBLISH_MAP, PUBLISH6_MAP, RNAT_MAP, SNAT_MAP, SOCK_NAT_MAP,
    SOCK_NAT6_MAP, UPLINKS_MAP,
};
/// NAT66's maps' pin names.
pub use crate::maps::{
    MASQ_SRC6_MAP, NAT_AGE6_MAP, NAT66_SCRATCH_MAP, NO_MASQ6_MAP, RNAT6_MAP, SNAT6_MAP,
    UPLINKS6_MAP,
};

mod csum;
#[cfg(test)]
mod tests;

pub use self::csum::{
    csum_replace_addr, csum_replace2, csum_replace4, l4_csum_after_source_change,
    udp_csum_replace2, udp_csum_replace4,
};

/// An IP address as the NAT tables hold it: its network-order bytes, `[u8; 4]` (IPv4) or
/// `[u8; 16]` (IPv6). Sealed: only those two.
pub trait Address: Copy + Eq + core::fmt::Debug + core::hash::Hash + sealed::Sealed {
    /// How many 32-bit words the address has.
    const WORDS: usize;
    /// All zeros (`0.0.0.0`, `::`).
    const UNSPECIFIED: Self;
    /// The `i`-th 32-bit word (`i < WORDS`), as a big-endian number; 0 past the end.
    fn word(&self, i: usize) -> u32;
    /// The address at `offset` of `frame`, if it lies inside.
    fn load<F: crate::packet::Frame>(frame: &F, offset: usize) -> Option<Self>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for [u8; 4] {}
    impl Sealed for [u8; 16] {}
}

impl<const N: usize> Address for [u8; N]
where
    [u8; N]: sealed::Sealed,
{
    const WORDS: usize = N / 4;
    const UNSPECIFIED: Self = [0; N];

    #[inline(always)]
    fn word(&self, i: usize) -> u32 {
        match self.get(i * 4..i * 4 + 4) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => 0,
        }
    }

    #[inline(always)]
    fn load<F: crate::packet::Frame>(frame: &F, offset: usize) -> Option<Self> {
        frame.load::<N>(offset)
    }
}

map_type_per_family! {
    /// A connection as seen in one direction. Addresses are network-order bytes, ports are
    /// host-order numbers (the ICMP echo identifier takes the place of both ports).
    #[derive(Hash)]
    pub struct TupleOf<A: Address> for ([u8; 4] => 16, [u8; 16] => 40) {
        pub src: A,
        pub dst: A,
        pub sport: u16,
        pub dport: u16,
        pub proto: u8,
        pub _pad: [u8; 3],
    }
}

/// An IPv4 connection (the key of `NETPATH_SNAT`, `NETPATH_RNAT`, `NETPATH_NAT_AGE`,
/// `NETPATH_DNAT_CT`).
pub type Tuple = TupleOf<[u8; 4]>;
/// An IPv6 connection (the key of the NAT66 maps).
pub type Tuple6 = TupleOf<[u8; 16]>;

impl<A: Address> TupleOf<A> {
    pub const fn new(proto: u8, src: A, sport: u16, dst: A, dport: u16) -> Self {
        TupleOf {
            src,
            dst,
            sport,
            dport,
            proto,
            _pad: [0; 3],
        }
    }

    /// The same connection seen from the other side.
    pub const fn reversed(&self) -> Self {
        TupleOf::new(self.proto, self.dst, self.dport, self.src, self.sport)
    }
}

map_type_per_family! {
    /// What a NAT entry maps to: the address and port that replace the originals.
    pub struct NatTargetOf<A: Address> for ([u8; 4] => 8, [u8; 16] => 20) {
        pub addr: A,
        pub port: u16,
        /// `NAT_FLAG_*` bits (connection-tracking entries only; 0 elsewhere).
        pub flags: u8,
        pub _pad: u8,
    }
}

/// An IPv4 NAT target.
pub type NatTarget = NatTargetOf<[u8; 4]>;
/// An IPv6 NAT target.
pub type NatTarget6 = NatTargetOf<[u8; 16]>;

/// Host addresses `NETPATH_LOCAL_ADDRS` holds at the most.
pub const MAX_LOCAL_ADDRS: u32 = 1024;

map_type! {
    /// Key of `NETPATH_SOCK_NAT`: a socket (its cookie) and the endpoint address and port
    /// it was sent to instead of the published one.
    pub struct SockNatKey: 16 bytes {
        pub cookie: u64,
        pub addr: [u8; 4],
        pub port: u16,
        pub _pad: u16,
    }
}

map_type! {
    /// Key of `NETPATH_SOCK_NAT6`: [`SockNatKey`] for a native IPv6 endpoint address.
    pub struct SockNatKey6: 32 bytes {
        pub cookie: u64,
        pub addr: [u8; 16],
        pub port: u16,
        pub _pad: [u8; 6],
    }
}

/// A `NETPATH_DNAT_CT` entry of an endpoint that reached its own published port through
/// a host address (hairpin to itself): its source was rewritten to that host address
/// too, so the reply's destination must become the endpoint again.
pub const NAT_FLAG_SELF: u8 = 1;

/// A `NETPATH_DNAT_CT` entry of a connection that came in through an uplink to an
/// endpoint's own address (routed to this host, no publish involved): its front is the
/// endpoint's own address and port, so its replies leave untranslated — never
/// masqueraded, as Linux's conntrack keeps a connection's reply direction. Such entries
/// are never taken for hairpin replies.
pub const NAT_FLAG_INBOUND: u8 = 2;

impl<A: Address> NatTargetOf<A> {
    /// `addr:port`, no flags.
    pub const fn new(addr: A, port: u16) -> Self {
        NatTargetOf {
            addr,
            port,
            flags: 0,
            _pad: 0,
        }
    }
}

/// Most destination prefixes a network may exempt from masquerade, all networks together.
pub const MAX_NO_MASQ: u32 = 4096;

/// Key data of `NETPATH_NO_MASQ`, an LPM trie over (network id, destination): the
/// network id's four bytes (big-endian, so they form a prefix), then the destination
/// address. An entry for network `n` and `CIDR` has prefix length `32 + CIDR's`.
pub const fn no_masq_key(network_id: u32, dst: [u8; 4]) -> [u8; 8] {
    let n = network_id.to_be_bytes();
    [n[0], n[1], n[2], n[3], dst[0], dst[1], dst[2], dst[3]]
}

/// [`no_masq_key`] for an IPv6 destination (the NAT66 exemption trie): prefix length
/// `32 + CIDR's`.
pub const fn no_masq_key6(network_id: u32, dst: [u8; 16]) -> [u8; 20] {
    let mut k = [0; 20];
    let n = network_id.to_be_bytes();
    let mut i = 0;
    while i < 20 {
        k[i] = if i < 4 { n[i] } else { dst[i - 4] };
        i += 1;
    }
    k
}
/// Connections the NAT tables hold (LRU: the least recently used are evicted).
pub const NAT_ENTRIES: u32 = 262_144;

map_type! {
    /// Value of `NETPATH_NAT_AGE`: a masqueraded connection's clock and progress.
    pub struct NatAge: 12 bytes {
        /// Last packet, in [`nat_clock`] units (≈ 1.07 s), wrapping.
        pub seen: u32,
        /// First packet, in the same units (an entry migrated from layout 6 or older,
        /// which had no such field: its `seen` then).
        pub created: u32,
        /// `CT_*`.
        pub state: u8,
        pub _pad: [u8; 3],
    }
}

impl NatAge {
    /// A connection first seen at `now`, in `state`.
    pub const fn new(now: u32, state: u8) -> Self {
        NatAge {
            seen: now,
            created: now,
            state,
            _pad: [0; 3],
        }
    }
}

map_type_per_family! {
    /// Value of `NETPATH_DNAT_CT` (and `6`): the front of a connection to a published
    /// port — the address and port its replies leave with, its `NAT_FLAG_*` — and its
    /// clock and progress as [`NatAge`] keeps a masqueraded one's.
    pub struct CtFrontOf<A: Address> for ([u8; 4] => 16, [u8; 16] => 28) {
        pub addr: A,
        pub port: u16,
        pub flags: u8,
        /// `CT_*`.
        pub state: u8,
        /// Last packet, in [`nat_clock`] units.
        pub seen: u32,
        /// First packet, in [`nat_clock`] units.
        pub created: u32,
    }
}

/// An IPv4 connection-tracking front.
pub type CtFront = CtFrontOf<[u8; 4]>;
/// An IPv6 connection-tracking front.
pub type CtFront6 = CtFrontOf<[u8; 16]>;

impl<A: Address> CtFrontOf<A> {
    /// Front `front` of a connection first seen at `now`, in `state`.
    pub const fn new(front: NatTargetOf<A>, state: u8, now: u32) -> Self {
        CtFrontOf {
            addr: front.addr,
            port: front.port,
            flags: front.flags,
            state,
            seen: now,
            created: now,
        }
    }

    /// The front alone.
    pub const fn front(&self) -> NatTargetOf<A> {
        NatTargetOf {
            addr: self.addr,
            port: self.port,
            flags: self.flags,
            _pad: 0,
        }
    }
}

/// Only the endpoint has spoken (TCP: SYN sent; UDP/ICMP: no reply yet).
pub const CT_NEW: u8 = 0;
/// The remote side answered.
pub const CT_ESTABLISHED: u8 = 1;
/// A FIN or RST was seen (TCP).
pub const CT_CLOSING: u8 = 2;

const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;

/// The clock of `NatAge::seen`: CLOCK_MONOTONIC nanoseconds (what `bpf_ktime_get_ns`
/// returns) in units of 2^30 ns, about 1.07 s.
#[inline(always)]
pub const fn nat_clock(monotonic_ns: u64) -> u32 {
    (monotonic_ns >> 30) as u32
}

/// A connection's state after a packet with TCP flags `tcp_flags` (0 for UDP/ICMP),
/// from the remote side (`from_remote`, a reply) or from the endpoint.
#[inline(always)]
pub const fn ct_next(state: u8, proto: u8, tcp_flags: u8, from_remote: bool) -> u8 {
    if proto == crate::packet::IPPROTO_TCP && tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        return CT_CLOSING;
    }
    if from_remote && state == CT_NEW {
        return CT_ESTABLISHED;
    }
    state
}

/// How long (in [`nat_clock`] units) a connection of `proto` in `state` may stay quiet
/// before its NAT port may go to another connection. Close to Linux conntrack's
/// defaults, which iptables MASQUERADE lives by: a TCP connection the remote side
/// answered keeps its port for a day of silence (Linux: 5 days); a closing or never
/// answered one for 2 minutes (TIME_WAIT); UDP 30 s unanswered, 2 minutes answered;
/// ICMP 30 s.
#[inline(always)]
pub const fn ct_timeout(proto: u8, state: u8) -> u32 {
    match (proto, state) {
        (crate::packet::IPPROTO_TCP, CT_ESTABLISHED) => 86_400,
        (crate::packet::IPPROTO_TCP, _) => 120,
        (crate::packet::IPPROTO_UDP, CT_ESTABLISHED) => 120,
        _ => 30,
    }
}

/// Whether a connection last seen as `age` may give its port away at `now`.
#[inline(always)]
pub const fn ct_stale(proto: u8, age: NatAge, now: u32) -> bool {
    ct_left(proto, age.state, age.seen, now).is_none()
}

/// How long (in [`nat_clock`] units) a connection of `proto` in `state`, last seen at
/// `seen`, has left before it times out at `now`; `None` once it has.
#[inline(always)]
pub const fn ct_left(proto: u8, state: u8, seen: u32, now: u32) -> Option<u32> {
    let idle = now.wrapping_sub(seen);
    let timeout = ct_timeout(proto, state);
    if idle > timeout {
        None
    } else {
        Some(timeout - idle)
    }
}

map_type_per_family! {
    /// An uplink: the address egress masquerade rewrites sources to, and its port range.
    pub struct UplinkOf<A: Address> for ([u8; 4] => 8, [u8; 16] => 20) {
        pub addr: A,
        pub first_port: u16,
        pub last_port: u16,
    }
}

/// An uplink's IPv4 address and port range (`NETPATH_UPLINKS`).
pub type Uplink = UplinkOf<[u8; 4]>;
/// An uplink's IPv6 address and port range (the NAT66 uplink map).
pub type Uplink6 = UplinkOf<[u8; 16]>;

impl<A: Address> UplinkOf<A> {
    /// The uplink's port range.
    pub const fn ports(&self) -> PortRange {
        PortRange {
            first: self.first_port,
            last: self.last_port,
        }
    }
}

/// Published ports per host.
pub const MAX_PUBLISHED: u32 = 65_536;

map_type_per_family! {
    /// A published port: protocol, host address (all-zero — `0.0.0.0`, `::` — is every
    /// address of the family), host port.
    #[derive(Hash)]
    pub struct PublishKeyOf<A: Address> for ([u8; 4] => 8, [u8; 16] => 20) {
        pub host_ip: A,
        pub port: u16,
        pub proto: u8,
        pub _pad: u8,
    }
}

/// An IPv4 published port (the key of `NETPATH_PUBLISH`).
pub type PublishKey = PublishKeyOf<[u8; 4]>;
/// An IPv6 published port (the key of `NETPATH_PUBLISH6`).
pub type PublishKey6 = PublishKeyOf<[u8; 16]>;

impl<A: Address> PublishKeyOf<A> {
    /// `proto` on `host_ip:port`.
    pub const fn new(proto: u8, host_ip: A, port: u16) -> Self {
        PublishKeyOf {
            host_ip,
            port,
            proto,
            _pad: 0,
        }
    }
}

/// An inclusive port range to allocate NAT source ports from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// Default masquerade port range (Linux's default ephemeral range).
pub const MASQ_PORTS: PortRange = PortRange {
    first: 32768,
    last: 60999,
};

/// How many ports the datapath tries before giving up on a new connection.
pub const PORT_RETRIES: u32 = 16;

/// A cheap, well-mixed 32-bit hash of a tuple (for picking a port to start from): the
/// source address's words, the destination's, then the ports.
#[inline(always)]
pub fn tuple_hash<A: Address>(t: &TupleOf<A>) -> u32 {
    let mut h: u32 = 0x9e37_79b9 ^ u32::from(t.proto);
    // Verifier: constant trip counts (1 or 4 words).
    for i in 0..A::WORDS {
        h = hash_step(h, t.src.word(i));
    }
    for i in 0..A::WORDS {
        h = hash_step(h, t.dst.word(i));
    }
    hash_step(h, (u32::from(t.sport) << 16) | u32::from(t.dport))
}

/// One mixing step of [`tuple_hash`].
#[inline(always)]
const fn hash_step(mut h: u32, w: u32) -> u32 {
    h ^= w;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The `attempt`-th candidate NAT port for a connection hashing to `hash`: consecutive
/// attempts walk the range from a hash-chosen start, so collisions resolve in a few
/// probes and different connections spread over the range.
#[inline(always)]
pub fn port_candidate(hash: u32, attempt: u32, range: PortRange) -> u16 {
    // No panicking arithmetic (the eBPF programs have no panic path): a reversed range
    // counts as a single port.
    let span = u32::from(range.last)
        .wrapping_sub(u32::from(range.first))
        .wrapping_add(1);
    // `hash % span` first: adding `attempt` to the raw hash could wrap past u32::MAX
    // and probe a port twice.
    let offset = match hash
        .checked_rem(span)
        .and_then(|start| start.wrapping_add(attempt).checked_rem(span))
    {
        Some(o) if range.last >= range.first => o,
        _ => 0,
    };
    (u32::from(range.first) + offset) as u16
}

/// The `attempt`-th NAT port for a connection from source port `sport`: first its own
/// port when the range holds it (as Linux's NAT does: the endpoint's own port
/// allocator already keeps its connections to one destination apart, so most
/// connections keep their port and never collide), then [`port_candidate`]s.
#[inline(always)]
pub fn nat_port(sport: u16, hash: u32, attempt: u32, range: PortRange) -> u16 {
    if attempt == 0 && sport >= range.first && sport <= range.last {
        sport
    } else {
        port_candidate(hash, attempt, range)
    }
}
