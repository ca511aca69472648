//! Published ports on the uplink, for either address family ([`Publish`]): a connection
//! to a published host port is DNATed to its endpoint, keeping the client's address
//! ([`publish_ingress`], [`publish_ingress6`]); the endpoint's replies leave with the
//! published address and port as their source ([`publish_reply`], [`publish_reply6`]).
//! IPv4 connections routed in to an endpoint's own address are recorded so their replies
//! leave unmasqueraded.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::LruHashMap, programs::TcContext};
use netpath_common::{
    maps::{DropReason, EndpointKey},
    nat::{NAT_FLAG_INBOUND, NatTarget, NatTargetOf, PublishKeyOf, Tuple, TupleOf},
    packet::Classified,
};

use super::{Flow, Inbound, Ip, V4, V6, rewrite};
use crate::{
    frame::TcFrame,
    maps::{
        NETPATH_DNAT_CT, NETPATH_DNAT_CT6, NETPATH_ENDPOINTS, NETPATH_PUBLISH, NETPATH_PUBLISH6,
        NETPATH_SNAT,
    },
};

/// A family's published ports: its publish and connection maps, and which of its
/// addresses are the host's.
pub(super) trait Publish: Ip + Sized {
    /// The family's "every address" (`0.0.0.0`, `::`).
    const ANY: Self::Addr;
    /// The publish entry for exactly `key`.
    fn publish_entry(key: PublishKeyOf<Self::Addr>) -> Option<NatTargetOf<Self::Addr>>;
    /// Reply tuple (endpoint side) → the front the client connected to.
    fn dnat_ct() -> &'static LruHashMap<TupleOf<Self::Addr>, NatTargetOf<Self::Addr>>;
    /// Whether `addr` is one of this host's addresses.
    fn is_host_addr(addr: Self::Addr) -> bool;
    /// A connection no publish claimed, to a destination that is no host address.
    fn not_published(f: &Flow<Self>);
}

impl Publish for V4 {
    const ANY: [u8; 4] = [0; 4];

    #[inline(always)]
    fn publish_entry(key: PublishKeyOf<[u8; 4]>) -> Option<NatTarget> {
        // SAFETY: values are copied out at once.
        unsafe { NETPATH_PUBLISH.get(key) }.copied()
    }

    #[inline(always)]
    fn dnat_ct() -> &'static LruHashMap<Tuple, NatTarget> {
        &NETPATH_DNAT_CT
    }

    #[inline(always)]
    fn is_host_addr(addr: [u8; 4]) -> bool {
        crate::sock::is_host_addr(addr)
    }

    #[inline(always)]
    fn not_published(f: &Flow<V4>) {
        track_inbound(f);
    }
}

impl Publish for V6 {
    const ANY: [u8; 16] = [0; 16];

    #[inline(always)]
    fn publish_entry(key: PublishKeyOf<[u8; 16]>) -> Option<NatTargetOf<[u8; 16]>> {
        // SAFETY: values are copied out at once.
        unsafe { NETPATH_PUBLISH6.get(key) }.copied()
    }

    #[inline(always)]
    fn dnat_ct() -> &'static LruHashMap<TupleOf<[u8; 16]>, NatTargetOf<[u8; 16]>> {
        &NETPATH_DNAT_CT6
    }

    #[inline(always)]
    fn is_host_addr(addr: [u8; 16]) -> bool {
        crate::sock::is_host_addr6(addr)
    }

    #[inline(always)]
    fn not_published(_: &Flow<V6>) {
        // IPv6 endpoints have routable addresses of their own: a connection routed in to
        // one is not translated on the way in, and its replies are not published ones.
    }
}

/// The endpoint a packet to `dst:dport` is published to: an entry for that exact host
/// address first, then one for every address.
#[inline(always)]
pub(super) fn published<F: Publish>(
    proto: u8,
    dst: F::Addr,
    dport: u16,
) -> Option<NatTargetOf<F::Addr>> {
    F::publish_entry(PublishKeyOf::new(proto, dst, dport))
        .or_else(|| F::publish_entry(PublishKeyOf::new(proto, F::ANY, dport)))
}

/// The IPv4 publish entry for exactly (`proto`, `host_ip`, `port`); 0.0.0.0 is "every
/// address".
#[inline(always)]
pub fn published_at(proto: u8, host_ip: [u8; 4], port: u16) -> Option<NatTarget> {
    V4::publish_entry(PublishKeyOf::new(proto, host_ip, port))
}

