extern crate std;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::{
    forward::FrameInfo,
    maps::{ENDPOINT_FLAG_IPV6, ENDPOINT_KIND_VETH},
    packet::{ETH_P_IPV6, PEEK_LEN, classify, frame_info, headers_len, tests::Linear},
};

const SRC: [u8; 16] = [0xfd, 0x41, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const DST: [u8; 16] = [0xfd, 0x41, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

/// Ethernet + IPv6 (next header `next`) + `ext` (extension headers, already chained) +
/// `l4`; the payload length covers `ext` and `l4`.
pub(crate) fn ipv6_frame(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&SRC);
    f.extend_from_slice(&DST);
    f.extend_from_slice(ext);
    f.extend_from_slice(l4);
    f
}

/// An 8-byte extension header (hop-by-hop, destination options: PadN) leading to `next`.
pub(crate) fn ext8(next: u8) -> [u8; 8] {
    [next, 0, 1, 4, 0, 0, 0, 0]
}

/// A fragment header leading to `next`, at `offset` (in 8-byte units), M flag `more`.
pub(crate) fn frag(next: u8, offset: u16, more: bool) -> [u8; 8] {
    let of = (offset << 3) | u16::from(more);
    let [a, b] = of.to_be_bytes();
    [next, 0, a, b, 0, 0, 0, 7]
}

fn c(f: &[u8]) -> Classified {
    classify(f)
}

#[test]
fn the_chain_walk_finds_the_l4_header_behind_extension_headers() {
    let tcp = [0u8; 20];
    let udp = [0u8; 8];
    let mut two = Vec::new();
    two.extend_from_slice(&ext8(NEXT_DEST_OPTS));
    two.extend_from_slice(&ext8(IPPROTO_TCP));
    // (frame, class, L4 offset, protocol)
    for (f, class, at, proto) in [
        (
            ipv6_frame(IPPROTO_TCP, &[], &tcp),
            PacketClass::Ipv6Tcp,
            54,
            6,
        ),
        (
            ipv6_frame(IPPROTO_UDP, &[], &udp),
            PacketClass::Ipv6Udp,
            54,
            17,
        ),
        (
            ipv6_frame(IPPROTO_ICMPV6, &[], &udp),
            PacketClass::Ipv6Icmp,
            54,
            58,
        ),
        (ipv6_frame(132, &[], &[]), PacketClass::Ipv6Other, 54, 132),
        (
            ipv6_frame(NEXT_HOP_BY_HOP, &two, &tcp),
            PacketClass::Ipv6Tcp,
            70,
            6,
        ),
        // A first fragment carries its L4 header; a later one has none.
        (
            ipv6_frame(NEXT_FRAGMENT, &frag(IPPROTO_UDP, 0, true), &udp),
            PacketClass::Ipv6Fragment,
            62,
            17,
        ),
        (
            ipv6_frame(NEXT_FRAGMENT, &frag(IPPROTO_UDP, 185, false), &udp),
            PacketClass::Ipv6Fragment,
            0,
            17,
        ),
        // An atomic fragment (offset 0, no more) is a whole packet (RFC 6946).
        (
            ipv6_frame(NEXT_FRAGMENT, &frag(IPPROTO_UDP, 0, false), &udp),
            PacketClass::Ipv6Udp,
            62,
            17,
        ),
    ] {
        let got = c(&f);
        assert_eq!(
            (got.class, got.l4_offset, got.proto),
            (class, at, proto),
            "{f:?}"
        );
    }
}

#[test]
fn what_the_walk_cannot_read_is_unparsed_or_truncated() {
    // Five extension headers: one more than the walk takes.
    let mut five = Vec::new();
    for _ in 0..4 {
        five.extend_from_slice(&ext8(NEXT_DEST_OPTS));
    }
    five.extend_from_slice(&ext8(IPPROTO_UDP));
    let long = ipv6_frame(NEXT_DEST_OPTS, &five, &[0; 8]);
    assert_eq!(c(&long).class, PacketClass::Ipv6Unparsed);
    // One header of 72 bytes: past MAX_EXT_LEN.
    let mut big = [0u8; 72];
    big[0] = IPPROTO_UDP;
    big[1] = 8;
    let f = ipv6_frame(NEXT_HOP_BY_HOP, &big, &[0; 8]);
    assert_eq!(c(&f).class, PacketClass::Ipv6Unparsed);
    // Wrong version; a payload length beyond the frame; a short fixed header.
    let mut v = ipv6_frame(IPPROTO_UDP, &[], &[0; 8]);
    v[14] = 0x40;
    assert_eq!(c(&v).class, PacketClass::Ipv6Unparsed);
    let mut beyond = ipv6_frame(IPPROTO_UDP, &[], &[0; 8]);
    beyond[19] = 9;
    assert_eq!(c(&beyond).class, PacketClass::Ipv6Unparsed);
    let whole = ipv6_frame(IPPROTO_TCP, &[], &[0; 20]);
    assert_eq!(c(&whole[..50]).class, PacketClass::Ipv6Unparsed);
    // A TCP header cut short inside the packet.
    let short = ipv6_frame(IPPROTO_TCP, &[], &[0; 12]);
    assert_eq!(c(&short).class, PacketClass::TruncatedL4);
    assert_eq!(
        frame_info(&short[..], c(&short)),
        FrameInfo::Ipv6Unparsed,
        "a cut IPv6 L4 header is not checked, so it is not passed either"
    );
}

/// An ICMPv6 message of `ty` with `body` after the 4-byte type/code/checksum.
fn icmp6(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut m = std::vec![ty, 0, 0, 0];
    m.extend_from_slice(body);
    ipv6_frame(IPPROTO_ICMPV6, &[], &m)
}

/// A neighbour advertisement (or solicitation) body: flags, `target`, `options`.
fn nd(target: [u8; 16], options: &[u8]) -> Vec<u8> {
    let mut b = std::vec![0x60, 0, 0, 0];
    b.extend_from_slice(&target);
    b.extend_from_slice(options);
    b
}

fn kind(f: &[u8]) -> Option<Ipv6Kind> {
    ipv6_kind(f, c(f))
}

#[test]
fn the_guard_sees_router_messages_neighbour_discovery_and_dhcpv6_servers() {
    let other_mac = [2, 0, 0, 0, 0, 9];
    let tlla = [2, 1, 2, 0, 0, 0, 0, 9];
    let nonce = [14, 1, 1, 2, 3, 4, 5, 6];
    let mut nonce_then_tlla = nonce.to_vec();
    nonce_then_tlla.extend_from_slice(&tlla);
    let mut dhcp = std::vec![0u8; 8];
    dhcp[..2].copy_from_slice(&547u16.to_be_bytes());
    let mut dhcp_client = std::vec![0u8; 8];
    dhcp_client[..2].copy_from_slice(&546u16.to_be_bytes());
    for (f, want) in [
        (icmp6(134, &[0; 12]), Some(Ipv6Kind::ROUTER_MESSAGE)),
        (icmp6(137, &[0; 36]), Some(Ipv6Kind::ROUTER_MESSAGE)),
        (icmp6(133, &[0; 4]), Some(Ipv6Kind::PLAIN)),
        (icmp6(128, &[0; 4]), Some(Ipv6Kind::PLAIN)),
        (icmp6(143, &[0; 4]), Some(Ipv6Kind::LISTENER_REPORT)),
        (
            icmp6(136, &nd(DST, &tlla)),
            Some(Ipv6Kind::neighbor_advert(DST, other_mac)),
        ),
        // The link-layer option found behind another option (a nonce).
        (
            icmp6(136, &nd(DST, &nonce_then_tlla)),
            Some(Ipv6Kind::neighbor_advert(DST, other_mac)),
        ),
        (
            icmp6(136, &nd(DST, &[])),
            Some(Ipv6Kind::neighbor_advert(DST, [0; 6])),
        ),
        // A source link-layer option in a solicitation.
        (
            icmp6(135, &nd(DST, &[1, 1, 2, 0, 0, 0, 0, 9])),
            Some(Ipv6Kind::neighbor_solicit(other_mac)),
        ),
        // An advertisement too short to hold its target cannot be checked.
        (icmp6(136, &[0; 8]), None),
        (
            ipv6_frame(IPPROTO_UDP, &[], &dhcp),
            Some(Ipv6Kind::DHCP_SERVER),
        ),
        (
            ipv6_frame(IPPROTO_UDP, &[], &dhcp_client),
            Some(Ipv6Kind::PLAIN),
        ),
    ] {
        assert_eq!(kind(&f), want, "{f:?}");
    }
    // A router advertisement in a first fragment is still seen; a later fragment has
    // no header to look at.
    let ra = [134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let first = ipv6_frame(NEXT_FRAGMENT, &frag(IPPROTO_ICMPV6, 0, true), &ra);
    assert_eq!(kind(&first), Some(Ipv6Kind::ROUTER_MESSAGE));
    let later = ipv6_frame(NEXT_FRAGMENT, &frag(IPPROTO_ICMPV6, 3, false), &ra);
    assert_eq!(kind(&later), Some(Ipv6Kind::PLAIN));
}

#[test]
fn link_local_is_the_modified_eui64_of_the_mac() {
    // 52:54:00:12:34:56 → fe80::5054:ff:fe12:3456 (what Linux forms).
    assert_eq!(
        link_local(MAC),
        [
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56
        ]
    );
}

fn endpoint() -> EndpointValue {
    EndpointValue {
        ip: [10, 0, 0, 2],
        ifindex: 10,
        mac: MAC,
        host_mac: [2, 0xee, 0, 0, 0, 1],
        network_id: 1,
        kind: ENDPOINT_KIND_VETH,
        flags: ENDPOINT_FLAG_IPV6,
    }
}

/// What the IPv6 endpoint map says of `endpoint()`: SRC is its.
fn owns(a: [u8; 16]) -> bool {
    a == SRC
}

#[test]
fn the_guard_passes_only_what_the_endpoint_may_say() {
    let a = endpoint();
    let ll = link_local(a.mac);
    let gateway = [0xfd, 0x41, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let na = Ipv6Kind::neighbor_advert;
    let ns = Ipv6Kind::neighbor_solicit;
    use DropReason::*;
    // (source, kind, verdict)
    for (src, k, want) in [
        (SRC, Ipv6Kind::PLAIN, None),
        (ll, Ipv6Kind::PLAIN, None),
        (DST, Ipv6Kind::PLAIN, Some(SpoofedIp)),
        (
            link_local([2, 0, 0, 0, 0, 9]),
            Ipv6Kind::PLAIN,
            Some(SpoofedIp),
        ),
        // `::` only for duplicate address detection and MLD.
        ([0; 16], ns([0; 6]), None),
        ([0; 16], Ipv6Kind::LISTENER_REPORT, None),
        ([0; 16], Ipv6Kind::PLAIN, Some(SpoofedIp)),
        ([0; 16], na(SRC, [0; 6]), Some(SpoofedIp)),
        (ll, Ipv6Kind::ROUTER_MESSAGE, Some(RouterMessage)),
        (SRC, Ipv6Kind::DHCP_SERVER, Some(DhcpServer)),
        // Its own addresses, with its own MAC or none: fine.
        (ll, na(SRC, a.mac), None),
        (ll, na(ll, [0; 6]), None),
        (ll, ns(a.mac), None),
        // Another's address, or its own with another MAC: forged.
        (ll, na(gateway, [0; 6]), Some(SpoofedNd)),
        (ll, na(DST, a.mac), Some(SpoofedNd)),
        (ll, na(SRC, [2, 0, 0, 0, 0, 9]), Some(SpoofedNd)),
        (ll, ns([2, 0, 0, 0, 0, 9]), Some(SpoofedNd)),
    ] {
        assert_eq!(guard(&a, src, k, owns), want, "{src:?} {k:?}");
    }
}

#[test]
fn only_global_unicast_sent_to_the_gateway_may_take_the_uplink_shortcut() {
    let a = endpoint();
    let global = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    assert!(uplink_candidate6(&a, a.host_mac, global));
    assert!(uplink_candidate6(&a, a.host_mac, DST));
    assert!(!uplink_candidate6(&a, [2, 0, 0, 0, 0, 9], global));
    let mut loopback = [0u8; 16];
    loopback[15] = 1;
    for dst in [
        [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        link_local(MAC),
        [0xfe, 0xbf, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0; 16],
        loopback,
    ] {
        assert!(!uplink_candidate6(&a, a.host_mac, dst), "{dst:?}");
        assert!(!routable6(dst), "{dst:?}");
    }
    assert!(routable6(global) && routable6(DST));
    // The edges of fe80::/10 and of the one-word prefixes: fec0:: and 2:: are routable.
    let mut two = [0u8; 16];
    two[15] = 2;
    for addr in [[0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], two] {
        assert!(routable6(addr), "{addr:?}");
    }
}

proptest! {
    /// Classification never reads outside the frame, whatever the bytes after an IPv6
    /// ethertype.
    #[test]
    fn any_bytes_classify(body in proptest::collection::vec(any::<u8>(), 0..160)) {
        let mut f = std::vec![0u8; 12];
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        f.extend_from_slice(&body);
        let got = classify(&f[..]);
        prop_assert!(got.l4_offset <= f.len());
        let _ = frame_info(&f[..], got);
    }

    /// On IPv6 frames with any chain of up to five extension headers and any L4 bytes,
    /// a frame whose readable part is `headers_len` long classifies, and yields what the
    /// guard reads, exactly as the whole frame.
    #[test]
    fn headers_len_is_enough_for_ipv6(
        chain in proptest::collection::vec(
            prop_oneof![Just(NEXT_HOP_BY_HOP), Just(NEXT_DEST_OPTS), Just(NEXT_ROUTING)], 0..6),
        proto in prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP), Just(IPPROTO_ICMPV6), any::<u8>()],
        l4 in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut ext = Vec::new();
        for (i, _) in chain.iter().enumerate() {
            ext.extend_from_slice(&ext8(chain.get(i + 1).copied().unwrap_or(proto)));
        }
        let first = chain.first().copied().unwrap_or(proto);
        let f = ipv6_frame(first, &ext, &l4);
        let peek = f.load::<PEEK_LEN>(0);
        let n = headers_len(peek, f.len());
        let cut = Linear { bytes: &f, linear: n };
        let (whole, part) = (classify(&f[..]), classify(&cut));
        prop_assert_eq!(whole, part);
        prop_assert_eq!(frame_info(&f[..], whole), frame_info(&cut, part));
    }
}
