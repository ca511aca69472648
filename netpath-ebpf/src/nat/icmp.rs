//! ICMP errors about masqueraded packets, arriving on the uplink: translated back so
//! the endpoint that sent the quoted packet gets them (path MTU discovery included).

use aya_ebpf::programs::TcContext;
use netpath_common::{
    maps::DropReason,
    nat::{Tuple, csum_replace4, l4_csum_after_source_change},
    packet::{
        Classified, ETH_HLEN, Frame, IP_CSUM, IP_DST, IP_TOTAL_LEN, IPPROTO_ICMP, IPPROTO_TCP,
        IPPROTO_UDP, PacketClass,
    },
};

use super::{
    ICMP_DEST_UNREACH, ICMP_ECHO_REQUEST, ICMP_PARAMETER_PROBLEM, ICMP_TIME_EXCEEDED,
    rewrite_failed,
};
use crate::{frame::TcFrame, maps::NETPATH_RNAT};

/// Uplink ingress: an ICMP error (destination unreachable — incl. "fragmentation
/// needed" for path MTU discovery —, time exceeded, parameter problem) about a packet of
/// a masqueraded connection. It quotes that packet as it left (from the uplink's
/// address and NAT port), so the outer destination and the quoted source address and
/// port (ICMP: identifier) are translated back, with the quoted IP header checksum, the
/// quoted L4 checksum (when quoted) and the ICMP checksum over all of it. `Ok(true)` if
/// it was one. Quoted headers with IP options are left to the kernel path.
#[inline(always)]
pub(super) fn error_ingress(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<bool, DropReason> {
    if c.class != PacketClass::Ipv4Icmp {
        return Ok(false);
    }
    let at = c.l4_offset;
    // Verifier: a 2-byte load, as in `L4::of`.
    let Some(kind) = frame.load::<2>(at).map(|b| b[0]) else {
        return Ok(false);
    };
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED && kind != ICMP_PARAMETER_PROBLEM {
        return Ok(false);
    }
    // Verifier: the fixed-offset load first, as in the other translations (loaded after
    // the variable-offset ones, its bounds check was merged away).
    let (Some(outer_dst), Some(total)) = (frame.load::<4>(IP_DST), frame.load_be16(IP_TOTAL_LEN))
    else {
        return Ok(false);
    };
    // The end of the IP datagram: a frame may carry padding after it, which no checksum
    // covers and which must not be taken for quoted bytes.
    let end = ETH_HLEN + usize::from(total);
    let icmp_csum_at = at + 2;
    let inner = at + 8;
    let Some(h) = frame.load::<20>(inner) else {
        return Ok(false);
    };
    if h[0] != 0x45 {
        return Ok(false);
    }
    let proto = h[9];
    let in_csum = u16::from_be_bytes([h[10], h[11]]);
    let in_src = [h[12], h[13], h[14], h[15]];
    let in_dst = [h[16], h[17], h[18], h[19]];
    let in_l4 = inner + 20;
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
        IPPROTO_ICMP if p[0] == ICMP_ECHO_REQUEST => {
            (u16::from_be_bytes([p[4], p[5]]), 0, in_l4 + 4, in_l4 + 2)
        }
        _ => return Ok(false),
    };
    // The quoted packet left as uplink:port → remote; its replies are keyed this way.
    let reply = Tuple::new(proto, in_dst, dport, in_src, sport);
    // SAFETY: copied out at once.
    let Some(back) = (unsafe { NETPATH_RNAT.get(reply) }).copied() else {
        return Ok(false);
    };
    // Everything is read before the first write: writes invalidate packet pointers.
    // The quoted L4 checksum may lie beyond what the error quotes (8 bytes at least).
    let l4_csum = if l4_csum_at + 2 <= end {
        frame.load_be16(l4_csum_at)
    } else {
        None
    };
    let ne = |a: [u8; 4]| u64::from(u32::from_ne_bytes(a));
    let ne16 = |v: u16| u64::from(v.to_be());
    // Outer destination: the endpoint (the ICMP checksum does not cover the IP header).
    ctx.store(IP_DST, &back.addr, 0).map_err(rewrite_failed)?;
    ctx.l3_csum_replace(IP_CSUM, ne(outer_dst), ne(back.addr), 4)
        .map_err(rewrite_failed)?;
    // Quoted source address and its header checksum; the ICMP checksum covers both.
    let new_in_csum = csum_replace4(in_csum, in_src, back.addr);
    ctx.store(inner + 12, &back.addr, 0)
        .map_err(rewrite_failed)?;
    ctx.store(inner + 10, &new_in_csum.to_be_bytes(), 0)
        .map_err(rewrite_failed)?;
    ctx.l4_csum_replace(icmp_csum_at, ne(in_src), ne(back.addr), 4)
        .map_err(rewrite_failed)?;
    ctx.l4_csum_replace(icmp_csum_at, ne16(in_csum), ne16(new_in_csum), 2)
        .map_err(rewrite_failed)?;
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
}
