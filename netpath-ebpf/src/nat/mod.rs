//! The NAT of the uplinks and of hairpin traffic, by concern:
//! - [`masq`]: egress masquerade — SNAT of connections from netpath networks to the
//!   uplink's address (tc egress) and the reverse translation of their replies (tc
//!   ingress), with state in two LRU maps written as a pair, `NETPATH_SNAT` (original
//!   tuple → new source) and `NETPATH_RNAT` (reply tuple → original source), ages in
//!   `NETPATH_NAT_AGE`, and per-network exemptions in `NETPATH_NO_MASQ`; TCP, UDP (a zero
//!   UDP checksum stays zero) and ICMP echo (by identifier);
//! - [`icmp`]: ICMP errors about masqueraded packets, translated back;
//! - [`publish`]: published ports — DNAT on the uplink's ingress (`NETPATH_PUBLISH`), the
//!   replies' source restored on its egress (`NETPATH_DNAT_CT`), which also records
//!   connections routed in to an endpoint's own address so their replies are left alone;
//! - [`hairpin`]: endpoints reaching a published port on a host address, on their own
//!   device.
//!
//! This module holds what they share: where a packet's ports and checksum are ([`Flow`])
//! and the one rewrite that keeps every checksum right. Fragments and everything else go
//! to the kernel path untouched.

mod hairpin;
mod icmp;
mod masq;
mod publish;

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::generated::bpf_ktime_get_ns,
    programs::TcContext,
};
use netpath_common::{
    maps::DropReason,
    nat::{NatTarget, nat_clock},
    packet::{
        Classified, Frame, IP_CSUM, IP_DST, IP_SRC, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
        PacketClass,
    },
};

pub use self::{
    hairpin::hairpin,
    masq::{egress, ingress},
    publish::{publish_ingress, publish_reply, published_at},
};
use crate::{frame::TcFrame, maps::NETPATH_UPLINKS};

const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// Whether `ifindex` is an uplink of a netpath network.
#[inline(always)]
pub fn is_uplink(ifindex: u32) -> bool {
    // SAFETY: presence check only.
    unsafe { NETPATH_UPLINKS.get(ifindex) }.is_some()
}

/// What the uplink's ingress translations did to a packet.
pub enum Inbound {
    /// Not theirs: untouched.
    Untouched,
    /// Translated; the kernel path delivers it (an ICMP error about a masqueraded packet).
    Translated,
    /// Translated, and now addressed to this endpoint address.
    ForEndpoint([u8; 4]),
}

/// Where a packet's ports (or ICMP identifier) and L4 checksum are.
struct L4 {
    proto: u8,
    /// Offset of the source port (TCP/UDP) or of the identifier (ICMP).
    sport_at: usize,
    /// Offset of the destination port (TCP/UDP) or of the identifier (ICMP).
    dport_at: usize,
    csum_at: usize,
    /// The checksum covers the pseudo-header (TCP/UDP), so address changes touch it.
    pseudo: bool,
    /// UDP: a zero checksum means "none" and must stay zero.
    mangled_zero: bool,
}

impl L4 {
    /// The L4 layout of a TCP/UDP packet, or of an ICMP echo of type `icmp_type`.
    #[inline(always)]
    fn of(frame: &TcFrame, c: Classified, icmp_type: Option<u8>) -> Option<L4> {
        let at = c.l4_offset;
        match c.class {
            PacketClass::Ipv4Tcp => Some(L4 {
                proto: IPPROTO_TCP,
                sport_at: at,
                dport_at: at + 2,
                csum_at: at + 16,
                pseudo: true,
                mangled_zero: false,
            }),
            PacketClass::Ipv4Udp => Some(L4 {
                proto: IPPROTO_UDP,
                sport_at: at,
                dport_at: at + 2,
                csum_at: at + 6,
                pseudo: true,
                mangled_zero: true,
            }),
            // Verifier: a 2-byte load (type and code). For a 1-byte load LLVM turns the
            // bounds check `p + 1 > end` into `p >= end`, from which the verifier
            // learns no readable range.
            PacketClass::Ipv4Icmp
                if icmp_type.is_some() && frame.load::<2>(at).map(|b| b[0]) == icmp_type =>
            {
                Some(L4 {
                    proto: IPPROTO_ICMP,
                    sport_at: at + 4,
                    dport_at: at + 4,
                    csum_at: at + 2,
                    pseudo: false,
                    mangled_zero: false,
                })
            }
            _ => None,
        }
    }

