//! Unit tests and proptests of the NAT logic: states and timeouts, port selection,
//! incremental checksums against full recomputation.

extern crate std;
use std::{collections::HashSet, vec, vec::Vec};

use proptest::prelude::*;

use super::*;
use crate::packet::checksum;

/// TCP/UDP/ICMPv6 checksum over the IPv6 pseudo-header (RFC 8200 §8.1) and `l4`.
fn l4_csum6(proto: u8, src: [u8; 16], dst: [u8; 16], l4: &[u8]) -> u16 {
    let len = (l4.len() as u32).to_be_bytes();
    checksum(&[&src[..], &dst, &len, &[0, 0, 0, proto], l4].concat())
}

/// TCP/UDP checksum over the IPv4 pseudo-header and `l4`.
fn l4_csum(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> u16 {
    let len = (l4.len() as u16).to_be_bytes();
    checksum(&[&src[..], &dst, &[0, proto], &len, l4].concat())
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
    let age = |seen, state| NatAge::new(seen, state);
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
    // What is left: the whole timeout at first, none once it passed.
    assert_eq!(ct_left(IPPROTO_UDP, CT_NEW, 100, 100), Some(30));
    assert_eq!(ct_left(IPPROTO_UDP, CT_NEW, 100, 130), Some(0));
    assert_eq!(ct_left(IPPROTO_UDP, CT_NEW, 100, 131), None);
    assert_eq!(
        ct_left(IPPROTO_TCP, CT_ESTABLISHED, u32::MAX, 9),
        Some(86_390)
    );
}

#[test]
fn a_front_keeps_its_target_and_starts_its_clock() {
    let front = NatTargetOf {
        flags: NAT_FLAG_SELF,
        ..NatTargetOf::new([192, 0, 2, 1], 8080)
    };
    let ct = CtFront::new(front, CT_NEW, 77);
    assert_eq!(ct.front(), front);
    assert_eq!((ct.state, ct.seen, ct.created), (CT_NEW, 77, 77));
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

    /// NAT66: the incremental update of a TCP, UDP or ICMPv6 echo checksum after a
    /// 16-byte source address and the port (identifier) change equals a full
    /// recomputation over the new pseudo-header; a UDP one is never 0.
    #[test]
    fn incremental_equals_full_recompute_v6(
        src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new_src in any::<[u8; 16]>(),
        port in any::<u16>(), new_port in any::<u16>(), other in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64), which in 0u8..3,
    ) {
        let (proto, port_at, csum_at) = match which {
            0 => (crate::packet::IPPROTO_TCP, 0, 16),
            1 => (crate::packet::IPPROTO_UDP, 0, 6),
            _ => (crate::ipv6::IPPROTO_ICMPV6, 4, 2),
        };
        let mut l4 = vec![0u8; if which == 0 { 20 } else { 8 }];
        l4.extend_from_slice(&payload);
        if which == 2 {
            l4[0] = 128;
            l4[6..8].copy_from_slice(&other.to_be_bytes());
        } else {
            l4[2..4].copy_from_slice(&other.to_be_bytes());
        }
        if which == 1 {
            let len = l4.len() as u16;
            l4[4..6].copy_from_slice(&len.to_be_bytes());
        }
        l4[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
        let mut c = l4_csum6(proto, src, dst, &l4);
        if which == 1 && c == 0 { c = 0xffff; }
        let inc = l4_csum_after_source_change(proto, c, src, new_src, port, new_port);
        l4[port_at..port_at + 2].copy_from_slice(&new_port.to_be_bytes());
        let full = l4_csum6(proto, new_src, dst, &l4);
        prop_assert!(inc == full || (inc | full) == 0xffff && (inc & full) == 0,
            "incremental {inc:#06x} full {full:#06x}");
        if which == 1 {
            prop_assert_ne!(inc, 0, "a UDP checksum over IPv6 is never 0");
        }
        l4[csum_at..csum_at + 2].copy_from_slice(&inc.to_be_bytes());
        prop_assert_eq!(l4_csum6(proto, new_src, dst, &l4), 0, "verifies");
    }

    /// The generic address update is exactly IPv4's for 4-byte addresses.
    #[test]
    fn generic_address_update_is_csum_replace4_for_ipv4(
        sum in any::<u16>(), from in any::<[u8; 4]>(), to in any::<[u8; 4]>(),
    ) {
        prop_assert_eq!(csum_replace_addr(sum, from, to), csum_replace4(sum, from, to));
    }

    /// Port candidates never leave the range.
    #[test]
    fn candidates_in_range(h in any::<u32>(), a in any::<u32>(), first in any::<u16>(), len in 0u16..2000) {
        let last = first.saturating_add(len);
        let p = port_candidate(h, a, PortRange { first, last });
        prop_assert!(p >= first && p <= last);
    }
}
