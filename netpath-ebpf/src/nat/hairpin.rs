//! Hairpin, on an endpoint's host-side device (after anti-spoofing), written once for
//! both address families: an endpoint reaching a port published on one of the host's
//! addresses, and the replies of such connections, translated without leaving the fast
//! path — IPv4's with `NETPATH_PUBLISH`/`NETPATH_DNAT_CT`, IPv6's (DNAT66) with
//! `NETPATH_PUBLISH6`/`NETPATH_DNAT_CT6`, by the same rules.

use aya_ebpf::programs::TcContext;
use netpath_common::{
    maps::{DropReason, EndpointValue},
    nat::{NAT_FLAG_INBOUND, NAT_FLAG_SELF, NatTargetOf, TupleOf},
    packet::Classified,
};

use super::{
    Flow,
    family::{Family, Scratch},
    publish::{Publish, published, remember_front, tracked_front},
    rewrite,
};
use crate::{
    family::{V4, V6},
    frame::TcFrame,
    route::{Hop, is_local},
};

/// The forward packet is DNATed to the published endpoint (keeping the client's
/// address; an endpoint reaching its own published port also gets the host address as
/// its source, or its reply would never leave it); the reply gets the published address
/// and port back. Returns the endpoint the rewritten packet must be handed to; the
/// caller redirects it there (never to the kernel: a packet rewritten to carry a host
/// address as its source would be dropped there as a martian). `Ok(None)`: not a
/// hairpin packet, untouched. IPv4's, inlined in its caller; IPv6's runs the same steps
/// ([`hairpin_reply6`], [`hairpin_local6`], [`hairpin_new6`]) as subprograms of their own
/// (see `main.rs`).
#[inline(always)]
pub fn hairpin4(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    ifindex: u32,
    dst_is_endpoint: bool,
) -> Result<Option<&'static EndpointValue>, DropReason> {
    let Some(f) = Flow::<V4>::ports(frame, c) else {
        return Ok(None);
    };
    V4::with_scratch(|s| match reply(ctx, frame, &f, s)? {
        Reply::Tracked(to) => Ok(to),
        // An endpoint's address is never the host's: endpoint ↔ endpoint packets, the
        // fast path's bulk, skip the publish lookups.
        Reply::Untracked if dst_is_endpoint => Ok(None),
        Reply::Untracked => new_connection(ctx, frame, &f, s, Some(ifindex)),
    })
    .unwrap_or(Ok(None))
}

