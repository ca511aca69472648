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
    packet::{Frame, IP_CSUM, IP_DST, IP_SRC, IPPROTO_ICMP, PacketClass},
};

use crate::{frame::TcFrame, nat::rewrite_failed};

/// An address family as every translation sees it: where a packet's addresses sit, its
/// packet classes, and the checksums an address change touches.
pub(crate) trait Ip {
    type Addr: Address + 'static;
    /// Offsets of the source and destination addresses in the frame.
    const SRC: usize;
    const DST: usize;
    /// The classes of its TCP, UDP and ICMP packets.
    const TCP: PacketClass;
    const UDP: PacketClass;
    const ICMP: PacketClass;
    /// Its ICMP's protocol number.
    const ICMP_PROTO: u8;
    /// Its ICMP checksum covers the pseudo-header (ICMPv6; ICMPv4's does not).
    const ICMP_PSEUDO: bool;
    /// The extra `bpf_l4_csum_replace` flags of a UDP checksum.
    const UDP_CSUM_FLAGS: u64;

    /// The address at `at`.
    fn load_addr(frame: &TcFrame, at: usize) -> Option<Self::Addr>;
    /// Fixes the IP header checksum after an address changed `old` → `new` (IPv6: no
    /// header checksum, nothing to do).
    fn l3_csum(ctx: &TcContext, old: Self::Addr, new: Self::Addr) -> Result<(), DropReason>;
}

/// IPv4.
pub(crate) struct V4;

impl Ip for V4 {
    type Addr = [u8; 4];
    const SRC: usize = IP_SRC;
    const DST: usize = IP_DST;
    const TCP: PacketClass = PacketClass::Ipv4Tcp;
    const UDP: PacketClass = PacketClass::Ipv4Udp;
    const ICMP: PacketClass = PacketClass::Ipv4Icmp;
    const ICMP_PROTO: u8 = IPPROTO_ICMP;
    const ICMP_PSEUDO: bool = false;
    /// A zero UDP checksum means "none" and stays zero; a computed zero goes as 0xffff.
    const UDP_CSUM_FLAGS: u64 = BPF_F_MARK_MANGLED_0 as u64;

    #[inline(always)]
    fn load_addr(frame: &TcFrame, at: usize) -> Option<[u8; 4]> {
        frame.load::<4>(at)
    }

    #[inline(always)]
    fn l3_csum(ctx: &TcContext, old: [u8; 4], new: [u8; 4]) -> Result<(), DropReason> {
        // The csum helpers take the old and new values as they sit in memory.
        let (o, n) = (u32::from_ne_bytes(old), u32::from_ne_bytes(new));
        ctx.l3_csum_replace(IP_CSUM, u64::from(o), u64::from(n), 4)
            .map_err(rewrite_failed)
    }
}

/// IPv6.
pub(crate) struct V6;

impl Ip for V6 {
    type Addr = [u8; 16];
    const SRC: usize = IP6_SRC;
    const DST: usize = IP6_DST;
    const TCP: PacketClass = PacketClass::Ipv6Tcp;
    const UDP: PacketClass = PacketClass::Ipv6Udp;
    const ICMP: PacketClass = PacketClass::Ipv6Icmp;
    const ICMP_PROTO: u8 = IPPROTO_ICMPV6;
    const ICMP_PSEUDO: bool = true;
    /// IPv6 UDP checksums are mandatory (RFC 8200 §8.1): a zero one is not "none" but
    /// updated like any other (`MARK_ENFORCE`), and a computed zero goes as 0xffff.
    const UDP_CSUM_FLAGS: u64 = (BPF_F_MARK_MANGLED_0 | BPF_F_MARK_ENFORCE) as u64;

    #[inline(always)]
    fn load_addr(frame: &TcFrame, at: usize) -> Option<[u8; 16]> {
        frame.load::<16>(at)
    }

    #[inline(always)]
    fn l3_csum(_: &TcContext, _: [u8; 16], _: [u8; 16]) -> Result<(), DropReason> {
        // No IPv6 header checksum.
        Ok(())
    }
}
