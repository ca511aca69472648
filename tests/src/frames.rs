//! Crafted frames for BPF_PROG_TEST_RUN, with valid checksums.

use netpath_common::packet::{
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, checksum,
};

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const SRC_IP: [u8; 4] = [10, 200, 0, 2];
pub const DST_IP: [u8; 4] = [10, 200, 0, 3];

fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// Ethernet + IPv4 (with `options`) + `l4` bytes; IP header checksum valid.
pub fn ipv4(proto: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4) && options.len() <= 40);
    let ihl = 20 + options.len();
    let total = (ihl + l4.len()) as u16;
    let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0xbe, 0xef, 0x40, 0x00, 64, proto, 0, 0]);
    ip.extend_from_slice(&SRC_IP);
    ip.extend_from_slice(&DST_IP);
    ip.extend_from_slice(options);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = ethernet(ETH_P_IP);
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// One's-complement sum of the IPv4 pseudo-header plus `l4`, for TCP/UDP checksums.
fn l4_checksum(proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&SRC_IP);
    pseudo.extend_from_slice(&DST_IP);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(l4);
    checksum(&pseudo)
}

/// A TCP SYN 40000 → 80 with `payload`, checksums valid.
pub fn tcp(payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&80u16.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = l4_checksum(IPPROTO_TCP, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(IPPROTO_TCP, &[], &t)
}

/// A UDP datagram 40000 → 53 with `payload`, checksums valid.
pub fn udp(payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&40000u16.to_be_bytes());
    u.extend_from_slice(&53u16.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = l4_checksum(IPPROTO_UDP, &u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    ipv4(IPPROTO_UDP, &[], &u)
}

/// An ICMP echo request with `payload`.
pub fn icmp_echo(payload: &[u8]) -> Vec<u8> {
    let mut i = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    i.extend_from_slice(payload);
    let c = checksum(&i);
    i[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(IPPROTO_ICMP, &[], &i)
}

/// An ARP request who-has DST_IP tell SRC_IP (broadcast).
pub fn arp_request() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&SRC_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&DST_IP);
    f
}

/// An IPv6 frame (header + 8 bytes of UDP header) from fe80::a to fe80::b.
pub fn ipv6_udp() -> Vec<u8> {
    udp6(link_local(SRC_MAC), 40000, link_local(DST_MAC), 53, &[])
}

// ---------------------------------------------------------------------------------------
// IPv6.

/// The IPv6 addresses of the endpoints behind `SRC_MAC` and `DST_MAC` in tests.
pub const SRC_IP6: [u8; 16] = [0xfd, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const DST_IP6: [u8; 16] = [0xfd, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
pub const IPPROTO_ICMPV6: u8 = 58;

pub use netpath_common::ipv6::link_local;

/// Ethernet + IPv6 from `src` to `dst`: next header `next`, then `ext` (extension
/// headers, already chained to the L4 protocol) and `l4`, hop limit 64.
pub fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], ext: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut f = ethernet(ETH_P_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(ext);
    f.extend_from_slice(l4);
    f
}

/// `l4` (of protocol `proto`, its checksum field at `csum_at` zero) with its checksum
/// over the IPv6 pseudo-header (RFC 8200 §8.1).
fn with_csum6(proto: u8, src: [u8; 16], dst: [u8; 16], mut l4: Vec<u8>, csum_at: usize) -> Vec<u8> {
    let c = checksum(&pseudo6(proto, src, dst, &l4));
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    l4
}

/// The IPv6 pseudo-header (RFC 8200 §8.1) and `l4`: what an L4 checksum covers.
fn pseudo6(proto: u8, src: [u8; 16], dst: [u8; 16], l4: &[u8]) -> Vec<u8> {
    let len = (l4.len() as u32).to_be_bytes();
    [&src[..], &dst, &len, &[0, 0, 0, proto], l4].concat()
}

/// Whether the L4 checksum (TCP, UDP, ICMPv6) of an IPv6 frame without extension
/// headers verifies, recomputed over the whole pseudo-header and segment, and is not
/// zero (which IPv6 UDP forbids). For checking translations independently of how the
/// expected frames were built.
pub fn l4_csum6_valid(frame: &[u8]) -> bool {
    let (next, l4) = (frame[20], &frame[54..]);
    let at = match next {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => 2,
    };
    let src: [u8; 16] = frame[22..38].try_into().unwrap();
    let dst: [u8; 16] = frame[38..54].try_into().unwrap();
    l4[at..at + 2] != [0, 0] && checksum(&pseudo6(next, src, dst, l4)) == 0
}

/// A UDP header (checksum zero) and `payload`.
fn udp_header(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A UDP datagram over IPv6, checksum valid.
pub fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, payload: &[u8]) -> Vec<u8> {
    let u = udp_header(sport, dport, payload);
    ipv6(
        IPPROTO_UDP,
        src,
        dst,
        &[],
        &with_csum6(IPPROTO_UDP, src, dst, u, 6),
    )
}

/// A TCP segment (ACK, PSH) over IPv6, checksum valid.
pub fn tcp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    ipv6(
        IPPROTO_TCP,
        src,
        dst,
        &[],
        &with_csum6(IPPROTO_TCP, src, dst, t, 16),
    )
}

/// An ICMPv6 message of type `ty`, code 0, with `body` after the checksum; checksum
/// valid.
pub fn icmp6(src: [u8; 16], dst: [u8; 16], ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(body);
    let m = with_csum6(IPPROTO_ICMPV6, src, dst, m, 2);
    ipv6(IPPROTO_ICMPV6, src, dst, &[], &m)
}

/// A neighbour advertisement (solicited, override) from `src` claiming `target` at
/// `lladdr` (its target link-layer address option), to the all-nodes group.
pub fn neighbor_advert(src: [u8; 16], target: [u8; 16], lladdr: [u8; 6]) -> Vec<u8> {
    let mut body = vec![0x60, 0, 0, 0];
    body.extend_from_slice(&target);
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&lladdr);
    icmp6(src, ALL_NODES, 136, &body)
}

