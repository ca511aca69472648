//! The address family the translations run for: where a packet's addresses sit, which
//! packet classes are its own, and the checksums an address change touches besides the
//! L4 one (IPv4's header checksum; IPv6 has none) — [`Ip`], all that published ports
//! and hairpin need — and for the masquerade also its ICMP types and NAT maps
//! ([`Family`]). [`V4`] is IPv4 with the maps IPv4 masquerade has always used; [`V6`]
//! IPv6 (published ports so far). `masq` and `icmp` are written once against
//! [`Family`], `publish` and `hairpin` against [`Ip`].

use aya_ebpf::{
    bindings::{BPF_F_MARK_ENFORCE, BPF_F_MARK_MANGLED_0},
    maps::{LruHashMap, lpm_trie::Key},
    programs::TcContext,
};
use netpath_common::{
    ipv6::{IP6_DST, IP6_SRC, IPPROTO_ICMPV6},
    maps::DropReason,
    nat::{Address, NatAge, NatTargetOf, TupleOf, UplinkOf, no_masq_key},
    packet::{ETH_HLEN, Frame, IP_CSUM, IP_DST, IP_SRC, IP_TOTAL_LEN, IPPROTO_ICMP, PacketClass},
};

use super::{icmp::Quoted, rewrite_failed};
use crate::{
    frame::TcFrame,
    maps::{
        NETPATH_MASQ_SRC, NETPATH_NAT_AGE, NETPATH_NO_MASQ, NETPATH_RNAT, NETPATH_SNAT,
        NETPATH_UPLINKS,
    },
};

/// A NAT table of a family: tuple → target.
pub(super) type NatMap<A> = LruHashMap<TupleOf<A>, NatTargetOf<A>>;

/// An address family as every translation sees it: where a packet's addresses sit, its
/// packet classes, and the checksums an address change touches. Published ports and
/// hairpin need no more; [`Family`] adds what the masquerade needs.
pub(super) trait Ip {
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

/// An address family as the masquerade sees it.
pub(super) trait Family: Ip {
    /// Its ICMP's echo request/reply types.
    const ECHO_REQUEST: u8;
    const ECHO_REPLY: u8;

    /// The end of the IP datagram (Ethernet padding after it is no one's).
    fn datagram_end(frame: &TcFrame) -> Option<usize>;
    /// Whether ICMP type `kind` is an error that quotes the offending packet.
    fn is_error(kind: u8) -> bool;
    /// Where the source address sits in an IP header.
    const QUOTED_SRC: usize;
    /// The IP header an ICMP error quotes at `inner` (without options or extension
    /// headers).
    fn quoted(frame: &TcFrame, inner: usize) -> Option<Quoted<Self::Addr>>;
    /// The uplink `ifindex`'s address and port range for this family.
    fn uplink(ifindex: u32) -> Option<UplinkOf<Self::Addr>>;
    /// The network whose masqueraded subnet holds `src`.
    fn masq_network(src: Self::Addr) -> Option<u32>;
    /// Whether `network` reaches `dst` unmasqueraded (`--no-masquerade`).
    fn exempt(network: u32, dst: Self::Addr) -> bool;
    /// Original tuple → new source.
    fn snat() -> &'static NatMap<Self::Addr>;
    /// Reply tuple → original source.
    fn rnat() -> &'static NatMap<Self::Addr>;
    /// Reply tuple → last seen and state.
    fn ages() -> &'static LruHashMap<TupleOf<Self::Addr>, NatAge>;
}

/// IPv4.
pub(super) struct V4;

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

impl Family for V4 {
    const ECHO_REQUEST: u8 = 8;
    const ECHO_REPLY: u8 = 0;

    #[inline(always)]
    fn datagram_end(frame: &TcFrame) -> Option<usize> {
        Some(ETH_HLEN + usize::from(frame.load_be16(IP_TOTAL_LEN)?))
    }

    #[inline(always)]
    fn is_error(kind: u8) -> bool {
        // Destination unreachable, time exceeded, parameter problem.
        matches!(kind, 3 | 11 | 12)
    }

    const QUOTED_SRC: usize = 12;

    #[inline(always)]
    fn quoted(frame: &TcFrame, inner: usize) -> Option<Quoted<[u8; 4]>> {
        let h = frame.load::<20>(inner)?;
        if h[0] != 0x45 {
            return None;
        }
        Some(Quoted {
            proto: h[9],
            ip_csum: Some(u16::from_be_bytes([h[10], h[11]])),
            src: [h[12], h[13], h[14], h[15]],
            dst: [h[16], h[17], h[18], h[19]],
            l4_at: inner + 20,
        })
    }

    #[inline(always)]
    fn uplink(ifindex: u32) -> Option<UplinkOf<[u8; 4]>> {
        // SAFETY: copied out at once.
        unsafe { NETPATH_UPLINKS.get(ifindex) }.copied()
    }

    #[inline(always)]
    fn masq_network(src: [u8; 4]) -> Option<u32> {
        NETPATH_MASQ_SRC.get(Key::new(32, src)).copied()
    }

    #[inline(always)]
    fn exempt(network: u32, dst: [u8; 4]) -> bool {
        NETPATH_NO_MASQ
            .get(Key::new(64, no_masq_key(network, dst)))
            .is_some()
    }

    #[inline(always)]
    fn snat() -> &'static NatMap<[u8; 4]> {
        &NETPATH_SNAT
    }

    #[inline(always)]
    fn rnat() -> &'static NatMap<[u8; 4]> {
        &NETPATH_RNAT
    }

    #[inline(always)]
    fn ages() -> &'static LruHashMap<TupleOf<[u8; 4]>, NatAge> {
        &NETPATH_NAT_AGE
    }
}

/// IPv6: published ports and hairpin (the masquerade's NAT66 adds its [`Family`] part).
pub(super) struct V6;

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

/// Updates the checksum at `csum_at` for an address changing `old` → `new`, one 32-bit
/// word at a time (`flags`: e.g. `BPF_F_PSEUDO_HDR`, the UDP flags).
#[inline(always)]
pub(super) fn csum_addr<A: Address>(
    ctx: &TcContext,
    csum_at: usize,
    old: A,
    new: A,
    flags: u64,
) -> Result<(), DropReason> {
    // Verifier: a constant trip count (1 or 4 words).
    for i in 0..A::WORDS {
        // As the words sit in memory (network order).
        let (o, n) = (old.word(i).to_be(), new.word(i).to_be());
        if o != n {
            ctx.l4_csum_replace(csum_at, u64::from(o), u64::from(n), flags | 4)
                .map_err(rewrite_failed)?;
        }
    }
    Ok(())
}