/// [`published_at`] for IPv6; `::` is "every address".
#[inline(always)]
pub fn published_at6(proto: u8, host_ip: [u8; 16], port: u16) -> Option<NatTargetOf<[u8; 16]>> {
    V6::publish_entry(PublishKeyOf::new(proto, host_ip, port))
}

/// Records in the family's DNAT_CT map that the replies `reply` go back as from `front`,
/// unless that is recorded already. Every packet of a connection passes here, and an LRU
/// map update (a bucket lock, a node off the LRU list) costs several lookups; the lookup
/// also marks the entry recently used, so an ongoing connection's entry is not evicted.
#[inline(always)]
pub(super) fn remember_front<F: Publish>(
    reply: TupleOf<F::Addr>,
    front: NatTargetOf<F::Addr>,
) -> Result<(), DropReason> {
    // SAFETY: copied out at once.
    if unsafe { F::dnat_ct().get(reply) }.copied() == Some(front) {
        return Ok(());
    }
    F::dnat_ct()
        .insert(reply, front, 0)
        .map_err(|_| DropReason::NatMapFull)
}

/// Uplink ingress, after masquerade replies: DNAT a new or ongoing IPv4 connection to a
/// published port to its endpoint, keeping the client's address.
#[inline(always)]
pub fn publish_ingress(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<Inbound, DropReason> {
    Ok(match publish_in::<V4>(ctx, frame, c)? {
        Some(ep) => Inbound::ForEndpoint(ep),
        None => Inbound::Untouched,
    })
}

/// [`publish_ingress`] for IPv6 (DNAT66): the endpoint's IPv6 address the packet now
/// goes to, if it was for a published port.
#[inline(always)]
pub fn publish_ingress6(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<Option<[u8; 16]>, DropReason> {
    publish_in::<V6>(ctx, frame, c)
}

/// DNAT of a connection of family `F` to a published port: the endpoint address the
/// packet now goes to, `None` if it was not for one (untouched).
#[inline(always)]
fn publish_in<F: Publish>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<Option<F::Addr>, DropReason> {
    let Some(f) = Flow::<F>::ports(frame, c) else {
        return Ok(None);
    };
    // A publish on every address answers on the host's own addresses only: traffic routed
    // through this host to a machine behind it (a pod, a VM) keeps its destination.
    let key = PublishKeyOf::new(f.l4.proto, f.dst, f.dport);
    let ep = match F::publish_entry(key) {
        Some(ep) => ep,
        None if F::is_host_addr(f.dst) => {
            let Some(ep) = F::publish_entry(PublishKeyOf::new(f.l4.proto, F::ANY, f.dport)) else {
                return Ok(None);
            };
            ep
        }
        None => {
            F::not_published(&f);
            return Ok(None);
        }
    };
    // Remember how to translate the endpoint's replies back.
    let reply = TupleOf::new(f.l4.proto, ep.addr, ep.port, f.src, f.sport);
    let front = f.destination();
    remember_front::<F>(reply, front)?;
    rewrite(ctx, &f.l4, F::DST, front, ep)?;
    Ok(Some(ep.addr))
}

/// Uplink ingress, for an IPv4 TCP/UDP packet no translation claimed: a connection routed
/// in to endpoint `dst`'s own address (a route to its network through this host) is
/// recorded in NETPATH_DNAT_CT with itself as the front ([`NAT_FLAG_INBOUND`]), so that
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

/// Uplink egress: a reply of an IPv4 connection to a published port leaves with the
/// published address and port as its source. `Ok(true)` if it was one.
#[inline(always)]
pub fn publish_reply(ctx: &TcContext, frame: &TcFrame, c: Classified) -> Result<bool, DropReason> {
    reply_out::<V4>(ctx, frame, c)
}

/// [`publish_reply`] for IPv6.
#[inline(always)]
pub fn publish_reply6(ctx: &TcContext, frame: &TcFrame, c: Classified) -> Result<bool, DropReason> {
    reply_out::<V6>(ctx, frame, c)
}

/// [`publish_reply`] for family `F`.
#[inline(always)]
fn reply_out<F: Publish>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<bool, DropReason> {
    let Some(f) = Flow::<F>::ports(frame, c) else {
        return Ok(false);
    };
    let tuple = TupleOf::new(f.l4.proto, f.src, f.sport, f.dst, f.dport);
    // SAFETY: copied out at once.
    let Some(front) = (unsafe { F::dnat_ct().get(tuple) }).copied() else {
        return Ok(false);
    };
    if front.flags & NAT_FLAG_INBOUND != 0 {
        // A reply of a connection routed in: it leaves as it is, unmasqueraded.
        return Ok(true);
    }
    rewrite(ctx, &f.l4, F::SRC, f.source(), front).map(|()| true)
}
