//! Pure NAT logic shared by the eBPF programs and host tests: connection tuples, the
//! map keys/values of the NAT tables, source-port selection with bounded retries, and
//! RFC 1624 incremental checksum updates.
//!
//! The kernel side applies rewrites with `bpf_l3_csum_replace`/`bpf_l4_csum_replace`
//! (which also handle checksum offload); the functions here compute the same updates
//! for packets whose checksums are complete, so host tests and the fuzz target can
//! check every rewrite byte for byte.

/// The NAT maps' pin names, declared with every other map's in [`crate::maps`].
pub use crate::maps::{
    DNAT_CT_MAP, HOST_NETNS_MAP, LOCAL_ADDRS_MAP, MASQ_SRC_MAP, NAT_AGE_MAP, NO_MASQ_MAP,
    PUBLISH_MAP, RNAT_MAP, SNAT_MAP, SOCK_NAT_MAP, UPLINKS_MAP,
};

map_type! {
    /// A connection as seen in one direction. Addresses are network-order bytes, ports are
    /// host-order numbers (the ICMP echo identifier takes the place of both ports).
    #[derive(Hash)]
    pub struct Tuple: 16 bytes {
        pub src: [u8; 4],
        pub dst: [u8; 4],
        pub sport: u16,
        pub dport: u16,
        pub proto: u8,
        pub _pad: [u8; 3],
    }
}

