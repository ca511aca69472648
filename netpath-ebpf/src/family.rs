//! The address families every part of the datapath is written once for ([`Ip`]): where
//! a packet's addresses sit, which packet classes are its own, and the checksums an
//! address change touches besides the L4 one (IPv4's header checksum; IPv6 has none).
//! [`V4`] is IPv4, [`V6`] IPv6. What one part needs beyond that sits beside it, as a
//! trait of its own implemented for both: the masquerade's ICMP types and NAT maps
//! (`nat::family::Family`), the publish maps and host addresses (`nat::publish`'s
//! `Publish`), the endpoint map and TTL handling of the shortcuts (`route::Hop`), the
//! socket hooks' reverse map (`sock`).

use aya_ebpf::{
    bindings::{BPF_F_MARK_ENFORCE, BPF_F_MARK_MANGLED_0},
    programs::TcContext,
};
use netpath_common::{
    ipv6::{IP6_DST, IP6_SRC, IPPROTO_ICMPV6},
    maps::DropReason,
    nat::Address,
    packet::{
        IP_CSUM, IP_DST, IP_SRC, IPPROTO_ICMP,
        PacketClass::{self, Ipv4Icmp, Ipv4Tcp, Ipv4Udp, Ipv6Icmp, Ipv6Tcp, Ipv6Udp},
    },
};

use crate::{frame::TcFrame, nat::rewrite_failed};

/// An address family as every translation sees it: where a packet's addresses sit, its
/// packet classes, and the checksums an address change touches. A family is its address
/// type and [`Ip::IS_V6`]; the rest follows from those, stated here once for both (each
/// `if` is decided at compile time).
pub(crate) trait Ip {
    type Addr: Address + 'static;
    /// IPv6, or IPv4.
    const IS_V6: bool;
    /// Offsets of the source and destination addresses in the frame.
    const SRC: usize = if Self::IS_V6 { IP6_SRC } else { IP_SRC };
    const DST: usize = if Self::IS_V6 { IP6_DST } else { IP_DST };
    /// The classes of its TCP, UDP and ICMP packets.
    const TCP: PacketClass = if Self::IS_V6 { Ipv6Tcp } else { Ipv4Tcp };
    const UDP: PacketClass = if Self::IS_V6 { Ipv6Udp } else { Ipv4Udp };
    const ICMP: PacketClass = if Self::IS_V6 { Ipv6Icmp } else { Ipv4Icmp };
    /// Its ICMP's protocol number.
    const ICMP_PROTO: u8 = if Self::IS_V6 {
        IPPROTO_ICMPV6
    } else {
        IPPROTO_ICMP
    };
    /// Its ICMP checksum covers the pseudo-header (ICMPv6; ICMPv4's does not).
    const ICMP_PSEUDO: bool = Self::IS_V6;
    /// The extra `bpf_l4_csum_replace` flags of a UDP checksum: a computed zero goes as
    /// 0xffff. IPv4: a zero checksum means "none" and stays zero. IPv6: UDP checksums
    /// are mandatory (RFC 8200 §8.1), so a zero one is not "none" but updated like any
    /// other (`MARK_ENFORCE`).
    const UDP_CSUM_FLAGS: u64 = if Self::IS_V6 {
        (BPF_F_MARK_MANGLED_0 | BPF_F_MARK_ENFORCE) as u64
    } else {
        BPF_F_MARK_MANGLED_0 as u64
    };

    /// The address at `at`.
    #[inline(always)]
    fn load_addr(frame: &TcFrame, at: usize) -> Option<Self::Addr> {
        Self::Addr::load(frame, at)
    }

    /// Fixes the IP header checksum after an address changed `old` → `new`.
    #[inline(always)]
    fn l3_csum(ctx: &TcContext, old: Self::Addr, new: Self::Addr) -> Result<(), DropReason> {
        if Self::IS_V6 {
            // No IPv6 header checksum.
            return Ok(());
        }
        // The csum helpers take the old and new values as they sit in memory.
        let (o, n) = (old.word(0).to_be(), new.word(0).to_be());
        ctx.l3_csum_replace(IP_CSUM, u64::from(o), u64::from(n), 4)
            .map_err(rewrite_failed)
    }
}

/// IPv4.
pub(crate) struct V4;

impl Ip for V4 {
    type Addr = [u8; 4];
    const IS_V6: bool = false;
}

/// IPv6.
pub(crate) struct V6;

impl Ip for V6 {
    type Addr = [u8; 16];
    const IS_V6: bool = true;
}