/// ff02::1, all nodes on the link.
pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Ethernet + IPv4 from `src` to `dst` carrying `l4` (protocol `proto`), with a valid
/// header checksum and the given IP flags/fragment field.
pub fn ipv4_between(proto: u8, src: [u8; 4], dst: [u8; 4], frag: u16, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34]);
    ip.extend_from_slice(&frag.to_be_bytes());
    ip.extend_from_slice(&[64, proto, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = ethernet(ETH_P_IP);
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

fn pseudo_sum(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> u16 {
    let mut p = Vec::new();
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(l4);
    checksum(&p)
}

/// TCP (ACK|PSH) `src:sport` → `dst:dport` with `payload`, all checksums valid.
pub fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    tcp4_flags(src, sport, dst, dport, TCP_ACK | TCP_PSH, payload)
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// [`tcp4`] with TCP flags `flags`.
pub fn tcp4_flags(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&7u32.to_be_bytes());
    t.extend_from_slice(&9u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0x20, 0x00, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = pseudo_sum(IPPROTO_TCP, src, dst, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4_between(IPPROTO_TCP, src, dst, 0x4000, &t)
}

/// UDP `src:sport` → `dst:dport` with `payload`; checksum valid, or 0 ("none") if
/// `no_checksum`.
pub fn udp4(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    payload: &[u8],
    no_checksum: bool,
) -> Vec<u8> {
    let mut u = udp_header(sport, dport, payload);
    if !no_checksum {
        let c = match pseudo_sum(IPPROTO_UDP, src, dst, &u) {
            0 => 0xffff,
            c => c,
        };
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    ipv4_between(IPPROTO_UDP, src, dst, 0, &u)
}

/// ICMP echo request (`kind` 8) or reply (0) with identifier `id`.
pub fn icmp4(src: [u8; 4], dst: [u8; 4], kind: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut i = vec![kind, 0, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&1u16.to_be_bytes());
    i.extend_from_slice(payload);
    let c = checksum(&i);
    i[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_between(IPPROTO_ICMP, src, dst, 0, &i)
}

/// An ICMP error (`kind`/`code`, e.g. 3/4 "fragmentation needed" with the next-hop MTU
/// in `rest`) from `src` to `dst` quoting `quoted`: an IP packet (a frame from this
/// module without its Ethernet header, possibly cut short). Checksum valid.
pub fn icmp4_error(
    src: [u8; 4],
    dst: [u8; 4],
    kind: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut i = vec![kind, code, 0, 0];
    i.extend_from_slice(&rest);
    i.extend_from_slice(quoted);
    let c = checksum(&i);
    i[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_between(IPPROTO_ICMP, src, dst, 0, &i)
}

/// `frame` (Ethernet + IPv4 without options) with TTL `ttl` and its header checksum
/// recomputed.
pub fn with_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
    frame[22] = ttl;
    frame[24..26].fill(0);
    let c = checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    frame
}

/// `frame` as a router forwards it: to `dst_mac` from `src_mac`, TTL one lower, header
/// checksum recomputed.
pub fn routed(frame: Vec<u8>, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let ttl = frame[22] - 1;
    let mut f = with_ttl(frame, ttl);
    f[..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f
}

/// An IPv6 `frame` as a router forwards it: to `dst_mac` from `src_mac`, hop limit one
/// lower (IPv6 has no header checksum).
pub fn routed6(mut frame: Vec<u8>, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    frame[21] -= 1;
    frame[..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&src_mac);
    frame
}

/// An IPv6 `frame` with hop limit `hops`.
pub fn with_hop_limit(mut frame: Vec<u8>, hops: u8) -> Vec<u8> {
    frame[21] = hops;
    frame
}

/// The pieces of a datagram's L4 part cut at `cuts` (offsets, multiples of 8): each
/// piece's start and whether more follow.
fn pieces<'a>(l4: &'a [u8], cuts: &[usize]) -> Vec<(usize, bool, &'a [u8])> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(l4.len());
    bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| (w[0], i + 2 < bounds.len(), &l4[w[0]..w[1]]))
        .collect()
}

/// The IPv4 fragments of `frame` (Ethernet + IPv4 without options, as this module builds
/// them), with identification `id`: its L4 part (header, payload, checksums as they are)
/// cut at `cuts`, each fragment with its offset and, but the last, more-fragments set.
pub fn fragments4(frame: &[u8], id: u16, cuts: &[usize]) -> Vec<Vec<u8>> {
    let (proto, l4) = (frame[23], &frame[34..]);
    let src: [u8; 4] = frame[26..30].try_into().unwrap();
    let dst: [u8; 4] = frame[30..34].try_into().unwrap();
    pieces(l4, cuts)
        .into_iter()
        .map(|(start, more, piece)| {
            let field = (start / 8) as u16 | if more { 0x2000 } else { 0 };
            let mut f = ipv4_between(proto, src, dst, field, piece);
            f[18..20].copy_from_slice(&id.to_be_bytes());
            with_ttl(f, frame[22])
        })
        .collect()
}

/// The IPv6 fragments of `frame` (Ethernet + IPv6 without extension headers), with
/// identification `id`: a fragment header right after the fixed header, its L4 part cut
/// at `cuts`.
pub fn fragments6(frame: &[u8], id: u32, cuts: &[usize]) -> Vec<Vec<u8>> {
    let (next, l4) = (frame[20], &frame[54..]);
    let src: [u8; 16] = frame[22..38].try_into().unwrap();
    let dst: [u8; 16] = frame[38..54].try_into().unwrap();
    pieces(l4, cuts)
        .into_iter()
        .map(|(start, more, piece)| {
            let [a, b] = ((start as u16) | u16::from(more)).to_be_bytes();
            let mut header = vec![next, 0, a, b];
            header.extend_from_slice(&id.to_be_bytes());
            with_hop_limit(ipv6(44, src, dst, &header, piece), frame[21])
        })
        .collect()
}