impl Tuple {
    pub const fn new(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Tuple {
        Tuple {
            src,
            dst,
            sport,
            dport,
            proto,
            _pad: [0; 3],
        }
    }

    /// The same connection seen from the other side.
    pub const fn reversed(&self) -> Tuple {
        Tuple::new(self.proto, self.dst, self.dport, self.src, self.sport)
    }
}

map_type! {
    /// What a NAT entry maps to: the address and port that replace the originals.
    pub struct NatTarget: 8 bytes {
        pub addr: [u8; 4],
        pub port: u16,
        /// `NAT_FLAG_*` bits (connection-tracking entries only; 0 elsewhere).
        pub flags: u8,
        pub _pad: u8,
    }
}

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

impl NatTarget {
    /// `addr:port`, no flags.
    pub const fn new(addr: [u8; 4], port: u16) -> NatTarget {
        NatTarget {
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
/// Connections the NAT tables hold (LRU: the least recently used are evicted).
pub const NAT_ENTRIES: u32 = 262_144;

map_type! {
    /// Value of `NETPATH_NAT_AGE`.
    pub struct NatAge: 8 bytes {
        /// Last packet, in [`nat_clock`] units (≈ 1.07 s), wrapping.
        pub seen: u32,
        /// `CT_*`.
        pub state: u8,
        pub _pad: [u8; 3],
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
    now.wrapping_sub(age.seen) > ct_timeout(proto, age.state)
}

map_type! {
    /// An uplink: the address egress masquerade rewrites sources to, and its port range.
    pub struct Uplink: 8 bytes {
        pub addr: [u8; 4],
        pub first_port: u16,
        pub last_port: u16,
    }
}

/// Published ports per host.
pub const MAX_PUBLISHED: u32 = 65_536;

map_type! {
    /// A published port: protocol, host address (`0.0.0.0` = every address), host port.
    #[derive(Hash)]
    pub struct PublishKey: 8 bytes {
        pub host_ip: [u8; 4],
        pub port: u16,
        pub proto: u8,
        pub _pad: u8,
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

/// A cheap, well-mixed 32-bit hash of a tuple (for picking a port to start from).
#[inline(always)]
pub fn tuple_hash(t: &Tuple) -> u32 {
    let mut h: u32 = 0x9e37_79b9 ^ u32::from(t.proto);
    for w in [
        u32::from_be_bytes(t.src),
        u32::from_be_bytes(t.dst),
        (u32::from(t.sport) << 16) | u32::from(t.dport),
    ] {
        h ^= w;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
    }
    h
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

/// RFC 1624 eqn. 3: the checksum `sum` after a 16-bit field changes `from` → `to`.
#[inline(always)]
pub const fn csum_replace2(sum: u16, from: u16, to: u16) -> u16 {
    let s = (!sum) as u32 + (!from) as u32 + to as u32;
    !fold16(s)
}

/// The checksum `sum` after a 32-bit field (an IPv4 address) changes `from` → `to`.
#[inline(always)]
pub const fn csum_replace4(sum: u16, from: [u8; 4], to: [u8; 4]) -> u16 {
    let s = csum_replace2(
        sum,
        u16::from_be_bytes([from[0], from[1]]),
        u16::from_be_bytes([to[0], to[1]]),
    );
    csum_replace2(
        s,
        u16::from_be_bytes([from[2], from[3]]),
        u16::from_be_bytes([to[2], to[3]]),
    )
}

/// The L4 checksum `sum` of a TCP/UDP segment or ICMP echo (`proto`) after its source
/// address changes `from_addr` → `to_addr` and its source port (ICMP: identifier)
/// `from_port` → `to_port`. TCP and UDP checksums cover the address through the
/// pseudo-header, ICMP's does not; a zero UDP checksum stays zero.
#[inline(always)]
pub const fn l4_csum_after_source_change(
    proto: u8,
    sum: u16,
    from_addr: [u8; 4],
    to_addr: [u8; 4],
    from_port: u16,
    to_port: u16,
) -> u16 {
    match proto {
        crate::packet::IPPROTO_UDP => udp_csum_replace2(
            udp_csum_replace4(sum, from_addr, to_addr),
            from_port,
            to_port,
        ),
        crate::packet::IPPROTO_TCP => {
            csum_replace2(csum_replace4(sum, from_addr, to_addr), from_port, to_port)
        }
        _ => csum_replace2(sum, from_port, to_port),
    }
}

/// [`csum_replace4`] for a UDP checksum. UDP transmits a computed checksum of 0 as 0xffff
/// (RFC 768); 0 means "no checksum" and must stay 0 through NAT.
#[inline(always)]
pub const fn udp_csum_replace4(sum: u16, from: [u8; 4], to: [u8; 4]) -> u16 {
    udp_csum(sum, csum_replace4(sum, from, to))
}

/// [`csum_replace2`] for a UDP checksum, as [`udp_csum_replace4`].
#[inline(always)]
pub const fn udp_csum_replace2(sum: u16, from: u16, to: u16) -> u16 {
    udp_csum(sum, csum_replace2(sum, from, to))
}

/// UDP's rules for a checksum `sum` that an update computed as `updated`: 0 ("no
/// checksum") stays 0, and a computed 0 is sent as 0xffff.
#[inline(always)]
const fn udp_csum(sum: u16, updated: u16) -> u16 {
    match (sum, updated) {
        (0, _) => 0,
        (_, 0) => 0xffff,
        (_, s) => s,
    }
}

/// Folds a 32-bit one's-complement sum to 16 bits (without complementing).
#[inline(always)]
const fn fold16(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::HashSet, vec::Vec};

    use proptest::prelude::*;

    use super::*;
    use crate::packet::checksum;

    /// TCP/UDP checksum over the IPv4 pseudo-header and `l4`.
    fn l4_csum(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> u16 {
        let mut p = Vec::new();
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(l4);
        checksum(&p)
    }

    #[test]
    fn reversed_twice_is_identity() {
        let t = Tuple::new(6, [10, 0, 0, 2], 40000, [1, 1, 1, 1], 443);
        assert_eq!(t.reversed().reversed(), t);
        assert_eq!(t.reversed().src, t.dst);
        assert_eq!(t.reversed().sport, t.dport);
    }

    #[test]
    fn connection_states_and_staleness() {
        use crate::packet::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
        let syn = 0x02;
        let ack = 0x10;
        assert_eq!(ct_next(CT_NEW, IPPROTO_TCP, syn, false), CT_NEW);
        assert_eq!(
            ct_next(CT_NEW, IPPROTO_TCP, syn | ack, true),
            CT_ESTABLISHED
        );
        assert_eq!(
            ct_next(CT_ESTABLISHED, IPPROTO_TCP, ack | 0x01, false),
            CT_CLOSING
        );
        assert_eq!(ct_next(CT_ESTABLISHED, IPPROTO_TCP, 0x04, true), CT_CLOSING);
        assert_eq!(ct_next(CT_CLOSING, IPPROTO_TCP, ack, true), CT_CLOSING);
        assert_eq!(ct_next(CT_NEW, IPPROTO_UDP, 0, true), CT_ESTABLISHED);
        // UDP "flags" are never looked at.
        assert_eq!(ct_next(CT_NEW, IPPROTO_UDP, 0x01, false), CT_NEW);
        let age = |seen, state| NatAge {
            seen,
            state,
            _pad: [0; 3],
        };
        // An answered TCP connection idle for an hour keeps its port; closed, it lets go.
        assert!(!ct_stale(IPPROTO_TCP, age(100, CT_ESTABLISHED), 100 + 3600));
        assert!(ct_stale(IPPROTO_TCP, age(100, CT_CLOSING), 100 + 121));
        assert!(!ct_stale(IPPROTO_TCP, age(100, CT_CLOSING), 100 + 120));
        assert!(ct_stale(IPPROTO_ICMP, age(100, CT_NEW), 131));
        // The clock wraps.
        assert!(!ct_stale(
            IPPROTO_UDP,
            age(u32::MAX - 5, CT_ESTABLISHED),
            10
        ));
        assert!(ct_stale(IPPROTO_UDP, age(u32::MAX - 5, CT_NEW), 40));
        assert_eq!(nat_clock(3 << 30), 3);
    }

    #[test]
    fn hashes_near_the_top_never_probe_a_port_twice() {
        let r = PortRange {
            first: 1000,
            last: 1254,
        };
        let ports: std::collections::HashSet<u16> = (0..PORT_RETRIES)
            .map(|a| port_candidate(u32::MAX, a, r))
            .collect();
        assert_eq!(ports.len() as u32, PORT_RETRIES);
    }

    #[test]
    fn nat_port_keeps_the_source_port_first_when_the_range_has_it() {
        let r = MASQ_PORTS;
        assert_eq!(nat_port(40000, 7, 0, r), 40000);
        assert_eq!(nat_port(40000, 7, 1, r), port_candidate(7, 1, r));
        // Outside the range: hash-chosen from the first attempt.
        assert_eq!(nat_port(80, 7, 0, r), port_candidate(7, 0, r));
    }

    #[test]
    fn port_candidates_stay_in_range_and_cover_it() {
        let r = PortRange {
            first: 1000,
            last: 1009,
        };
        let all: HashSet<u16> = (0..10).map(|a| port_candidate(12345, a, r)).collect();
        assert_eq!(all.len(), 10);
        assert!(all.iter().all(|p| (1000..=1009).contains(p)));
        let one = PortRange { first: 7, last: 7 };
        assert_eq!(port_candidate(u32::MAX, u32::MAX, one), 7);
    }

    #[test]
    fn known_checksum_update() {
        // RFC 1624 example shape: a header whose checksum we recompute after a change.
        let mut hdr = [
            0x45, 0, 0, 0x54, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 2, 8, 8, 8, 8,
        ];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        let new = csum_replace4(c, [10, 0, 0, 2], [192, 0, 2, 7]);
        hdr[12..16].copy_from_slice(&[192, 0, 2, 7]);
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(new, checksum(&hdr));
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        assert_eq!(udp_csum_replace4(0, [10, 0, 0, 2], [1, 2, 3, 4]), 0);
        assert_eq!(udp_csum_replace2(0, 1, 2), 0);
    }

    proptest! {
        /// Incremental updates of an address and a port give exactly the checksum a
        /// full recomputation gives (TCP and UDP, any payload).
        #[test]
        fn incremental_equals_full_recompute(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_src in any::<[u8; 4]>(),
            sport in any::<u16>(), new_sport in any::<u16>(), dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64), udp in any::<bool>(),
        ) {
            let proto = if udp { 17 } else { 6 };
            let mut l4 = Vec::new();
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            let csum_at = if udp { 6 } else { 16 };
            if udp {
                l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
            } else {
                l4.extend_from_slice(&[0; 16]);
            }
            l4.extend_from_slice(&payload);
            let mut c = l4_csum(proto, src, dst, &l4);
            if udp && c == 0 { c = 0xffff; }
            // SNAT: source address and port change.
            let (mut inc, inc2);
            if udp {
                inc = udp_csum_replace4(c, src, new_src);
                inc2 = udp_csum_replace2(inc, sport, new_sport);
            } else {
                inc = csum_replace4(c, src, new_src);
                inc2 = csum_replace2(inc, sport, new_sport);
            }
            inc = inc2;
            l4[0..2].copy_from_slice(&new_sport.to_be_bytes());
            let mut full = l4_csum(proto, new_src, dst, &l4);
            if udp && full == 0 { full = 0xffff; }
            // Equal to the recomputed checksum, up to one's complement's two zeros.
            prop_assert!(inc == full || (inc | full) == 0xffff && (inc & full) == 0,
                "incremental {inc:#06x} full {full:#06x}");
            // And the packet verifies: its sum with the checksum in place is all ones.
            l4[csum_at..csum_at + 2].copy_from_slice(&inc.to_be_bytes());
            let verify = l4_csum(proto, new_src, dst, &l4);
            prop_assert!(verify == 0 || verify == 0xffff, "verify {verify:#06x}");
        }

        /// Port candidates never leave the range.
        #[test]
        fn candidates_in_range(h in any::<u32>(), a in any::<u32>(), first in any::<u16>(), len in 0u16..2000) {
            let last = first.saturating_add(len);
            let p = port_candidate(h, a, PortRange { first, last });
            prop_assert!(p >= first && p <= last);
        }
    }
}
