//! Published ports on the uplink, for either address family ([`Publish`]): a connection
//! to a published host port is DNATed to its endpoint, keeping the client's address
//! ([`publish_dnat`], for IPv4 through [`publish_ingress`]); the endpoint's replies leave
//! with the published address and port as their source ([`publish_reply`]).
//! Connections routed in to an endpoint's own address are recorded so their replies
//! leave unmasqueraded.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::LruHashMap, programs::TcContext};
use netpath_common::{
    maps::DropReason,
    nat::{
        Address, CT_NEW, CtFrontOf, NAT_FLAG_INBOUND, NatTargetOf, PublishKeyOf, TupleOf, ct_next,
    },
    packet::Classified,
};

use super::{Flow, Inbound, Ip, V4, V6, advance, family::Family, now, rewrite};
use crate::{
    frame::TcFrame,
    maps::{
        NETPATH_DNAT_CT, NETPATH_DNAT_CT6, NETPATH_LOCAL_ADDRS, NETPATH_LOCAL_ADDRS6,
        NETPATH_PUBLISH, NETPATH_PUBLISH6,
    },
    route::Hop,
};

/// A family's published ports: its publish and connection maps, and which of its
/// addresses are the host's.
pub(crate) trait Publish: Ip + Sized {
    /// The publish entry for exactly `key`; [`Address::UNSPECIFIED`] (`0.0.0.0`, `::`)
    /// as the key's address is "every address".
    fn publish_entry(key: PublishKeyOf<Self::Addr>) -> Option<NatTargetOf<Self::Addr>>;
    /// Reply tuple (endpoint side) → the front the client connected to, and the
    /// connection's clock and state.
    fn dnat_ct() -> &'static LruHashMap<TupleOf<Self::Addr>, CtFrontOf<Self::Addr>>;
    /// Whether the control plane listed `addr` as one of the host's addresses (the daemon
    /// re-reads them whenever the kernel announces an address change, and every 30 s as a
    /// safety net).
    fn listed_local(addr: Self::Addr) -> bool;
    /// Whether `addr` is a loopback address (`127.0.0.0/8`, `::1`).
    fn is_loopback(addr: Self::Addr) -> bool;
    /// A connection no publish claimed, to a destination that is no host address.
    fn not_published(f: &Flow<Self>);

    /// Whether `addr` is one of this host's addresses: loopback, or one the control plane
    /// listed.
    #[inline(always)]
    fn is_host_addr(addr: Self::Addr) -> bool {
        Self::is_loopback(addr) || Self::listed_local(addr)
    }
}

/// The [`Publish`] methods that name a family's maps, from the maps.
macro_rules! publish_maps {
    (publish: $publish:ident, dnat_ct: $dnat_ct:ident, local_addrs: $local:ident,) => {
        #[inline(always)]
        fn publish_entry(key: PublishKeyOf<Self::Addr>) -> Option<NatTargetOf<Self::Addr>> {
            // SAFETY: values are copied out at once.
            unsafe { $publish.get(key) }.copied()
        }

        #[inline(always)]
        fn dnat_ct() -> &'static LruHashMap<TupleOf<Self::Addr>, CtFrontOf<Self::Addr>> {
            &$dnat_ct
        }

        #[inline(always)]
        fn listed_local(addr: Self::Addr) -> bool {
            // SAFETY: presence check only.
            unsafe { $local.get(addr) }.is_some()
        }
    };
}

impl Publish for V4 {
    publish_maps! {
        publish: NETPATH_PUBLISH,
        dnat_ct: NETPATH_DNAT_CT,
        local_addrs: NETPATH_LOCAL_ADDRS,
    }

    #[inline(always)]
    fn is_loopback(addr: [u8; 4]) -> bool {
        addr[0] == 127
    }

    #[inline(always)]
    fn not_published(f: &Flow<V4>) {
        track_inbound::<V4>(f);
    }
}

impl Publish for V6 {
    publish_maps! {
        publish: NETPATH_PUBLISH6,
        dnat_ct: NETPATH_DNAT_CT6,
        local_addrs: NETPATH_LOCAL_ADDRS6,
    }

    #[inline(always)]
    fn is_loopback(addr: [u8; 16]) -> bool {
        addr == LOOPBACK6
    }

    #[inline(always)]
    fn not_published(f: &Flow<V6>) {
        track_inbound::<V6>(f);
    }
}

/// `::1`.
const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The endpoint a packet to `dst:dport` is published to: an entry for that exact host
/// address first, then one for every address.
#[inline(always)]
pub(super) fn published<F: Publish>(
    proto: u8,
    dst: F::Addr,
    dport: u16,
) -> Option<NatTargetOf<F::Addr>> {
    F::publish_entry(PublishKeyOf::new(proto, dst, dport))
        .or_else(|| F::publish_entry(PublishKeyOf::new(proto, F::Addr::UNSPECIFIED, dport)))
}

