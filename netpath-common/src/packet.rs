//! Pure packet logic: Ethernet/IPv4/L4 header parsing and classification (IPv6's chain
//! walk lives in [`crate::ipv6`]).
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

use crate::{forward::FrameInfo, ipv6};

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
/// The most any program reads of IPv4: Ethernet, an IPv4 header with options, and the
/// longest L4 part read: an ICMP error's header, the quoted IPv4 header and the quoted
/// TCP header up to its checksum (errors must quote 8 bytes; most quote more).
const MAX_IPV4_HEADERS_LEN: usize = ETH_HLEN + 60 + ICMP_HLEN + IPV4_MIN_HLEN + TCP_MIN_HLEN;
/// The most any program reads of IPv6 ([`ipv6::MAX_IPV6_L4_LEN`] past the fixed header).
const MAX_IPV6_HEADERS_LEN: usize = ETH_HLEN + ipv6::IPV6_HLEN + ipv6::MAX_IPV6_L4_LEN;
/// The most any program reads of a frame.
pub const MAX_HEADERS_LEN: usize = if MAX_IPV4_HEADERS_LEN > MAX_IPV6_HEADERS_LEN {
    MAX_IPV4_HEADERS_LEN
} else {
    MAX_IPV6_HEADERS_LEN
};

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
        Some(h) if u16::from_be_bytes([h[12], h[13]]) == ETH_P_IPV6 => {
            let l4 = match h[ipv6::IP6_NEXT] {
                IPPROTO_TCP => TCP_MIN_HLEN,
                IPPROTO_UDP => UDP_HLEN,
                // ICMPv6 (errors, neighbour discovery) and extension headers: all we read.
                _ => ipv6::MAX_IPV6_L4_LEN,
            };
            ETH_HLEN + ipv6::IPV6_HLEN + l4
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
        /// IPv6 with an L4 protocol other than TCP, UDP and ICMPv6.
        Ipv6Other => "ipv6_other",
        /// Any other ethertype (including VLAN-tagged frames).
        OtherEthertype => "other_ethertype",
        /// Shorter than an Ethernet header.
        TruncatedEthernet => "truncated_ethernet",
        /// IPv4 ethertype but a short, wrong-version, bad-IHL or bad-length IP header.
        MalformedIpv4 => "malformed_ipv4",
        /// Valid IPv4 or IPv6 header but the TCP/UDP/ICMP header is cut short.
        TruncatedL4 => "truncated_l4",
        // Since layout 4 (before it, slot 6 counted every IPv6 frame).
        Ipv6Tcp => "ipv6_tcp",
        Ipv6Udp => "ipv6_udp",
        Ipv6Icmp => "ipv6_icmp",
        /// An IPv6 fragment; a first one carries its L4 header.
        Ipv6Fragment => "ipv6_fragment",
        /// IPv6 ethertype but a short or wrong-version header, a length beyond the frame,
        /// or an extension-header chain beyond the walk's bound ([`ipv6::MAX_EXT_HEADERS`]).
        Ipv6Unparsed => "ipv6_unparsed",
    }
}

impl PacketClass {
    /// An IPv6 class (a packet cut short inside its L4 header is `TruncatedL4`, of
    /// either family).
    pub const fn is_ipv6(self) -> bool {
        matches!(
            self,
            PacketClass::Ipv6Tcp
                | PacketClass::Ipv6Udp
                | PacketClass::Ipv6Icmp
                | PacketClass::Ipv6Other
                | PacketClass::Ipv6Fragment
                | PacketClass::Ipv6Unparsed
        )
    }
}

/// Result of [`classify`]: the class, and for IP the L4 header's offset and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    pub class: PacketClass,
    /// Offset of the L4 header: meaningful for the `Ipv4Tcp/Udp/Icmp/Other` and
    /// `Ipv6Tcp/Udp/Icmp/Other` classes and a first IPv6 fragment; 0 otherwise.
    pub l4_offset: usize,
    /// The L4 protocol (IPv4's protocol field, IPv6's last next header).
    pub proto: u8,
}

impl Classified {
    pub(crate) const fn only(class: PacketClass) -> Self {
        Classified {
            class,
            l4_offset: 0,
            proto: 0,
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
        ETH_P_IPV6 => ipv6::classify_ipv6(frame),
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
    Classified {
        class,
        l4_offset,
        proto: hdr[9],
    }
}

/// Extracts what [`crate::forward::decide`] needs from a classified frame.
#[inline(always)]
pub fn frame_info<F: Frame + ?Sized>(frame: &F, c: Classified) -> FrameInfo {
    match c.class {
        PacketClass::Ipv4Tcp
        | PacketClass::Ipv4Udp
        | PacketClass::Ipv4Icmp
        | PacketClass::Ipv4Other
        | PacketClass::Ipv4Fragment => ipv4_info(frame),
        class if class.is_ipv6() => ipv6::ipv6_info(frame, c),
        // A sound IP header over a short L4 one: its addresses still count (a forged
        // source must not slip through as "malformed").
        PacketClass::TruncatedL4 => match frame.load_be16(12) {
            Some(ETH_P_IP) => ipv4_info(frame),
            _ => FrameInfo::Ipv6Unparsed,
        },
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

/// An IPv4 packet's addresses, in one bounds-checked load.
#[inline(always)]
fn ipv4_info<F: Frame + ?Sized>(frame: &F) -> FrameInfo {
    let Some(a) = frame.load::<8>(IP_SRC) else {
        return FrameInfo::Other;
    };
    FrameInfo::Ipv4 {
        src: [a[0], a[1], a[2], a[3]],
        dst: [a[4], a[5], a[6], a[7]],
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
pub(crate) mod tests;