/// What [`hairpin_reply6`] found.
pub enum Reply {
    /// The packet is no reply of a connection to a published port: it may start one.
    Untracked,
    /// A reply of such a connection: translated and for this endpoint (`Some`), or one
    /// whose replies are the uplink's (`None`, untouched).
    Tracked(Option<&'static EndpointValue>),
}

/// [`hairpin4`]'s first step on its own, for IPv6: a reply of a hairpinned connection gets the
/// published address and port back as its source.
#[inline(always)]
pub fn hairpin_reply6(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<Reply, DropReason> {
    let Some(f) = Flow::<V6>::ports(frame, c) else {
        return Ok(Reply::Tracked(None));
    };
    V6::with_scratch(|s| reply(ctx, frame, &f, s)).unwrap_or(Ok(Reply::Tracked(None)))
}

/// The check of [`hairpin4`]'s second step on its own, for an IPv6 [`Reply::Untracked`] packet
/// to no endpoint's address: whether it is a connection to a port published on a host
/// address, to an endpoint. Then [`hairpin_new6`] translates it.
#[inline(always)]
pub fn hairpin_local6(ctx: &TcContext, frame: &TcFrame, c: Classified, ifindex: u32) -> bool {
    let Some(f) = Flow::<V6>::ports(frame, c) else {
        return false;
    };
    published::<V6>(f.l4.proto, f.dst, f.dport).is_some_and(|ep| V6::endpoint(ep.addr).is_some())
        && is_local::<V6>(ctx, ifindex, f.src, f.dst)
}

/// [`hairpin4`]'s second step on its own, for an IPv6 packet [`hairpin_local6`] said is a
/// connection to a port published on a host address: it is DNATed.
#[inline(always)]
pub fn hairpin_new6(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<Option<&'static EndpointValue>, DropReason> {
    let Some(f) = Flow::<V6>::ports(frame, c) else {
        return Ok(None);
    };
    V6::with_scratch(|s| new_connection(ctx, frame, &f, s, None)).unwrap_or(Ok(None))
}

/// A reply of a hairpinned connection?
///
/// Verifier (here and in [`new_connection`]): the tuple, front and target live in the
/// family's work space (`Scratch`; IPv6's a per-CPU map), and endpoints are referred to
/// in their map, not copied: held in registers, IPv6's addresses went byte by byte to
/// the stack around every helper call (≈570 bytes, past the 512 of a call chain).
#[inline(always)]
fn reply<F: Family + Publish + Hop>(
    ctx: &TcContext,
    frame: &TcFrame,
    f: &Flow<F>,
    s: &mut Scratch<F::Addr>,
) -> Result<Reply, DropReason> {
    {
        s.orig = f.tuple();
        let Some(front) = tracked_front::<F>(&s.orig, f.tcp_flags(frame), true) else {
            return Ok(Reply::Untracked);
        };
        s.back = front;
        // A connection routed in from outside: its replies are the uplink's, untranslated.
        if s.back.flags & NAT_FLAG_INBOUND != 0 {
            return Ok(Reply::Tracked(None));
        }
        let to_self = s.back.flags & NAT_FLAG_SELF != 0;
        // Replies to clients that are not endpoints are the uplink's (publish_reply).
        let Some(to) = F::endpoint(if to_self { s.orig.src } else { s.orig.dst }) else {
            return Ok(Reply::Tracked(None));
        };
        let published_as = NatTargetOf::new(s.back.addr, s.back.port);
        let source = NatTargetOf::new(s.orig.src, s.orig.sport);
        rewrite(ctx, &f.l4, F::SRC, source, published_as)?;
        if to_self {
            let back_to_self = NatTargetOf::new(s.orig.src, s.orig.dport);
            let destination = NatTargetOf::new(s.orig.dst, s.orig.dport);
            rewrite(ctx, &f.l4, F::DST, destination, back_to_self)?;
        }
        Ok(Reply::Tracked(Some(to)))
    }
}

/// A connection to a port published on a host address? (`ifindex`: the device it
/// arrived on, for the FIB to say whether its destination is a host address; `None`:
/// [`hairpin_local6`] said so already.)
#[inline(always)]
fn new_connection<F: Family + Publish + Hop>(
    ctx: &TcContext,
    frame: &TcFrame,
    f: &Flow<F>,
    s: &mut Scratch<F::Addr>,
    ifindex: Option<u32>,
) -> Result<Option<&'static EndpointValue>, DropReason> {
    {
        s.orig = f.tuple();
        let Some(ep) = published::<F>(s.orig.proto, s.orig.dst, s.orig.dport) else {
            return Ok(None);
        };
        s.target = ep;
        let Some(to) = F::endpoint(s.target.addr) else {
            return Ok(None);
        };
        if let Some(ifindex) = ifindex
            && !is_local::<F>(ctx, ifindex, s.orig.src, s.orig.dst)
        {
            return Ok(None);
        }
        let to_self = s.target.addr == s.orig.src;
        let client = if to_self { s.orig.dst } else { s.orig.src };
        s.reply = TupleOf::new(
            s.orig.proto,
            s.target.addr,
            s.target.port,
            client,
            s.orig.sport,
        );
        s.back = NatTargetOf {
            flags: if to_self { NAT_FLAG_SELF } else { 0 },
            ..NatTargetOf::new(s.orig.dst, s.orig.dport)
        };
        remember_front::<F>(&s.reply, &s.back, f.tcp_flags(frame))?;
        let destination = NatTargetOf::new(s.orig.dst, s.orig.dport);
        rewrite(ctx, &f.l4, F::DST, destination, s.target)?;
        if to_self {
            // From the host address, so the endpoint's reply goes out and comes back here.
            let from_host = NatTargetOf::new(s.orig.dst, s.orig.sport);
            let source = NatTargetOf::new(s.orig.src, s.orig.sport);
            rewrite(ctx, &f.l4, F::SRC, source, from_host)?;
        }
        Ok(Some(to))
    }
}
