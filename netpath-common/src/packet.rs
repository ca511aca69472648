//! Pure packet logic: Ethernet/IPv4/L4 header parsing and classification.
//!
//! The logic is written once against [`Frame`], a bounds-checked view of packet bytes.
//! The eBPF programs implement it over `XdpContext`/`TcContext` (each load is checked
//! against `data_end`, which is what the verifier needs); host tests implement it over
//! `&[u8]`. So the code that the tests drive is the code that runs in the kernel.

/// Ethernet header length (no VLAN tag).
pub const ETH_HLEN: usize = 14;
/// Offsets of the Ethernet destination and source addresses.
pub const ETH_DST: usize = 0;
pub const ETH_SRC: usize = 6;
/// Minimum IPv4 header length.
pub const IPV4_MIN_HLEN: usize = 20;
/// Frame offsets of IPv4 header fields (after an untagged Ethernet header): total
/// length, TTL (and the protocol after it, one 16-bit word for the checksum), header
/// checksum, source and destination address.
pub const IP_TOTAL_LEN: usize = ETH_HLEN + 2;
pub const IP_TTL: usize = ETH_HLEN + 8;
pub const IP_CSUM: usize = ETH_HLEN + 10;
pub const IP_SRC: usize = ETH_HLEN + 12;
pub const IP_DST: usize = ETH_HLEN + 16;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Minimum L4 header bytes we require before calling a packet TCP/UDP/ICMP.
pub const TCP_MIN_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
pub const ICMP_HLEN: usize = 8;

/// Bounds-checked read access to a frame's bytes.
pub trait Frame {
    /// Length of the whole frame. In the kernel this can exceed what [`Frame::load`]
    /// reaches: an skb may carry its payload in page fragments (GSO/GRO), and only the
    /// headers are guaranteed to be in the linear area.
    fn frame_len(&self) -> usize;

    /// Copies `N` bytes at `offset`, or `None` if they are not all inside the frame.
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    #[inline(always)]
    fn load_u8(&self, offset: usize) -> Option<u8> {
        self.load::<1>(offset).map(|b| b[0])
    }

    /// Big-endian (network order) u16.
    #[inline(always)]
    fn load_be16(&self, offset: usize) -> Option<u16> {
        self.load::<2>(offset).map(u16::from_be_bytes)
    }
}

impl Frame for [u8] {
    fn frame_len(&self) -> usize {
        self.len()
    }

    #[inline]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }
}

/// How many leading bytes of a frame the datapath reads: enough to look at it at all.
/// Before the headers are known, programs peek at this much.
pub const PEEK_LEN: usize = ETH_HLEN + 10;
/// The most any program reads: Ethernet, an IPv4 header with options, and the longest
/// L4 part read: an ICMP error's header, the quoted IPv4 header and the quoted TCP
/// header up to its checksum (errors must quote 8 bytes; most quote more).
pub const MAX_HEADERS_LEN: usize = ETH_HLEN + 60 + ICMP_HLEN + IPV4_MIN_HLEN + TCP_MIN_HLEN;

/// The leading bytes of a frame the datapath reads, given its first [`PEEK_LEN`] bytes
/// (`None`: the frame is shorter, or they are not at hand), capped at `frame_len`. tc
/// programs pull exactly this much into the skb's linear area and no more: pulling
/// more copies payload, and on a cloned skb (every TCP segment: TCP keeps the original
/// for retransmission) a pull reallocates the header, which cost more than the rest of
/// the program on small packets.
#[inline(always)]
pub fn headers_len(peek: Option<[u8; PEEK_LEN]>, frame_len: usize) -> usize {
    let need = match peek {
        Some(h) if u16::from_be_bytes([h[12], h[13]]) == ETH_P_IP => {
            // `& 0xf` keeps the sum provably small (≤ MAX_HEADERS_LEN) for the verifier.
            let ihl = ((h[ETH_HLEN] & 0x0f) as usize) * 4;
            let l4 = match h[ETH_HLEN + 9] {
                IPPROTO_TCP => TCP_MIN_HLEN,
                IPPROTO_UDP => UDP_HLEN,
                IPPROTO_ICMP => ICMP_HLEN + IPV4_MIN_HLEN + TCP_MIN_HLEN,
                _ => 0,
            };
            ETH_HLEN + ihl + l4
        }
        Some(_) => ETH_HLEN,
        // Unknown yet: everything a program may read.
        None => MAX_HEADERS_LEN,
    };
    if need < frame_len { need } else { frame_len }
}

