//! ICMP errors about masqueraded packets, arriving on the uplink: translated back so
//! the endpoint that sent the quoted packet gets them (path MTU discovery included), for
//! either address family ([`Family`]).

use aya_ebpf::{bindings::BPF_F_PSEUDO_HDR, programs::TcContext};
use netpath_common::{
    maps::DropReason,
    nat::{TupleOf, csum_replace_addr, l4_csum_after_source_change},
    packet::{Classified, Frame, IPPROTO_TCP, IPPROTO_UDP},
};

use super::{Family, csum_addr, rewrite_failed};
use crate::frame::TcFrame;

/// What an ICMP error quotes of the offending packet's IP header.
pub(super) struct Quoted<A> {
    /// The L4 protocol (IPv6: the quoted header's next header; a quoted extension
    /// header is left to the kernel path).
    pub proto: u8,
    /// The quoted IPv4 header checksum (IPv6 has none).
    pub ip_csum: Option<u16>,
    pub src: A,
    pub dst: A,
    /// Offset of the quoted L4 header.
    pub l4_at: usize,
}

/// Uplink ingress: an ICMP error (IPv4: destination unreachable — incl. "fragmentation
/// needed" for path MTU discovery —, time exceeded, parameter problem; IPv6: destination
/// unreachable, packet too big, time exceeded, parameter problem) about a packet of a
/// masqueraded connection. It quotes that packet as it left (from the uplink's address
/// and NAT port), so the outer destination and the quoted source address and port (ICMP:
/// identifier) are translated back, with the quoted IPv4 header checksum, the quoted L4
/// checksum (when quoted) and the ICMP checksum over all of it (ICMPv6's also over the
/// outer destination, through its pseudo-header). `Ok(true)` if it was one. Quoted
/// headers with IPv4 options or IPv6 extension headers are left to the kernel path.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "by reference, the map helpers get pointers into the scratch space, not copies on the stack"
)]
pub(super) fn error_ingress<F: Family>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<bool, DropReason> {
    if c.class != F::ICMP {
        return Ok(false);
    }
    let at = c.l4_offset;
    // Verifier: a 2-byte load, as in `L4::of`.
    let Some(kind) = frame.load::<2>(at).map(|b| b[0]) else {
        return Ok(false);
    };
    if !F::is_error(kind) {
        return Ok(false);
    }
    // Verifier: the fixed-offset load first, as in the other translations (loaded after
    // the variable-offset ones, its bounds check was merged away).
    // The end of the IP datagram: a frame may carry padding after it, which no checksum
    // covers and which must not be taken for quoted bytes.
    let (Some(outer_dst), Some(end)) = (F::load_addr(frame, F::DST), F::datagram_end(frame)) else {
        return Ok(false);
    };
    let icmp_csum_at = at + 2;
    let inner = at + 8;
    let Some(q) = F::quoted(frame, inner) else {
        return Ok(false);
    };
    let (proto, in_src, in_dst, in_l4) = (q.proto, q.src, q.dst, q.l4_at);
    let Some(p) = frame.load::<8>(in_l4) else {
        return Ok(false);
    };
    if in_l4 + 8 > end {
        return Ok(false);
    }
    // (source port or identifier, destination port as the NAT keys it, where the
    // source port sits, where the quoted L4 checksum sits)
    let (sport, dport, sport_at, l4_csum_at) = match proto {
        IPPROTO_TCP => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
            in_l4,
            in_l4 + 16,
        ),
        IPPROTO_UDP => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
            in_l4,
            in_l4 + 6,
        ),
        icmp if icmp == F::ICMP_PROTO && p[0] == F::ECHO_REQUEST => {
            (u16::from_be_bytes([p[4], p[5]]), 0, in_l4 + 4, in_l4 + 2)
        }
        _ => return Ok(false),
    };
    // Everything is read before the first write: writes invalidate packet pointers.
    // The quoted L4 checksum may lie beyond what the error quotes (8 bytes at least).
    let l4_csum = if l4_csum_at + 2 <= end {
        frame.load_be16(l4_csum_at)
    } else {
        None
    };
    let ip_csum = q.ip_csum;
    // The tuple and target live in the family's work space, as in `masq`.
    F::with_scratch(|s| {
        // The quoted packet left as uplink:port → remote; its replies are keyed this way.
        s.reply = TupleOf::new(proto, in_dst, dport, in_src, sport);
        // SAFETY: copied out at once.
        let Some(back) = (unsafe { F::rnat().get(&s.reply) }).copied() else {
            return Ok(false);
        };
        s.back = back;
        let back = &s.back;
        let ne16 = |v: u16| u64::from(v.to_be());
        // Outer destination: the endpoint (ICMPv4's checksum does not cover the IP header,
        // ICMPv6's covers the destination through its pseudo-header).
        ctx.store(F::DST, &back.addr, 0).map_err(rewrite_failed)?;
        F::l3_csum(ctx, outer_dst, back.addr)?;
        if F::ICMP_PSEUDO {
            let pseudo = u64::from(BPF_F_PSEUDO_HDR);
            csum_addr(ctx, icmp_csum_at, outer_dst, back.addr, pseudo)?;
        }
        // Quoted source address and (IPv4) its header checksum; the ICMP checksum covers
        // both.
        ctx.store(inner + F::QUOTED_SRC, &back.addr, 0)
            .map_err(rewrite_failed)?;
        csum_addr(ctx, icmp_csum_at, in_src, back.addr, 0)?;
        if let Some(in_csum) = ip_csum {
            let new_in_csum = csum_replace_addr(in_csum, in_src, back.addr);
            ctx.store(inner + 10, &new_in_csum.to_be_bytes(), 0)
                .map_err(rewrite_failed)?;
            ctx.l4_csum_replace(icmp_csum_at, ne16(in_csum), ne16(new_in_csum), 2)
                .map_err(rewrite_failed)?;
        }
        // Quoted source port (identifier).
        ctx.store(sport_at, &back.port.to_be_bytes(), 0)
            .map_err(rewrite_failed)?;
        ctx.l4_csum_replace(icmp_csum_at, ne16(sport), ne16(back.port), 2)
            .map_err(rewrite_failed)?;
        // Quoted L4 checksum, when quoted.
        if let Some(old) = l4_csum {
            let new = l4_csum_after_source_change(proto, old, in_src, back.addr, sport, back.port);
            ctx.store(l4_csum_at, &new.to_be_bytes(), 0)
                .map_err(rewrite_failed)?;
            ctx.l4_csum_replace(icmp_csum_at, ne16(old), ne16(new), 2)
                .map_err(rewrite_failed)?;
        }
        Ok(true)
    })
    .unwrap_or(Ok(false))
}
