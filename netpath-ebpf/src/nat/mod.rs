//! The NAT of the uplinks and of hairpin traffic, by concern:
//! - [`masq`]: egress masquerade — SNAT of connections from netpath networks to the
//!   uplink's address (tc egress) and the reverse translation of their replies (tc
//!   ingress), with state in two LRU maps written as a pair, `NETPATH_SNAT` (original
//!   tuple → new source) and `NETPATH_RNAT` (reply tuple → original source), ages in
//!   `NETPATH_NAT_AGE`, and per-network exemptions in `NETPATH_NO_MASQ`; TCP, UDP (a zero
//!   UDP checksum stays zero) and ICMP echo (by identifier); and the same for IPv6
//!   (NAT66, the `NETPATH_*6` maps; ICMPv6 echo, a UDP checksum never zero);
//! - [`icmp`]: ICMP and ICMPv6 errors about masqueraded packets, translated back;
//! - [`publish`]: published ports — DNAT on the uplink's ingress (`NETPATH_PUBLISH`), the
//!   replies' source restored on its egress (`NETPATH_DNAT_CT`), which also records
//!   connections routed in to an endpoint's own address so their replies are left alone;
//!   and the same for IPv6 (DNAT66: `NETPATH_PUBLISH6`, `NETPATH_DNAT_CT6`);
//! - [`hairpin`]: endpoints reaching a published port on a host address, on their own
//!   device, over IPv4 and IPv6;
//! - [`frag`]: fragments of those connections through the uplinks, both families: a first
//!   fragment takes the translation of a whole packet and records what it got
//!   (`NETPATH_FRAG`, `NETPATH_FRAG6`), its later fragments the same addresses; a later
//!   fragment whose first was not seen is dropped where the NAT would have translated it.
//!
//! This module holds what they share: where a packet's ports and checksum are ([`Flow`])
//! and the one rewrite that keeps every checksum right, written once for both address
//! families (`crate::family`; the masquerade's part of a family in [`family`]).
//! Everything else goes to the kernel path untouched.

mod family;
mod frag;
mod hairpin;
mod icmp;
mod masq;
mod publish;

use core::marker::PhantomData;

use aya_ebpf::{
    bindings::BPF_F_PSEUDO_HDR, helpers::generated::bpf_ktime_get_ns, programs::TcContext,
};
use netpath_common::{
    maps::DropReason,
    nat::{NatTargetOf, TupleOf, ct_next, nat_clock},
    packet::{Classified, Frame, IPPROTO_TCP, IPPROTO_UDP},
};

use self::family::{Family, csum_addr};
pub use self::{
    family::Scratch,
    hairpin::{Reply, hairpin_local6, hairpin_new6, hairpin_reply6, hairpin4},
    masq::{egress, ingress, ingress6},
    publish::{publish_dnat, publish_ingress, publish_reply},
};
pub(crate) use self::{
    frag::{Fragment, Side, first_done, fragment, reclassify},
    publish::Publish,
};
use crate::{
    family::{Ip, V4, V6},
    frame::TcFrame,
    maps::NETPATH_UPLINKS,
};

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

/// Where a packet (of family `F`) has its ports (or ICMP identifier) and L4 checksum.
struct L4<F> {
    proto: u8,
    /// Offset of the source port (TCP/UDP) or of the identifier (ICMP).
    sport_at: usize,
    /// Offset of the destination port (TCP/UDP) or of the identifier (ICMP).
    dport_at: usize,
    csum_at: usize,
    /// The checksum covers the pseudo-header (TCP/UDP, ICMPv6), so address changes
    /// touch it.
    pseudo: bool,
    /// Extra `bpf_l4_csum_replace` flags (UDP's zero-checksum rules).
    csum_flags: u64,
    family: PhantomData<F>,
}

impl<F: Ip> L4<F> {
    /// The L4 layout of a TCP/UDP packet, or of an ICMP echo of type `icmp_type`.
    #[inline(always)]
    fn of(frame: &TcFrame, c: Classified, icmp_type: Option<u8>) -> Option<L4<F>> {
        let at = c.l4_offset;
        let l4 = |proto, sport_at, dport_at, csum_at, pseudo, csum_flags| L4 {
            proto,
            sport_at,
            dport_at,
            csum_at,
            pseudo,
            csum_flags,
            family: PhantomData,
        };
        match c.class {
            class if class == F::TCP => Some(l4(IPPROTO_TCP, at, at + 2, at + 16, true, 0)),
            class if class == F::UDP => {
                Some(l4(IPPROTO_UDP, at, at + 2, at + 6, true, F::UDP_CSUM_FLAGS))
            }
            // Verifier: a 2-byte load (type and code). For a 1-byte load LLVM turns the
            // bounds check `p + 1 > end` into `p >= end`, from which the verifier
            // learns no readable range.
            class
                if class == F::ICMP
                    && icmp_type.is_some()
                    && frame.load::<2>(at).map(|b| b[0]) == icmp_type =>
            {
                Some(l4(F::ICMP_PROTO, at + 4, at + 4, at + 2, F::ICMP_PSEUDO, 0))
            }
            _ => None,
        }
    }
}

