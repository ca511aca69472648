//! Property tests (the fuzz target) over the pure NAT logic in `netpath_common::nat`,
//! complementing the unit tests and proptests inside `nat.rs` (which cover SNAT of a
//! source address + port on TCP/UDP, and port candidates for ranges up to 2000 ports):
//! every incremental checksum update the datapath makes — IPv4 header, TCP/UDP with the
//! pseudo-header in both directions (SNAT and DNAT, any payload length), UDP's zero
//! checksum, the ICMP echo identifier — against a full recomputation with an
//! independent RFC 1071 implementation; tuple reversal; port candidates over every
//! range and every attempt.

use std::collections::HashSet;

use netpath_common::nat::{
    MASQ_PORTS, PORT_RETRIES, PortRange, Tuple, csum_replace2, csum_replace4, port_candidate,
    tuple_hash, udp_csum_replace2, udp_csum_replace4,
};
use proptest::prelude::*;

/// RFC 1071 one's-complement sum of `data` (big-endian 16-bit words, odd byte padded),
/// folded but not complemented. Independent of `netpath_common::packet::checksum`.
fn ones_sum(data: &[u8]) -> u16 {
    let mut acc: u64 = data
        .chunks(2)
        .map(|w| u64::from(w[0]) << 8 | u64::from(*w.get(1).unwrap_or(&0)))
        .sum();
    while acc > 0xffff {
        acc = (acc >> 16) + (acc & 0xffff);
    }
    acc as u16
}

/// The checksum to store for `data` (with its checksum field zeroed).
fn full(data: &[u8]) -> u16 {
    !ones_sum(data)
}

/// Data holding a checksum verifies: its one's-complement sum is all ones (−0).
fn verifies(data: &[u8]) -> bool {
    ones_sum(data) == 0xffff
}

/// Equal as one's-complement numbers: identical, or the two zeros 0x0000 and 0xffff.
fn same(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Pseudo-header + L4 segment, the bytes TCP/UDP checksums cover.
fn pseudo(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + l4.len());
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(l4);
    p
}

/// A TCP or UDP segment with a correct checksum (or 0 for a checksum-less UDP one).
fn segment(
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
    udp_none: bool,
) -> (Vec<u8>, usize) {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    let at = if proto == UDP {
        l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        6
    } else {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0x20, 0, 0, 0, 0, 0]);
        16
    };
    l4.extend_from_slice(payload);
    if !(proto == UDP && udp_none) {
        let mut c = full(&pseudo(proto, src, dst, &l4));
        if proto == UDP && c == 0 {
            c = 0xffff;
        }
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    (l4, at)
}

