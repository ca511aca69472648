//! IPv6 for the datapath: the fixed header, the extension-header chain (walked to a
//! bound), and the guard for untrusted endpoints — what an endpoint may not send:
//! another's source address, router advertisements and redirects, neighbour
//! advertisements for an address not its own, DHCPv6 server messages.
//!
//! Like [`crate::packet`], written against [`Frame`], so host tests drive the code the
//! programs run.

use crate::{
    forward::FrameInfo,
    maps::{DropReason, EndpointValue},
    packet::{
        Classified, ETH_HLEN, Frame, IPPROTO_TCP, IPPROTO_UDP, PacketClass, TCP_MIN_HLEN, UDP_HLEN,
    },
};

/// The fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;
/// Frame offsets of IPv6 header fields (after an untagged Ethernet header).
pub const IP6_NEXT: usize = ETH_HLEN + 6;
pub const IP6_HOP_LIMIT: usize = ETH_HLEN + 7;
pub const IP6_SRC: usize = ETH_HLEN + 8;
pub const IP6_DST: usize = ETH_HLEN + 24;

pub const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 header: type, code, checksum and 4 bytes of the message body.
pub const ICMP6_HLEN: usize = 8;

/// Extension headers the chain walk steps over (RFC 8200 §4; AH, RFC 4302).
const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_AH: u8 = 51;
const NEXT_DEST_OPTS: u8 = 60;

/// The bound of the chain walk: at most this many extension headers, of at most
/// [`MAX_EXT_LEN`] bytes together. Real traffic carries one or two (hop-by-hop for MLD,
/// a fragment header); a chain beyond the bound is [`PacketClass::Ipv6Unparsed`] — from
/// an endpoint a counted drop, since what it hides (a router advertisement behind
/// padding, RFC 7113's RA-guard evasion) cannot be checked; elsewhere the kernel's path.
pub const MAX_EXT_HEADERS: usize = 4;
pub const MAX_EXT_LEN: usize = 64;

/// The most of an IPv6 packet past the fixed header any program reads: the extension
/// headers, then an ICMPv6 error's header, the quoted IPv6 header and a quoted TCP header
/// to its checksum (which covers a neighbour advertisement and its options too).
pub const MAX_IPV6_L4_LEN: usize = MAX_EXT_LEN + ICMP6_HLEN + IPV6_HLEN + TCP_MIN_HLEN;