/// A packet's connection as it sits in the packet: its L4 layout and its addresses and
/// ports (for ICMP echo, both "ports" are the identifier). Crate-visible only because
/// `Publish`, which the socket hooks use, names it; its fields stay `nat`'s.
pub(crate) struct Flow<F: Ip> {
    l4: L4<F>,
    src: F::Addr,
    dst: F::Addr,
    sport: u16,
    dport: u16,
}

impl<F: Ip> Flow<F> {
    /// The flow of a TCP/UDP packet, or of an ICMP echo of type `icmp_type`.
    #[inline(always)]
    fn of(frame: &TcFrame, c: Classified, icmp_type: Option<u8>) -> Option<Flow<F>> {
        let l4 = L4::of(frame, c, icmp_type)?;
        // Verifier: the fixed-offset loads before the variable-offset ones (the other
        // way round, the later bounds check was merged away).
        let (src, dst) = (F::load_addr(frame, F::SRC)?, F::load_addr(frame, F::DST)?);
        let (sport, dport) = (frame.load_be16(l4.sport_at)?, frame.load_be16(l4.dport_at)?);
        Some(Flow {
            l4,
            src,
            dst,
            sport,
            dport,
        })
    }

    /// The packet's tuple, as it carries it.
    #[inline(always)]
    fn tuple(&self) -> TupleOf<F::Addr> {
        TupleOf::new(self.l4.proto, self.src, self.sport, self.dst, self.dport)
    }

    /// The destination port as the NAT keys the connection: ICMP echo's identifier is
    /// the connection's "port" (its replies carry it back), so 0 there.
    #[inline(always)]
    fn connection_dport(&self) -> u16 {
        if self.l4.proto == F::ICMP_PROTO {
            0
        } else {
            self.dport
        }
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

    fn source(&self) -> NatTargetOf<F::Addr> {
        NatTargetOf::new(self.src, self.sport)
    }

    fn destination(&self) -> NatTargetOf<F::Addr> {
        NatTargetOf::new(self.dst, self.dport)
    }
}

impl<F: Ip> Flow<F> {
    /// The flow of a TCP or UDP packet (publishing and hairpin translate no ICMP).
    #[inline(always)]
    fn ports(frame: &TcFrame, c: Classified) -> Option<Flow<F>> {
        Flow::of(frame, c, None)
    }
}

/// Rewrites the address at `addr_at` (`F::SRC` or `F::DST`) and the matching port from
/// `old` to `new`, fixing the IP header checksum (IPv4) and the L4 checksum
/// (pseudo-header included where it applies).
#[inline(always)]
fn rewrite<F: Ip>(
    ctx: &TcContext,
    l4: &L4<F>,
    addr_at: usize,
    old: NatTargetOf<F::Addr>,
    new: NatTargetOf<F::Addr>,
) -> Result<(), DropReason> {
    if old.addr != new.addr {
        ctx.store(addr_at, &new.addr, 0).map_err(rewrite_failed)?;
        F::l3_csum(ctx, old.addr, new.addr)?;
        if l4.pseudo {
            let flags = l4.csum_flags | u64::from(BPF_F_PSEUDO_HDR);
            csum_addr(ctx, l4.csum_at, old.addr, new.addr, flags)?;
        }
    }
    if old.port != new.port {
        let port_at = if addr_at == F::SRC {
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
            l4.csum_flags | 2,
        )
        .map_err(rewrite_failed)?;
    }
    Ok(())
}

/// A rewrite helper's failure, as the drop it causes.
#[inline(always)]
pub(crate) fn rewrite_failed(_: i64) -> DropReason {
    DropReason::NatRewriteFailed
}

/// Brings a connection's clock and state — `seen` and `state`, fields of its map value —
/// up to date with a packet of protocol `proto` carrying `tcp_flags` at `now`, sent by the
/// side that answers (`answer`) or by the one that opened it. Writes only what changed, so
/// most packets of a busy connection only read.
///
/// # Safety
///
/// `seen` and `state` point into a map value, valid for this run. Concurrent writers
/// only ever store a newer time or a later state, and a torn update of the two fields is
/// harmless (one packet's worth of age).
#[inline(always)]
unsafe fn advance(
    seen: *mut u32,
    state: *mut u8,
    proto: u8,
    tcp_flags: u8,
    answer: bool,
    now: u32,
) {
    // SAFETY: see the function's contract.
    unsafe {
        let next = ct_next(*state, proto, tcp_flags, answer);
        if *seen != now || *state != next {
            *seen = now;
            *state = next;
        }
    }
}

/// The NAT clock (see `netpath_common::nat::nat_clock`).
#[inline(always)]
fn now() -> u32 {
    // SAFETY: a helper without arguments.
    nat_clock(unsafe { bpf_ktime_get_ns() })
}
