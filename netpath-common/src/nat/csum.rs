//! RFC 1624 incremental checksum updates, for addresses of either family, and UDP's rules
//! for the zero checksum.

use super::Address;
use crate::{
    ipv6::IPPROTO_ICMPV6,
    packet::{IPPROTO_TCP, IPPROTO_UDP},
};

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

/// The checksum `sum` after an address of either family changes `from` → `to`: one
/// [`csum_replace2`] per 16-bit word (IPv4: exactly [`csum_replace4`]).
#[inline(always)]
pub fn csum_replace_addr<A: Address>(sum: u16, from: A, to: A) -> u16 {
    let mut s = sum;
    // Verifier: a constant trip count (1 or 4 words).
    for i in 0..A::WORDS {
        let (f, t) = (from.word(i), to.word(i));
        s = csum_replace2(s, (f >> 16) as u16, (t >> 16) as u16);
        s = csum_replace2(s, f as u16, t as u16);
    }
    s
}

/// The L4 checksum `sum` of a TCP/UDP segment or ICMP/ICMPv6 echo (`proto`) after its
/// source address changes `from_addr` → `to_addr` and its source port (ICMP:
/// identifier) `from_port` → `to_port`. TCP, UDP and ICMPv6 checksums cover the address
/// through the pseudo-header, ICMP's does not; a zero UDP checksum over IPv4 stays zero
/// (none), and a computed zero is sent as 0xffff.
#[inline(always)]
pub fn l4_csum_after_source_change<A: Address>(
    proto: u8,
    sum: u16,
    from_addr: A,
    to_addr: A,
    from_port: u16,
    to_port: u16,
) -> u16 {
    match proto {
        // IPv6: a UDP checksum is mandatory (RFC 8200 §8.1), 0 is not "none" but a
        // value to update like any other; a computed 0 is still sent as 0xffff.
        IPPROTO_UDP if A::WORDS == 4 => match csum_replace2(
            csum_replace_addr(sum, from_addr, to_addr),
            from_port,
            to_port,
        ) {
            0 => 0xffff,
            s => s,
        },
        IPPROTO_UDP => udp_csum(
            sum,
            csum_replace2(
                csum_replace_addr(sum, from_addr, to_addr),
                from_port,
                to_port,
            ),
        ),
        IPPROTO_TCP | IPPROTO_ICMPV6 => csum_replace2(
            csum_replace_addr(sum, from_addr, to_addr),
            from_port,
            to_port,
        ),
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
