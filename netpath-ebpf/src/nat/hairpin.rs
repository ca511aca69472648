//! Hairpin, on an endpoint's host-side device (after anti-spoofing): an endpoint
//! reaching a port published on one of the host's addresses, and the replies of such
//! connections, translated without leaving the fast path.

use aya_ebpf::programs::TcContext;
use netpath_common::{
    maps::{DropReason, EndpointKey, EndpointValue},
    nat::{NAT_FLAG_INBOUND, NAT_FLAG_SELF, NatTarget, Tuple},
    packet::{Classified, IP_DST, IP_SRC},
};

use super::{
    Flow, V4,
    publish::{published, remember_front},
    rewrite,
};
use crate::{
    frame::TcFrame,
    maps::{NETPATH_DNAT_CT, NETPATH_ENDPOINTS},
};

/// The forward packet is DNATed to the published endpoint (keeping the client's
/// address; an endpoint reaching its own published port also gets the host address as
/// its source, or its reply would never leave it); the reply gets the published address
/// and port back. Returns the endpoint the rewritten packet must be handed to; the
/// caller redirects it there (never to the kernel: a packet rewritten to carry a host
/// address as its source would be dropped there as a martian). `Ok(None)`: not a
/// hairpin packet, untouched.
#[inline(always)]
pub fn hairpin(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    ifindex: u32,
    dst_is_endpoint: bool,
) -> Result<Option<EndpointValue>, DropReason> {
    let Some(f) = Flow::<V4>::ports(frame, c) else {
        return Ok(None);
    };
    let (proto, src, sport, dst, dport) = (f.l4.proto, f.src, f.sport, f.dst, f.dport);
    let endpoint = |ip: [u8; 4]| {
        // SAFETY: copied out at once.
        unsafe { NETPATH_ENDPOINTS.get(EndpointKey { ip }) }.copied()
    };
    // A reply of a hairpinned connection?
    // SAFETY: copied out at once.
    if let Some(front) =
        unsafe { NETPATH_DNAT_CT.get(Tuple::new(proto, src, sport, dst, dport)) }.copied()
    {
        // A connection routed in from outside: its replies are the uplink's, untranslated.
        if front.flags & NAT_FLAG_INBOUND != 0 {
            return Ok(None);
        }
        let to_self = front.flags & NAT_FLAG_SELF != 0;
        // Replies to clients that are not endpoints are the uplink's (publish_reply).
        let Some(to) = endpoint(if to_self { src } else { dst }) else {
            return Ok(None);
        };
        let published_as = NatTarget::new(front.addr, front.port);
        rewrite(ctx, &f.l4, IP_SRC, f.source(), published_as)?;
        if to_self {
            let back_to_self = NatTarget::new(src, dport);
            rewrite(ctx, &f.l4, IP_DST, f.destination(), back_to_self)?;
        }
        return Ok(Some(to));
    }
    // A connection to a port published on a host address? (An endpoint's address is
    // never the host's: endpoint ↔ endpoint packets, the fast path's bulk, skip the
    // publish lookups.)
    if dst_is_endpoint {
        return Ok(None);
    }
    let Some(ep) = published::<V4>(proto, dst, dport) else {
        return Ok(None);
    };
    let Some(to) = endpoint(ep.addr) else {
        return Ok(None);
    };
    if !crate::route::is_local(ctx, ifindex, src, dst) {
        return Ok(None);
    }
    let to_self = ep.addr == src;
    let client = if to_self { dst } else { src };
    let reply = Tuple::new(proto, ep.addr, ep.port, client, sport);
    let front = NatTarget {
        flags: if to_self { NAT_FLAG_SELF } else { 0 },
        ..f.destination()
    };
    remember_front::<V4>(reply, front)?;
    rewrite(ctx, &f.l4, IP_DST, f.destination(), ep)?;
    if to_self {
        // From the host address, so the endpoint's reply goes out and comes back here.
        let from_host = NatTarget::new(dst, sport);
        rewrite(ctx, &f.l4, IP_SRC, f.source(), from_host)?;
    }
    Ok(Some(to))
}