/// Records in the family's DNAT_CT map that the replies `reply` go back as from `front`,
/// and a packet of the connection from its client carrying `tcp_flags` (its clock and
/// state); a new entry only if none with that front is there. Every packet of a
/// connection passes here, and an LRU map update (a bucket lock, a node off the LRU list)
/// costs several lookups, so an existing entry is updated in place; the lookup also marks
/// it recently used, so an ongoing connection's entry is not evicted.
#[inline(always)]
pub(super) fn remember_front<F: Publish>(
    reply: &TupleOf<F::Addr>,
    front: &NatTargetOf<F::Addr>,
    tcp_flags: u8,
) -> Result<(), DropReason> {
    let now = now();
    if let Some(ct) = F::dnat_ct().get_ptr_mut(reply) {
        // SAFETY: a pointer into the map value, valid for this run (`advance`'s contract).
        unsafe {
            if (*ct).front() == *front {
                let (seen, state) = (&raw mut (*ct).seen, &raw mut (*ct).state);
                advance(seen, state, reply.proto, tcp_flags, false, now);
                return Ok(());
            }
        }
    }
    let ct = CtFrontOf::new(*front, ct_next(CT_NEW, reply.proto, tcp_flags, false), now);
    F::dnat_ct()
        .insert(reply, ct, 0)
        .map_err(|_| DropReason::NatMapFull)
}

/// The front recorded for a connection whose replies look like `reply`, if it is
/// tracked, with this packet (carrying `tcp_flags`; sent by the endpoint, the side that
/// answers, if `answer`) counted on its clock and state.
#[inline(always)]
pub(super) fn tracked_front<F: Publish>(
    reply: &TupleOf<F::Addr>,
    tcp_flags: u8,
    answer: bool,
) -> Option<NatTargetOf<F::Addr>> {
    let ct = F::dnat_ct().get_ptr_mut(reply)?;
    // SAFETY: a pointer into the map value, valid for this run (`advance`'s contract).
    unsafe {
        let (seen, state) = (&raw mut (*ct).seen, &raw mut (*ct).state);
        advance(seen, state, reply.proto, tcp_flags, answer, now());
        Some((*ct).front())
    }
}

/// Uplink ingress, after masquerade replies: [`publish_dnat`] of an IPv4 connection, as
/// what the ingress translations did.
#[inline(always)]
pub fn publish_ingress(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<Inbound, DropReason> {
    Ok(match publish_dnat::<V4>(ctx, frame, c)? {
        Some(ep) => Inbound::ForEndpoint(ep),
        None => Inbound::Untouched,
    })
}

/// Uplink ingress: DNAT of a new or ongoing connection of family `F` (IPv6: DNAT66) to a
/// published port, keeping the client's address: the endpoint address the packet now
/// goes to, `None` if it was not for one (untouched).
#[inline(always)]
pub fn publish_dnat<F: Publish>(
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
            let Some(ep) =
                F::publish_entry(PublishKeyOf::new(f.l4.proto, F::Addr::UNSPECIFIED, f.dport))
            else {
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
    remember_front::<F>(&reply, &front, f.tcp_flags(frame))?;
    rewrite(ctx, &f.l4, F::DST, front, ep)?;
    Ok(Some(ep.addr))
}

/// Uplink ingress, for a TCP/UDP packet no translation claimed: a connection routed in
/// to endpoint `dst`'s own address (a route to its network through this host) is recorded
/// in the family's DNAT_CT map with itself as the front ([`NAT_FLAG_INBOUND`]), so that
/// [`publish_reply`] lets its replies leave as they are instead of masquerading them —
/// unless the tuple is that of a masqueraded connection the endpoint opened (a remote's
/// packet to it is then the reply the kernel path already delivers), and never over an
/// existing entry (a published connection's state is not replaced by a forged packet).
#[inline(always)]
fn track_inbound<F: Publish + Hop + Family>(f: &Flow<F>) {
    if F::endpoint(f.dst).is_none() {
        return;
    }
    let reply = TupleOf::new(f.l4.proto, f.dst, f.dport, f.src, f.sport);
    // Recorded already (every later packet of the connection): one lookup and done.
    // SAFETY: presence checks only.
    if unsafe { F::dnat_ct().get(reply) }.is_some() || unsafe { F::snat().get(reply) }.is_some() {
        return;
    }
    let front = NatTargetOf {
        flags: NAT_FLAG_INBOUND,
        ..f.destination()
    };
    let ct = CtFrontOf::new(front, CT_NEW, now());
    // A full LRU map evicts its oldest entry; a lost race means another CPU recorded it.
    let _ = F::dnat_ct().insert(reply, ct, u64::from(BPF_NOEXIST));
}

/// Uplink egress: a reply of a connection of family `F` to a published port leaves with
/// the published address and port as its source. `Ok(true)` if it was one.
#[inline(always)]
pub fn publish_reply<F: Publish>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<bool, DropReason> {
    let Some(f) = Flow::<F>::ports(frame, c) else {
        return Ok(false);
    };
    let tuple = f.tuple();
    let Some(front) = tracked_front::<F>(&tuple, f.tcp_flags(frame), true) else {
        return Ok(false);
    };
    if front.flags & NAT_FLAG_INBOUND != 0 {
        // A reply of a connection routed in: it leaves as it is, unmasqueraded.
        return Ok(true);
    }
    rewrite(ctx, &f.l4, F::SRC, f.source(), front).map(|()| true)
}