fn ipv4_header(options: &[u8], ttl: u8, proto: u8, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let ihl = 20 + options.len();
    let mut h = vec![
        0x40 | (ihl / 4) as u8,
        0,
        0,
        200,
        0x12,
        0x34,
        0x40,
        0,
        ttl,
        proto,
    ];
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(options);
    let c = full(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// The IPv4 header checksum after rewriting the source or destination address
    /// (`csum_replace4`) and a 16-bit word (`csum_replace2`: TTL/protocol, say), with
    /// any options: the header verifies, and the checksum equals a full recomputation.
    #[test]
    fn ipv4_header_updates(
        words in 0usize..=10, opt in any::<[u8; 40]>(), ttl in any::<u8>(), proto in any::<u8>(),
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new in any::<[u8; 4]>(),
        new_ttl in any::<u8>(), rewrite_dst in any::<bool>(),
    ) {
        let mut h = ipv4_header(&opt[..words * 4], ttl, proto, src, dst);
        prop_assert!(verifies(&h));
        let at = if rewrite_dst { 16 } else { 12 };
        let old: [u8; 4] = h[at..at + 4].try_into().unwrap();
        let mut c = csum_replace4(be16(&h, 10), old, new);
        h[at..at + 4].copy_from_slice(&new);
        c = csum_replace2(c, u16::from_be_bytes([ttl, proto]), u16::from_be_bytes([new_ttl, proto]));
        h[8] = new_ttl;
        h[10..12].copy_from_slice(&c.to_be_bytes());
        prop_assert!(verifies(&h), "header {h:02x?}");
        h[10..12].copy_from_slice(&[0, 0]);
        prop_assert!(same(c, full(&h)), "incremental {c:#06x} full {:#06x}", full(&h));
    }

    /// Every NAT rewrite of a TCP/UDP packet — SNAT (source address and port), DNAT
    /// (destination address and port), and both in one packet (hairpin) — leaves a
    /// checksum that verifies over the new pseudo-header, for any payload length (odd
    /// ones included). A zero UDP checksum stays zero, a non-zero one never becomes 0.
    #[test]
    fn tcp_udp_rewrites_verify(
        udp in any::<bool>(), udp_none in any::<bool>(),
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), sport in any::<u16>(), dport in any::<u16>(),
        new_src in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
        new_sport in any::<u16>(), new_dport in any::<u16>(),
        which in 0u8..3, payload in proptest::collection::vec(any::<u8>(), 0..97),
    ) {
        let proto = if udp { UDP } else { TCP };
        let (mut l4, at) = segment(proto, src, dst, sport, dport, &payload, udp_none);
        let zero = be16(&l4, at) == 0;
        let (do_src, do_dst) = (which != 1, which != 0);
        let mut c = be16(&l4, at);
        let (mut s, mut d) = (src, dst);
        let update4 = |c, a, b| if udp { udp_csum_replace4(c, a, b) } else { csum_replace4(c, a, b) };
        let update2 = |c, a, b| if udp { udp_csum_replace2(c, a, b) } else { csum_replace2(c, a, b) };
        if do_src {
            c = update4(c, src, new_src);
            c = update2(c, sport, new_sport);
            l4[0..2].copy_from_slice(&new_sport.to_be_bytes());
            s = new_src;
        }
        if do_dst {
            c = update4(c, dst, new_dst);
            c = update2(c, dport, new_dport);
            l4[2..4].copy_from_slice(&new_dport.to_be_bytes());
            d = new_dst;
        }
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        if udp && zero {
            prop_assert_eq!(c, 0, "a zero UDP checksum must stay zero");
        } else {
            prop_assert!(!(udp && c == 0), "UDP checksum became 0 (\"none\")");
            prop_assert!(verifies(&pseudo(proto, s, d, &l4)), "segment {l4:02x?}");
            l4[at..at + 2].copy_from_slice(&[0, 0]);
            let f = full(&pseudo(proto, s, d, &l4));
            prop_assert!(same(c, f), "incremental {c:#06x} full {f:#06x}");
        }
    }

    /// ICMP echo: the identifier takes the place of the port; the ICMP checksum (no
    /// pseudo-header) is updated with `csum_replace2` and verifies.
    #[test]
    fn icmp_identifier_rewrite_verifies(
        kind in prop_oneof![Just(0u8), Just(8u8)], id in any::<u16>(), new_id in any::<u16>(),
        seq in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..97),
    ) {
        let mut m = vec![kind, 0, 0, 0];
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&payload);
        let c0 = full(&m);
        m[2..4].copy_from_slice(&c0.to_be_bytes());
        let c = csum_replace2(c0, id, new_id);
        m[4..6].copy_from_slice(&new_id.to_be_bytes());
        m[2..4].copy_from_slice(&c.to_be_bytes());
        prop_assert!(verifies(&m), "message {m:02x?}");
    }

    /// Replacing a field and then putting it back restores the checksum (up to the two
    /// zeros); replacing a field by itself changes nothing (likewise).
    #[test]
    fn replace_round_trips(sum in any::<u16>(), a in any::<u16>(), b in any::<u16>(),
                           x in any::<[u8; 4]>(), y in any::<[u8; 4]>()) {
        prop_assert!(same(csum_replace2(csum_replace2(sum, a, b), b, a), sum));
        prop_assert!(same(csum_replace2(sum, a, a), sum));
        prop_assert!(same(csum_replace4(csum_replace4(sum, x, y), y, x), sum));
        if sum != 0 {
            let u = udp_csum_replace4(udp_csum_replace4(sum, x, y), y, x);
            prop_assert!(same(u, sum) && u != 0);
        }
    }

    /// `csum_replace4` agrees with a 32-bit formulation of RFC 1624 eqn. 3 (what the
    /// kernel's `csum_replace4` does): HC' = ~(~HC + ~m + m') over 32-bit words.
    #[test]
    fn replace4_matches_a_32_bit_update(sum in any::<u16>(), from in any::<[u8; 4]>(), to in any::<[u8; 4]>()) {
        let (m, m2) = (u32::from_be_bytes(from), u32::from_be_bytes(to));
        let mut acc = u64::from(!sum) + u64::from(!m) + u64::from(m2);
        while acc > 0xffff {
            acc = (acc >> 16) + (acc & 0xffff);
        }
        prop_assert!(same(csum_replace4(sum, from, to), !(acc as u16)));
    }

    /// UDP updates never produce 0 from a real checksum, and leave 0 alone.
    #[test]
    fn udp_zero_is_reserved(sum in any::<u16>(), a in any::<u16>(), b in any::<u16>(),
                            x in any::<[u8; 4]>(), y in any::<[u8; 4]>()) {
        prop_assert_eq!(udp_csum_replace2(0, a, b), 0);
        prop_assert_eq!(udp_csum_replace4(0, x, y), 0);
        if sum != 0 {
            prop_assert_ne!(udp_csum_replace2(sum, a, b), 0);
            prop_assert_ne!(udp_csum_replace4(sum, x, y), 0);
        }
    }

    /// Reversal is an involution and swaps the ends; a reply tuple is never the
    /// original unless the connection is symmetric.
    #[test]
    fn tuple_reversal(proto in any::<u8>(), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
                      sport in any::<u16>(), dport in any::<u16>()) {
        let t = Tuple::new(proto, src, sport, dst, dport);
        let r = t.reversed();
        prop_assert_eq!(r.reversed(), t);
        prop_assert_eq!((r.src, r.sport, r.dst, r.dport, r.proto), (dst, dport, src, sport, proto));
        prop_assert_eq!(r._pad, [0; 3]);
        prop_assert_eq!(r == t, src == dst && sport == dport);
        // The hash is a function of the tuple (same tuple, same start port).
        prop_assert_eq!(tuple_hash(&t), tuple_hash(&Tuple::new(proto, src, sport, dst, dport)));
    }

    /// Every attempt's candidate lies in the range, for any range of the whole port
    /// space (single ports and 0-65535 included) and any hash.
    #[test]
    fn candidates_in_any_range(h in any::<u32>(), a in 0u32..PORT_RETRIES, x in any::<u16>(), y in any::<u16>()) {
        let range = PortRange { first: x.min(y), last: x.max(y) };
        let p = port_candidate(h, a, range);
        prop_assert!(p >= range.first && p <= range.last, "{p} outside {range:?}");
        // A reversed range counts as its first port (documented; no panic path).
        if x != y {
            let reversed = PortRange { first: x.max(y), last: x.min(y) };
            prop_assert_eq!(port_candidate(h, a, reversed), reversed.first);
        }
    }

    /// The PORT_RETRIES attempts probe distinct ports (all of the range if it is
    /// smaller), so a retry never re-tries a port already found taken — for every hash,
    /// including those near u32::MAX (span 255, hash u32::MAX once probed the first
    /// port twice).
    #[test]
    fn attempts_probe_distinct_ports(h in any::<u32>(), first in any::<u16>(), len in 0u16..4096) {
        let range = PortRange { first, last: first.saturating_add(len) };
        let span = u32::from(range.last - range.first) + 1;
        let ports: HashSet<u16> = (0..PORT_RETRIES).map(|a| port_candidate(h, a, range)).collect();
        prop_assert_eq!(ports.len() as u32, span.min(PORT_RETRIES));
    }
}

#[test]
fn masquerade_range_is_linux_ephemeral_and_fully_reachable() {
    assert_eq!((MASQ_PORTS.first, MASQ_PORTS.last), (32768, 60999));
    let t = Tuple::new(TCP, [10, 200, 0, 2], 40000, [192, 0, 2, 1], 443);
    let h = tuple_hash(&t);
    let span = u32::from(MASQ_PORTS.last - MASQ_PORTS.first) + 1;
    // Walking `span` attempts from any start visits every port exactly once.
    let all: HashSet<u16> = (0..span)
        .map(|a| port_candidate(h, a, MASQ_PORTS))
        .collect();
    assert_eq!(all.len() as u32, span);
}