counter_slots! {
    /// What a frame is, as far as netpath's datapath cares. Also the per-class counter slot.
    pub enum PacketClass {
        Ipv4Tcp => "ipv4_tcp",
        Ipv4Udp => "ipv4_udp",
        Ipv4Icmp => "ipv4_icmp",
        /// IPv4 with another L4 protocol.
        Ipv4Other => "ipv4_other",
        /// An IPv4 fragment (first or later): no L4 header the datapath may rely on.
        Ipv4Fragment => "ipv4_fragment",
        Arp => "arp",
        Ipv6 => "ipv6",
        /// Any other ethertype (including VLAN-tagged frames).
        OtherEthertype => "other_ethertype",
        /// Shorter than an Ethernet header.
        TruncatedEthernet => "truncated_ethernet",
        /// IPv4 ethertype but a short, wrong-version, bad-IHL or bad-length IP header.
        MalformedIpv4 => "malformed_ipv4",
        /// Valid IPv4 header but the TCP/UDP/ICMP header is cut short.
        TruncatedL4 => "truncated_l4",
    }
}

/// Result of [`classify`]: the class, and for IPv4 the header offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    pub class: PacketClass,
    /// Offset of the L4 header (meaningful for the `Ipv4Tcp/Udp/Icmp/Other` classes).
    pub l4_offset: usize,
}

impl Classified {
    const fn only(class: PacketClass) -> Self {
        Classified {
            class,
            l4_offset: 0,
        }
    }
}

/// Classifies an Ethernet frame. Never reads outside the frame.
#[inline(always)]
pub fn classify<F: Frame + ?Sized>(frame: &F) -> Classified {
    let Some(ethertype) = frame.load_be16(12) else {
        return Classified::only(PacketClass::TruncatedEthernet);
    };
    match ethertype {
        ETH_P_IP => classify_ipv4(frame),
        ETH_P_ARP => Classified::only(PacketClass::Arp),
        ETH_P_IPV6 => Classified::only(PacketClass::Ipv6),
        _ => Classified::only(PacketClass::OtherEthertype),
    }
}

#[inline(always)]
fn classify_ipv4<F: Frame + ?Sized>(frame: &F) -> Classified {
    const L3: usize = ETH_HLEN;
    // version/ihl, tos, total length, id, flags/fragment offset, ttl, protocol.
    let Some(hdr) = frame.load::<10>(L3) else {
        return Classified::only(PacketClass::MalformedIpv4);
    };
    let version = hdr[0] >> 4;
    // `& 0xf` bounds the header length to 60 bytes, which keeps every offset derived
    // from it provably small for the verifier.
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    let total_len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
    if version != 4 || ihl < IPV4_MIN_HLEN || total_len < ihl {
        return Classified::only(PacketClass::MalformedIpv4);
    }
    // The whole IP header (options included) must be readable, and the frame must hold
    // the whole datagram (Ethernet padding after it is allowed). The datagram's end is
    // checked against the frame length, not read: it may sit in a fragment.
    if frame.load_u8(L3 + ihl - 1).is_none() || L3 + total_len > frame.frame_len() {
        return Classified::only(PacketClass::MalformedIpv4);
    }
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    // More-fragments flag or a non-zero fragment offset.
    if frag & 0x3fff != 0 {
        return Classified::only(PacketClass::Ipv4Fragment);
    }
    let l4_offset = L3 + ihl;
    let (class, need) = match hdr[9] {
        IPPROTO_TCP => (PacketClass::Ipv4Tcp, TCP_MIN_HLEN),
        IPPROTO_UDP => (PacketClass::Ipv4Udp, UDP_HLEN),
        IPPROTO_ICMP => (PacketClass::Ipv4Icmp, ICMP_HLEN),
        _ => (PacketClass::Ipv4Other, 0),
    };
    // The L4 header must lie inside the IP datagram, not in Ethernet padding.
    if need > 0 && (ihl + need > total_len || frame.load_u8(l4_offset + need - 1).is_none()) {
        return Classified::only(PacketClass::TruncatedL4);
    }
    Classified { class, l4_offset }
}

