//! Published ports on the uplink: a connection to a published host port is DNATed to
//! its endpoint, keeping the client's address ([`publish_ingress`]); the endpoint's
//! replies leave with the published address and port as their source
//! ([`publish_reply`]). Connections routed in to an endpoint's own address are recorded
//! so their replies leave unmasqueraded.

use aya_ebpf::{bindings::BPF_NOEXIST, programs::TcContext};
use netpath_common::{
    maps::{DropReason, EndpointKey},
    nat::{NAT_FLAG_INBOUND, NatTarget, PublishKey, Tuple},
    packet::{Classified, IP_DST, IP_SRC},
};

use super::{Flow, Inbound, V4, rewrite};
use crate::{
    frame::TcFrame,
    maps::{NETPATH_DNAT_CT, NETPATH_ENDPOINTS, NETPATH_PUBLISH, NETPATH_SNAT},
};

/// The endpoint a packet to `dst:dport` is published to: an entry for that exact host
/// address first, then one for every address.
#[inline(always)]
pub(super) fn published(proto: u8, dst: [u8; 4], dport: u16) -> Option<NatTarget> {
    published_at(proto, dst, dport).or_else(|| published_at(proto, [0; 4], dport))
}

/// The publish entry for exactly (`proto`, `host_ip`, `port`); 0.0.0.0 is "every address".
#[inline(always)]
pub fn published_at(proto: u8, host_ip: [u8; 4], port: u16) -> Option<NatTarget> {
    let key = PublishKey {
        host_ip,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: values are copied out at once.
    unsafe { NETPATH_PUBLISH.get(key) }.copied()
}

/// Records in NETPATH_DNAT_CT that the replies `reply` go back as from `front`, unless
/// that is recorded already. Every packet of a connection passes here, and an LRU map
/// update (a bucket lock, a node off the LRU list) costs several lookups; the lookup also
/// marks the entry recently used, so an ongoing connection's entry is not evicted.
#[inline(always)]
pub(super) fn remember_front(reply: Tuple, front: NatTarget) -> Result<(), DropReason> {
    // SAFETY: copied out at once.
    if unsafe { NETPATH_DNAT_CT.get(reply) }.copied() == Some(front) {
        return Ok(());
    }
    NETPATH_DNAT_CT
        .insert(reply, front, 0)
        .map_err(|_| DropReason::NatMapFull)
}

/// Uplink ingress, after masquerade replies: DNAT a new or ongoing connection to a
/// published port to its endpoint, keeping the client's address.
#[inline(always)]
pub fn publish_ingress(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<Inbound, DropReason> {
    let Some(f) = Flow::ports(frame, c) else {
        return Ok(Inbound::Untouched);
    };
    // A publish on every address answers on the host's own addresses only: traffic routed
    // through this host to a machine behind it (a pod, a VM) keeps its destination.
    let ep = match published_at(f.l4.proto, f.dst, f.dport) {
        Some(ep) => ep,
        None if crate::sock::is_host_addr(f.dst) => {
            let Some(ep) = published_at(f.l4.proto, [0; 4], f.dport) else {
                return Ok(Inbound::Untouched);
            };
            ep
        }
        None => {
            track_inbound(&f);
            return Ok(Inbound::Untouched);
        }
    };
    // Remember how to translate the endpoint's replies back.
    let reply = Tuple::new(f.l4.proto, ep.addr, ep.port, f.src, f.sport);
    let front = f.destination();
    remember_front(reply, front)?;
    rewrite(ctx, &f.l4, IP_DST, front, ep)?;
    Ok(Inbound::ForEndpoint(ep.addr))
}

/// Uplink ingress, for a TCP/UDP packet no translation claimed: a connection routed in to
/// endpoint `dst`'s own address (a route to its network through this host) is recorded
/// in NETPATH_DNAT_CT with itself as the front ([`NAT_FLAG_INBOUND`]), so that
/// [`publish_reply`] lets its replies leave as they are instead of masquerading them —
/// unless the tuple is that of a masqueraded connection the endpoint opened (a remote's
/// packet to it is then the reply the kernel path already delivers), and never over an
/// existing entry (a published connection's state is not replaced by a forged packet).
#[inline(always)]
fn track_inbound(f: &Flow<V4>) {
    // SAFETY: presence checks only.
    if unsafe { NETPATH_ENDPOINTS.get(EndpointKey { ip: f.dst }) }.is_none() {
        return;
    }
    let reply = Tuple::new(f.l4.proto, f.dst, f.dport, f.src, f.sport);
    // Recorded already (every later packet of the connection): one lookup and done.
    // SAFETY: presence checks only.
    if unsafe { NETPATH_DNAT_CT.get(reply) }.is_some()
        || unsafe { NETPATH_SNAT.get(reply) }.is_some()
    {
        return;
    }
    let front = NatTarget {
        flags: NAT_FLAG_INBOUND,
        ..f.destination()
    };
    // A full LRU map evicts its oldest entry; a lost race means another CPU recorded it.
    let _ = NETPATH_DNAT_CT.insert(reply, front, u64::from(BPF_NOEXIST));
}

/// Uplink egress: a reply of a connection to a published port leaves with the
/// published address and port as its source. `Ok(true)` if it was one.
#[inline(always)]
pub fn publish_reply(ctx: &TcContext, frame: &TcFrame, c: Classified) -> Result<bool, DropReason> {
    let Some(f) = Flow::ports(frame, c) else {
        return Ok(false);
    };
    let tuple = Tuple::new(f.l4.proto, f.src, f.sport, f.dst, f.dport);
    // SAFETY: copied out at once.
    let Some(front) = (unsafe { NETPATH_DNAT_CT.get(tuple) }).copied() else {
        return Ok(false);
    };
    if front.flags & NAT_FLAG_INBOUND != 0 {
        // A reply of a connection routed in: it leaves as it is, unmasqueraded.
        return Ok(true);
    }
    rewrite(ctx, &f.l4, IP_SRC, f.source(), front).map(|()| true)
}
