extern crate std;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

fn peek(f: &[u8]) -> Option<[u8; PEEK_LEN]> {
    f.load::<PEEK_LEN>(0)
}

#[test]
fn headers_len_covers_what_is_read_and_no_payload() {
    let payload = [0u8; 100];
    let mut tcp = [0u8; 32];
    tcp[12] = 8 << 4; // data offset 8: 12 bytes of options
    tcp.iter_mut().skip(20).for_each(|b| *b = 1);
    let with_payload = |l4: &[u8]| [l4, &payload[..]].concat();
    // TCP without and with IP options: Ethernet + IP header + 20 (the fixed header).
    let f = ipv4_frame(IPPROTO_TCP, &[], &with_payload(&tcp), 0);
    assert_eq!(headers_len(peek(&f), f.len()), 14 + 20 + 20);
    let f = ipv4_frame(IPPROTO_TCP, &[1; 8], &with_payload(&tcp), 0);
    assert_eq!(headers_len(peek(&f), f.len()), 14 + 28 + 20);
    let f = ipv4_frame(IPPROTO_UDP, &[], &with_payload(&[0; 8]), 0);
    assert_eq!(headers_len(peek(&f), f.len()), 14 + 20 + 8);
    // ICMP: room for an error's quoted IPv4 and TCP headers.
    let f = ipv4_frame(IPPROTO_ICMP, &[], &with_payload(&[0; 8]), 0);
    assert_eq!(headers_len(peek(&f), f.len()), 14 + 20 + 8 + 20 + 20);
    let f = ipv4_frame(47, &[], &with_payload(&[]), 0);
    assert_eq!(headers_len(peek(&f), f.len()), 14 + 20);
    // Not IPv4: the Ethernet header; never more than the frame.
    let mut arp = f.clone();
    arp[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    assert_eq!(headers_len(peek(&arp), arp.len()), 14);
    let short = ipv4_frame(IPPROTO_TCP, &[], &tcp[..10], 0);
    assert_eq!(headers_len(peek(&short), short.len()), short.len());
    // Peek not possible: everything a program may read, capped at the frame.
    assert_eq!(headers_len(None, 1000), MAX_HEADERS_LEN);
    assert_eq!(headers_len(None, 20), 20);
}

/// A frame of which only the first `linear` bytes can be read, like an skb with its
/// payload in page fragments.
pub(crate) struct Linear<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) linear: usize,
}

impl Frame for Linear<'_> {
    fn frame_len(&self) -> usize {
        self.bytes.len()
    }
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.bytes[..self.linear].load(offset)
    }
}

proptest! {
    /// On any bytes the length stays within the frame and MAX_HEADERS_LEN; on IPv4
    /// frames of any protocol, options and L4 bytes, a frame whose readable part is
    /// just that long classifies and yields addresses exactly as the whole frame.
    #[test]
    fn headers_len_is_bounded_and_enough(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        proto in prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP), Just(IPPROTO_ICMP), any::<u8>()],
        options in 0usize..=10,
        l4 in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let n = headers_len(peek(&bytes), bytes.len());
        prop_assert!(n <= bytes.len() && n <= MAX_HEADERS_LEN);
        let f = ipv4_frame(proto, &[1; 40][..options * 4], &l4, 0);
        let n = headers_len(peek(&f), f.len());
        let cut = Linear { bytes: &f, linear: n };
        let (whole, part) = (classify(&f[..]), classify(&cut));
        prop_assert_eq!(whole, part);
        prop_assert_eq!(frame_info(&f[..], whole), frame_info(&cut, part));
    }
}

/// Builds Ethernet + IPv4 (+ options) + L4 payload with a valid header checksum.
pub(crate) fn ipv4_frame(proto: u8, options: &[u8], l4: &[u8], frag: u16) -> Vec<u8> {
    let ihl = 20 + options.len();
    let total = ihl + l4.len();
    let mut f = Vec::new();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let mut ip = Vec::new();
    ip.push(0x40 | (ihl / 4) as u8);
    ip.push(0);
    ip.extend_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34]);
    ip.extend_from_slice(&frag.to_be_bytes());
    ip.push(64);
    ip.push(proto);
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&[10, 200, 0, 2, 10, 200, 0, 3]);
    ip.extend_from_slice(options);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

fn class(f: &[u8]) -> PacketClass {
    classify(f).class
}

#[test]
fn tcp_udp_icmp_other() {
    // (protocol, IP options, L4 bytes, class, L4 offset)
    for (proto, options, l4, class, l4_offset) in [
        (IPPROTO_TCP, &[][..], &[0; 20][..], PacketClass::Ipv4Tcp, 34),
        (IPPROTO_UDP, &[], &[0; 8], PacketClass::Ipv4Udp, 34),
        (IPPROTO_ICMP, &[], &[0; 8], PacketClass::Ipv4Icmp, 34),
        (47, &[], &[], PacketClass::Ipv4Other, 34),
        // IP options move the L4 offset.
        (
            IPPROTO_UDP,
            &[1, 1, 1, 0],
            &[0; 8],
            PacketClass::Ipv4Udp,
            38,
        ),
    ] {
        let f = ipv4_frame(proto, options, l4, 0);
        let c = Classified {
            class,
            l4_offset,
            proto,
        };
        assert_eq!(classify(&f[..]), c, "protocol {proto}, options {options:?}");
    }
}