/// What the chain walk found past the fixed header: the L4 protocol and its offset,
/// whether the packet is a fragment, or that it could not be walked.
#[inline(always)]
pub(crate) fn classify_ipv6<F: Frame + ?Sized>(frame: &F) -> Classified {
    const L3: usize = ETH_HLEN;
    // version/class/flow (4), payload length (2), next header, hop limit.
    let Some(h) = frame.load::<8>(L3) else {
        return Classified::only(PacketClass::Ipv6Unparsed);
    };
    let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
    // The whole fixed header readable, the whole packet in the frame (Ethernet padding
    // after it is allowed; its end is checked against the length, not read).
    if h[0] >> 4 != 6
        || frame.load_u8(L3 + IPV6_HLEN - 1).is_none()
        || L3 + IPV6_HLEN + payload > frame.frame_len()
    {
        return Classified::only(PacketClass::Ipv6Unparsed);
    }
    let end = L3 + IPV6_HLEN + payload;
    let mut next = h[6];
    let mut at = L3 + IPV6_HLEN;
    let mut fragment = false;
    // Verifier: a constant trip count, and `at` grows by at most 2 KiB a step, checked
    // against the bound right after: every offset stays provably small.
    for _ in 0..MAX_EXT_HEADERS {
        if !matches!(
            next,
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_FRAGMENT | NEXT_AH | NEXT_DEST_OPTS
        ) {
            break;
        }
        // Next header, length, and for a fragment header its offset and M flag.
        let Some(e) = frame.load::<4>(at) else {
            return Classified::only(PacketClass::Ipv6Unparsed);
        };
        let len = match next {
            NEXT_FRAGMENT => {
                let offset_flags = u16::from_be_bytes([e[2], e[3]]);
                if offset_flags & 0xfff8 != 0 {
                    // A later fragment: no L4 header here.
                    return Classified {
                        class: PacketClass::Ipv6Fragment,
                        l4_offset: 0,
                        proto: e[0],
                    };
                }
                // An atomic fragment (offset 0, no more fragments; RFC 6946) is whole.
                fragment = offset_flags & 1 != 0;
                8
            }
            NEXT_AH => (e[1] as usize + 2) * 4,
            _ => (e[1] as usize + 1) * 8,
        };
        next = e[0];
        at += len;
        if at > L3 + IPV6_HLEN + MAX_EXT_LEN {
            return Classified::only(PacketClass::Ipv6Unparsed);
        }
    }
    if matches!(
        next,
        NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_FRAGMENT | NEXT_AH | NEXT_DEST_OPTS
    ) {
        // More headers than the walk takes.
        return Classified::only(PacketClass::Ipv6Unparsed);
    }
    let (class, need) = match next {
        IPPROTO_TCP => (PacketClass::Ipv6Tcp, TCP_MIN_HLEN),
        IPPROTO_UDP => (PacketClass::Ipv6Udp, UDP_HLEN),
        IPPROTO_ICMPV6 => (PacketClass::Ipv6Icmp, ICMP6_HLEN),
        _ => (PacketClass::Ipv6Other, 0),
    };
    // The L4 header inside the packet (a first fragment must carry it: RFC 8200 §4.5).
    if at > end || (need > 0 && (at + need > end || frame.load_u8(at + need - 1).is_none())) {
        return Classified::only(PacketClass::TruncatedL4);
    }
    Classified {
        class: if fragment {
            PacketClass::Ipv6Fragment
        } else {
            class
        },
        l4_offset: at,
        proto: next,
    }
}

/// Which message an IPv6 packet from an endpoint is, as far as the guard cares.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// Nothing it checks (TCP, UDP but DHCPv6 servers', ICMPv6 echo, a later fragment…).
    Plain,
    /// A router advertisement (134) or redirect (137): only routers send them.
    RouterMessage,
    /// A neighbour solicitation (135).
    NeighborSolicit,
    /// A neighbour advertisement (136).
    NeighborAdvert,
    /// An MLD listener report (131, v2: 143), which may come from `::` (RFC 3810 §5.2.13).
    ListenerReport,
    /// UDP from port 547: a DHCPv6 server or relay speaking.
    DhcpServer,
}

/// What the guard looks at in an IPv6 packet from an endpoint, past its addresses: the
/// message, and for neighbour discovery the address an advertisement claims (`target`)
/// and the link-layer address option (zero when there is none).
///
/// Verifier: a struct whose fields are always written, not an enum with data — LLVM
/// copied the unwritten bytes of the shorter variants along, which the verifier refuses
/// to read ("!read_ok").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Kind {
    pub message: Message,
    pub target: [u8; 16],
    pub lladdr: [u8; 6],
}

impl Ipv6Kind {
    pub const PLAIN: Ipv6Kind = Ipv6Kind::of(Message::Plain);
    pub const ROUTER_MESSAGE: Ipv6Kind = Ipv6Kind::of(Message::RouterMessage);
    pub const LISTENER_REPORT: Ipv6Kind = Ipv6Kind::of(Message::ListenerReport);
    pub const DHCP_SERVER: Ipv6Kind = Ipv6Kind::of(Message::DhcpServer);

    /// A message without a target or link-layer address.
    pub const fn of(message: Message) -> Self {
        Ipv6Kind {
            message,
            target: [0; 16],
            lladdr: [0; 6],
        }
    }

    pub const fn neighbor_solicit(lladdr: [u8; 6]) -> Self {
        Ipv6Kind {
            lladdr,
            ..Ipv6Kind::of(Message::NeighborSolicit)
        }
    }