    fn csum_flags(&self, size: u64) -> u64 {
        let mut f = size;
        if self.mangled_zero {
            f |= u64::from(BPF_F_MARK_MANGLED_0);
        }
        f
    }
}

/// A packet's connection as it sits in the packet: its L4 layout and its addresses and
/// ports (for ICMP echo, both "ports" are the identifier).
struct Flow {
    l4: L4,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
}

impl Flow {
    /// The flow of a TCP/UDP packet, or of an ICMP echo of type `icmp_type`.
    #[inline(always)]
    fn of(frame: &TcFrame, c: Classified, icmp_type: Option<u8>) -> Option<Flow> {
        let l4 = L4::of(frame, c, icmp_type)?;
        // Verifier: the fixed-offset loads before the variable-offset ones (the other
        // way round, the later bounds check was merged away).
        let (src, dst) = (frame.load::<4>(IP_SRC)?, frame.load::<4>(IP_DST)?);
        let (sport, dport) = (frame.load_be16(l4.sport_at)?, frame.load_be16(l4.dport_at)?);
        Some(Flow {
            l4,
            src,
            dst,
            sport,
            dport,
        })
    }

    /// The flow of a TCP or UDP packet (publishing and hairpin translate no ICMP).
    #[inline(always)]
    fn ports(frame: &TcFrame, c: Classified) -> Option<Flow> {
        Flow::of(frame, c, None)
    }

    /// The TCP flags byte of a TCP packet, 0 for anything else.
    #[inline(always)]
    fn tcp_flags(&self, frame: &TcFrame) -> u8 {
        if self.l4.proto != IPPROTO_TCP {
            return 0;
        }
        // Verifier: a 2-byte load (data offset and flags), as in `L4::of`.
        frame.load::<2>(self.l4.sport_at + 12).map_or(0, |b| b[1])
    }

    fn source(&self) -> NatTarget {
        NatTarget::new(self.src, self.sport)
    }

    fn destination(&self) -> NatTarget {
        NatTarget::new(self.dst, self.dport)
    }
}

/// Rewrites the address at `addr_at` (`IP_SRC` or `IP_DST`) and the matching port from
/// `old` to `new`, fixing the IP header checksum and the L4 checksum (pseudo-header
/// included where it applies).
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    l4: &L4,
    addr_at: usize,
    old: NatTarget,
    new: NatTarget,
) -> Result<(), DropReason> {
    // The csum helpers take the old and new values as they sit in memory.
    let (old_a, new_a) = (u32::from_ne_bytes(old.addr), u32::from_ne_bytes(new.addr));
    if old_a != new_a {
        ctx.store(addr_at, &new.addr, 0).map_err(rewrite_failed)?;
        ctx.l3_csum_replace(IP_CSUM, u64::from(old_a), u64::from(new_a), 4)
            .map_err(rewrite_failed)?;
        if l4.pseudo {
            ctx.l4_csum_replace(
                l4.csum_at,
                u64::from(old_a),
                u64::from(new_a),
                l4.csum_flags(4) | u64::from(BPF_F_PSEUDO_HDR),
            )
            .map_err(rewrite_failed)?;
        }
    }
    if old.port != new.port {
        let port_at = if addr_at == IP_SRC {
            l4.sport_at
        } else {
            l4.dport_at
        };
        let (old_p, new_p) = (old.port.to_be(), new.port.to_be());
        ctx.store(port_at, &new_p, 0).map_err(rewrite_failed)?;
        ctx.l4_csum_replace(
            l4.csum_at,
            u64::from(old_p),
            u64::from(new_p),
            l4.csum_flags(2),
        )
        .map_err(rewrite_failed)?;
    }
    Ok(())
}

/// A rewrite helper's failure, as the drop it causes.
#[inline(always)]
fn rewrite_failed(_: i64) -> DropReason {
    DropReason::NatRewriteFailed
}

/// The NAT clock (see `netpath_common::nat::nat_clock`).
#[inline(always)]
fn now() -> u32 {
    // SAFETY: a helper without arguments.
    nat_clock(unsafe { bpf_ktime_get_ns() })
}