#[test]
fn truncations() {
    assert_eq!(class(&[0u8; 13][..]), PacketClass::TruncatedEthernet);
    let tcp = ipv4_frame(IPPROTO_TCP, &[], &[0; 20], 0);
    // IP header cut short.
    assert_eq!(class(&tcp[..14 + 19]), PacketClass::MalformedIpv4);
    // TCP header cut short (frame and IP total length agree).
    let short = ipv4_frame(IPPROTO_TCP, &[], &[0; 10], 0);
    assert_eq!(class(&short), PacketClass::TruncatedL4);
    // Frame shorter than the IP total length says.
    assert_eq!(class(&tcp[..tcp.len() - 1]), PacketClass::MalformedIpv4);
    // Ethernet padding after the datagram is fine.
    let mut padded = ipv4_frame(IPPROTO_UDP, &[], &[0; 8], 0);
    padded.extend_from_slice(&[0; 18]);
    assert_eq!(class(&padded), PacketClass::Ipv4Udp);
}

/// An skb whose payload is in fragments: only the head is readable.
struct Paged<'a> {
    head: &'a [u8],
    len: usize,
}
impl Frame for Paged<'_> {
    fn frame_len(&self) -> usize {
        self.len
    }
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.head.load(offset)
    }
}

#[test]
fn gso_packet_with_payload_in_fragments_is_tcp() {
    let f = ipv4_frame(IPPROTO_TCP, &[], &[0; 20 + 60000], 0);
    let paged = Paged {
        head: &f[..14 + 20 + 20],
        len: f.len(),
    };
    assert_eq!(classify(&paged).class, PacketClass::Ipv4Tcp);
    // …but a frame shorter than its IP total length is still malformed.
    let short = Paged {
        head: &f[..54],
        len: f.len() - 1,
    };
    assert_eq!(classify(&short).class, PacketClass::MalformedIpv4);
}

#[test]
fn bad_version_and_ihl() {
    let mut f = ipv4_frame(IPPROTO_UDP, &[], &[0; 8], 0);
    f[14] = 0x65;
    assert_eq!(class(&f), PacketClass::MalformedIpv4);
    f[14] = 0x44;
    assert_eq!(class(&f), PacketClass::MalformedIpv4);
}

#[test]
fn fragments() {
    // (flags and fragment offset, class)
    for (frag, class) in [
        // More-fragments set, offset 0: first fragment.
        (0x2000, PacketClass::Ipv4Fragment),
        // Offset 185*8.
        (185, PacketClass::Ipv4Fragment),
        // Don't-fragment alone is not a fragment.
        (0x4000, PacketClass::Ipv4Udp),
    ] {
        let f = ipv4_frame(IPPROTO_UDP, &[], &[0; 8], frag);
        assert_eq!(classify(&f[..]).class, class, "{frag:#06x}");
    }
}

#[test]
fn non_ip() {
    let mut arp = [0u8; 42];
    arp[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    assert_eq!(class(&arp), PacketClass::Arp);
    // The IPv6 ethertype over a header that is not version 6: see `crate::ipv6`.
    let mut v6 = [0u8; 54];
    v6[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    assert_eq!(class(&v6), PacketClass::Ipv6Unparsed);
    let mut vlan = [0u8; 64];
    vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    assert_eq!(class(&vlan), PacketClass::OtherEthertype);
}

#[test]
fn frame_info_of_ipv4_and_arp() {
    use crate::forward::FrameInfo;
    let f = ipv4_frame(IPPROTO_UDP, &[], &[0; 8], 0);
    assert_eq!(
        frame_info(&f[..], classify(&f[..])),
        FrameInfo::Ipv4 {
            src: [10, 200, 0, 2],
            dst: [10, 200, 0, 3]
        }
    );
    let mut arp = [0u8; 42];
    arp[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    arp[14..20].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    arp[22..28].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    arp[28..32].copy_from_slice(&[10, 0, 0, 9]);
    assert_eq!(
        frame_info(&arp[..], Classified::only(PacketClass::Arp)),
        FrameInfo::Arp {
            sha: [2, 0, 0, 0, 0, 9],
            spa: [10, 0, 0, 9]
        }
    );
    // Not Ethernet/IPv4 ARP, or too short: not interpreted.
    arp[15] = 6;
    assert_eq!(
        frame_info(&arp[..], Classified::only(PacketClass::Arp)),
        FrameInfo::Other
    );
    assert_eq!(
        frame_info(&arp[..30], Classified::only(PacketClass::Arp)),
        FrameInfo::Other
    );
    // A short L4 header does not hide an IPv4 packet's addresses (its source is checked).
    let short = ipv4_frame(IPPROTO_UDP, &[], &[0; 4], 0);
    assert_eq!(classify(&short[..]).class, PacketClass::TruncatedL4);
    assert!(matches!(
        frame_info(&short[..], classify(&short[..])),
        FrameInfo::Ipv4 {
            src: [10, 200, 0, 2],
            ..
        }
    ));
}

#[test]
fn checksum_of_header_with_checksum_is_zero() {
    let f = ipv4_frame(IPPROTO_TCP, &[7, 4, 0, 0], &[0; 20], 0);
    assert_eq!(checksum(&f[14..38]), 0);
}

proptest! {
    /// Any byte string classifies without panicking, and IPv4 L4 offsets stay
    /// inside the frame.
    #[test]
    fn classify_total(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let c = classify(&bytes[..]);
        if matches!(c.class, PacketClass::Ipv4Tcp | PacketClass::Ipv4Udp | PacketClass::Ipv4Icmp) {
            prop_assert!(c.l4_offset >= 34 && c.l4_offset < bytes.len());
        }
    }

    /// Cutting a valid TCP frame anywhere never yields a TCP classification.
    #[test]
    fn truncated_tcp_is_never_tcp(cut in 0usize..54) {
        let f = ipv4_frame(IPPROTO_TCP, &[], &[0; 20], 0);
        prop_assert_ne!(class(&f[..cut]), PacketClass::Ipv4Tcp);
    }
}