/// Extracts what [`crate::forward::decide`] needs from a classified frame.
#[inline(always)]
pub fn frame_info<F: Frame + ?Sized>(frame: &F, class: PacketClass) -> crate::forward::FrameInfo {
    use crate::forward::FrameInfo;
    match class {
        PacketClass::Ipv4Tcp
        | PacketClass::Ipv4Udp
        | PacketClass::Ipv4Icmp
        | PacketClass::Ipv4Other
        | PacketClass::Ipv4Fragment => {
            // Source and destination in one bounds-checked load.
            let Some(a) = frame.load::<8>(IP_SRC) else {
                return FrameInfo::Other;
            };
            FrameInfo::Ipv4 {
                src: [a[0], a[1], a[2], a[3]],
                dst: [a[4], a[5], a[6], a[7]],
            }
        }
        PacketClass::Ipv6 => FrameInfo::Ipv6,
        PacketClass::Arp => {
            // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, op (2), sha (6), spa (4),
            // loaded at once. Verifier: sequential early returns instead of matching a
            // tuple of Options, which LLVM compiled into flag arithmetic on a register
            // the verifier still considered a pointer ("bitwise operator on pointer").
            let Some(a) = frame.load::<18>(ETH_HLEN) else {
                return FrameInfo::Other;
            };
            if a[..6] != [0, 1, 0x08, 0x00, 6, 4] {
                return FrameInfo::Other;
            }
            FrameInfo::Arp {
                sha: [a[8], a[9], a[10], a[11], a[12], a[13]],
                spa: [a[14], a[15], a[16], a[17]],
            }
        }
        _ => FrameInfo::Other,
    }
}

/// RFC 1071 one's-complement checksum over `data` (an IPv4 header, say), as stored in
/// the header: the result of summing a header that contains it is 0.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    fold(sum)
}

/// Folds a 32-bit one's-complement sum to 16 bits and complements it.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(test)]
mod tests {
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
    struct Linear<'a> {
        bytes: &'a [u8],
        linear: usize,
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
            prop_assert_eq!(frame_info(&f[..], whole.class), frame_info(&cut, part.class));
        }
    }

    /// Builds Ethernet + IPv4 (+ options) + L4 payload with a valid header checksum.
    fn ipv4_frame(proto: u8, options: &[u8], l4: &[u8], frag: u16) -> Vec<u8> {
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
            let c = Classified { class, l4_offset };
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
        let mut v6 = [0u8; 54];
        v6[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        assert_eq!(class(&v6), PacketClass::Ipv6);
        let mut vlan = [0u8; 64];
        vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        assert_eq!(class(&vlan), PacketClass::OtherEthertype);
    }

    #[test]
    fn frame_info_of_ipv4_and_arp() {
        use crate::forward::FrameInfo;
        let f = ipv4_frame(IPPROTO_UDP, &[], &[0; 8], 0);
        assert_eq!(
            frame_info(&f[..], class(&f)),
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
            frame_info(&arp[..], PacketClass::Arp),
            FrameInfo::Arp {
                sha: [2, 0, 0, 0, 0, 9],
                spa: [10, 0, 0, 9]
            }
        );
        // Not Ethernet/IPv4 ARP, or too short: not interpreted.
        arp[15] = 6;
        assert_eq!(frame_info(&arp[..], PacketClass::Arp), FrameInfo::Other);
        assert_eq!(frame_info(&arp[..30], PacketClass::Arp), FrameInfo::Other);
        // IPv6 by its ethertype alone.
        assert_eq!(frame_info(&arp[..], PacketClass::Ipv6), FrameInfo::Ipv6);
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
}