    pub const fn neighbor_advert(target: [u8; 16], lladdr: [u8; 6]) -> Self {
        Ipv6Kind {
            message: Message::NeighborAdvert,
            target,
            lladdr,
        }
    }
}

const ICMP6_ROUTER_ADVERT: u8 = 134;
const ICMP6_NEIGHBOR_SOLICIT: u8 = 135;
const ICMP6_NEIGHBOR_ADVERT: u8 = 136;
const ICMP6_REDIRECT: u8 = 137;
const ICMP6_MLD_REPORT: u8 = 131;
const ICMP6_MLD2_REPORT: u8 = 143;
/// Neighbour discovery options (RFC 4861 §4.6.1).
const ND_OPT_SOURCE_LLADDR: u8 = 1;
const ND_OPT_TARGET_LLADDR: u8 = 2;
/// How many ND options the guard reads looking for the link-layer address, and within
/// how many bytes of the first (which keeps the reads inside what tc pulls: an option
/// ending further out is not seen).
const MAX_ND_OPTIONS: usize = 3;
const MAX_ND_OPTIONS_LEN: usize = 32;
const DHCP6_SERVER_PORT: u16 = 547;

/// The [`Ipv6Kind`] of a classified IPv6 packet; `None`: it cannot be read (an ND
/// message too short to hold its target), which the guard refuses.
#[inline(always)]
pub fn ipv6_kind<F: Frame + ?Sized>(frame: &F, c: Classified) -> Option<Ipv6Kind> {
    // A later fragment (no L4 header), or no L4 header we read.
    if c.l4_offset == 0 {
        return Some(Ipv6Kind::PLAIN);
    }
    let at = c.l4_offset;
    match c.proto {
        IPPROTO_ICMPV6 => {
            // Verifier: a 2-byte load (type and code), as in the NAT's ICMP reads: for a
            // 1-byte load LLVM turns the bounds check `p + 1 > end` into `p >= end`,
            // from which the verifier learns no readable range.
            let ty = frame.load::<2>(at)?[0];
            Some(match ty {
                ICMP6_ROUTER_ADVERT | ICMP6_REDIRECT => Ipv6Kind::ROUTER_MESSAGE,
                ICMP6_NEIGHBOR_SOLICIT => {
                    Ipv6Kind::neighbor_solicit(nd_lladdr(frame, at + 24, ND_OPT_SOURCE_LLADDR))
                }
                ICMP6_NEIGHBOR_ADVERT => Ipv6Kind::neighbor_advert(
                    frame.load::<16>(at + 8)?,
                    nd_lladdr(frame, at + 24, ND_OPT_TARGET_LLADDR),
                ),
                ICMP6_MLD_REPORT | ICMP6_MLD2_REPORT => Ipv6Kind::LISTENER_REPORT,
                _ => Ipv6Kind::PLAIN,
            })
        }
        IPPROTO_UDP if frame.load_be16(at) == Some(DHCP6_SERVER_PORT) => {
            Some(Ipv6Kind::DHCP_SERVER)
        }
        _ => Some(Ipv6Kind::PLAIN),
    }
}

/// What the guard reads of a packet of an IPv6 class: its source and [`Ipv6Kind`];
/// [`FrameInfo::Ipv6Unparsed`] if that cannot be read.
#[inline(always)]
pub fn ipv6_info<F: Frame + ?Sized>(frame: &F, c: Classified) -> FrameInfo {
    if c.class == PacketClass::Ipv6Unparsed {
        return FrameInfo::Ipv6Unparsed;
    }
    let (Some(src), Some(kind)) = (frame.load::<16>(IP6_SRC), ipv6_kind(frame, c)) else {
        return FrameInfo::Ipv6Unparsed;
    };
    FrameInfo::Ipv6 { src, kind }
}

/// The link-layer address in the first ND option of type `want` among the first
/// [`MAX_ND_OPTIONS`] from `first` (zero if none is read).
#[inline(always)]
fn nd_lladdr<F: Frame + ?Sized>(frame: &F, first: usize, want: u8) -> [u8; 6] {
    let mut at = first;
    for _ in 0..MAX_ND_OPTIONS {
        if at + 8 > first + MAX_ND_OPTIONS_LEN {
            break;
        }
        let Some(o) = frame.load::<8>(at) else {
            break;
        };
        // Length in units of 8 bytes; 0 is invalid (RFC 4861 §4.6) and ends the walk.
        if o[1] == 0 {
            break;
        }
        if o[0] == want && o[1] == 1 {
            return [o[2], o[3], o[4], o[5], o[6], o[7]];
        }
        at += o[1] as usize * 8;
    }
    [0; 6]
}

/// The link-local address an interface with `mac` forms (modified EUI-64, RFC 4291
/// Appendix A): Linux's default for a container's interface, and a guest's unless it
/// uses stable-privacy or random addresses (which the guard then refuses as sources).
#[inline(always)]
pub const fn link_local(mac: [u8; 6]) -> [u8; 16] {
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

/// The guard for an IPv6 packet from endpoint `from` with source `src`: why it must be
/// dropped, if it must. The source must be the endpoint's own address (or `::` for
/// duplicate address detection and MLD); routers' messages and DHCPv6 servers' are
/// refused; neighbour discovery may speak only for the endpoint's own addresses and MAC.
/// Its own addresses: its link-local one ([`link_local`] of its MAC), and the global
/// ones `owns` (the caller's lookup in the IPv6 endpoint map) says are its.
#[inline(always)]
pub fn guard(
    from: &EndpointValue,
    src: [u8; 16],
    kind: Ipv6Kind,
    owns: impl Fn([u8; 16]) -> bool,
) -> Option<DropReason> {
    let own = |a: [u8; 16]| a == link_local(from.mac) || owns(a);
    let unspecified_ok = matches!(
        kind.message,
        Message::NeighborSolicit | Message::ListenerReport
    );
    let source_ok = (unspecified_ok && src == [0; 16]) || own(src);
    if !source_ok {
        return Some(DropReason::SpoofedIp);
    }
    let lladdr_ok = kind.lladdr == [0; 6] || kind.lladdr == from.mac;
    match kind.message {
        Message::RouterMessage => Some(DropReason::RouterMessage),
        Message::DhcpServer => Some(DropReason::DhcpServer),
        Message::NeighborAdvert if !lladdr_ok || !own(kind.target) => Some(DropReason::SpoofedNd),
        Message::NeighborSolicit if !lladdr_ok => Some(DropReason::SpoofedNd),
        _ => None,
    }
}

/// Host routing shortcut for IPv6, as [`crate::forward::uplink_candidate`] for IPv4:
/// sent to the gateway's MAC, to a [`routable6`] address.
#[inline(always)]
pub fn uplink_candidate6(from: &EndpointValue, eth_dst: [u8; 6], dst: [u8; 16]) -> bool {
    eth_dst == from.host_mac && routable6(dst)
}

/// Whether `addr` is an address routing decides about: not multicast `ff00::/8`,
/// link-local `fe80::/10`, unspecified or loopback, which stay on the link or the host.
/// (The kernel's FIB lookup answers "not forwarded" for any packet from or to a
/// multicast, link-local or loopback address, `rt6_need_strict`, whether or not it is
/// a host address: hairpin asks it about routable addresses only.)
#[inline(always)]
pub const fn routable6(addr: [u8; 16]) -> bool {
    let mut unspecified_or_loopback = true;
    let mut i = 0;
    while i < 15 {
        unspecified_or_loopback &= addr[i] == 0;
        i += 1;
    }
    unspecified_or_loopback &= addr[15] <= 1;
    addr[0] != 0xff && !(addr[0] == 0xfe && addr[1] & 0xc0 == 0x80) && !unspecified_or_loopback
}

/// The hop limit a routed packet leaves with, as [`crate::forward::routed_ttl`].
pub use crate::forward::routed_ttl as routed_hop_limit;

#[cfg(test)]
pub(crate) mod tests;
