//! Egress masquerade, for either address family ([`Family`]): a connection from a
//! netpath network leaves the uplink with the uplink's address and a NAT port
//! ([`egress`]); its replies get the endpoint's address and port back ([`ingress`]).

use aya_ebpf::{bindings::BPF_NOEXIST, programs::TcContext};
use netpath_common::{
    maps::DropReason,
    nat::{
        CT_NEW, NatAge, NatTargetOf, PORT_RETRIES, TupleOf, UplinkOf, ct_next, ct_stale, nat_port,
        tuple_hash,
    },
    packet::Classified,
};

use super::{Family, Flow, Inbound, V4, icmp, now, rewrite};
use crate::frame::TcFrame;

/// tc egress on an uplink: masquerade IPv4 connections from netpath networks.
#[inline(always)]
pub fn egress(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    ifindex: u32,
) -> Result<(), DropReason> {
    masquerade::<V4>(ctx, frame, c, ifindex)
}

/// tc egress on an uplink: masquerade connections of family `F` from netpath networks.
#[inline(always)]
pub(super) fn masquerade<F: Family>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    ifindex: u32,
) -> Result<(), DropReason> {
    let Some(uplink) = F::uplink(ifindex) else {
        return Ok(());
    };
    let Some(f) = Flow::<F>::of(frame, c, Some(F::ECHO_REQUEST)) else {
        return Ok(());
    };
    let Some(network) = F::masq_network(f.src) else {
        return Ok(());
    };
    // ICMP echo: the identifier is the connection's "port"; replies carry it back.
    let dport = if f.l4.proto == F::ICMP_PROTO {
        0
    } else {
        f.dport
    };
    let orig = TupleOf::new(f.l4.proto, f.src, f.sport, f.dst, dport);
    let now = now();
    // SAFETY: copied out at once.
    let target = match unsafe { F::snat().get(orig) }.copied() {
        Some(t) => t,
        // A destination the network reaches with its own addresses: left as it is. (Only
        // looked up for packets without a translation: masqueraded connections pay
        // nothing for it.)
        None if F::exempt(network, f.dst) => return Ok(()),
        None => allocate::<F>(&orig, &uplink, now)?,
    };
    let reply = TupleOf::new(f.l4.proto, f.dst, dport, target.addr, target.port);
    touch::<F>(&reply, f.tcp_flags(frame), false, now);
    rewrite(ctx, &f.l4, F::SRC, f.source(), target)
}

/// tc ingress on an uplink: translate replies to masqueraded IPv4 connections (and ICMP
/// errors about them) back. Anything but `Untouched` needs no other translation.
#[inline(always)]
pub fn ingress(ctx: &TcContext, frame: &TcFrame, c: Classified) -> Result<Inbound, DropReason> {
    Ok(match unmasquerade::<V4>(ctx, frame, c)? {
        Unmasqueraded::Untouched => Inbound::Untouched,
        Unmasqueraded::Error => Inbound::Translated,
        Unmasqueraded::Reply(to) => Inbound::ForEndpoint(to),
    })
}

/// What [`unmasquerade`] did.
pub(super) enum Unmasqueraded<A> {
    /// Not a masqueraded connection's: untouched.
    Untouched,
    /// An ICMP error about one, translated back.
    Error,
    /// A reply, translated back to this endpoint address.
    Reply(A),
}

/// tc ingress on an uplink: translate replies to masqueraded connections of family `F`
/// (and ICMP errors about them) back.
#[inline(always)]
pub(super) fn unmasquerade<F: Family>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<Unmasqueraded<F::Addr>, DropReason> {
    let Some(f) = Flow::<F>::of(frame, c, Some(F::ECHO_REPLY)) else {
        return match icmp::error_ingress::<F>(ctx, frame, c)? {
            true => Ok(Unmasqueraded::Error),
            false => Ok(Unmasqueraded::Untouched),
        };
    };
    let sport = if f.l4.proto == F::ICMP_PROTO {
        0
    } else {
        f.sport
    };
    let reply = TupleOf::new(f.l4.proto, f.src, sport, f.dst, f.dport);
    // SAFETY: copied out at once.
    let Some(back) = (unsafe { F::rnat().get(reply) }).copied() else {
        return Ok(Unmasqueraded::Untouched);
    };
    touch::<F>(&reply, f.tcp_flags(frame), true, now());
    rewrite(ctx, &f.l4, F::DST, f.destination(), back)?;
    Ok(Unmasqueraded::Reply(back.addr))
}

/// Records a packet of the connection whose replies look like `reply`.
#[inline(always)]
fn touch<F: Family>(reply: &TupleOf<F::Addr>, tcp_flags: u8, from_remote: bool, now: u32) {
    match F::ages().get_ptr_mut(reply) {
        Some(age) => {
            // SAFETY: a pointer into the map value, valid for this run; concurrent
            // writers only ever store a newer time or a later state, and a torn update
            // of these two fields is harmless (one more or one fewer packet's worth).
            unsafe {
                let state = ct_next((*age).state, reply.proto, tcp_flags, from_remote);
                if (*age).seen != now || (*age).state != state {
                    (*age).seen = now;
                    (*age).state = state;
                }
            }
        }
        None => {
            let age = NatAge {
                seen: now,
                state: ct_next(CT_NEW, reply.proto, tcp_flags, from_remote),
                _pad: [0; 3],
            };
            // A full LRU map evicts its oldest entry; failure only loses this record.
            let _ = F::ages().insert(reply, age, 0);
        }
    }
}

/// Claims NAT port `reply` (its reply tuple) for a connection translated back to
/// `back`: free, or held by a connection quiet for longer than its timeout (whose
/// records then go). `BPF_NOEXIST` inserts and the delete (which only one CPU can win)
/// keep two connections from ever sharing a port.
#[inline(always)]
fn claim<F: Family>(reply: &TupleOf<F::Addr>, back: NatTargetOf<F::Addr>, now: u32) -> bool {
    if F::rnat()
        .insert(reply, back, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        return true;
    }
    // SAFETY: copied out at once.
    let Some(age) = (unsafe { F::ages().get(reply) }).copied() else {
        // Taken, age unknown (e.g. from before an upgrade): start its clock now.
        let age = NatAge {
            seen: now,
            state: CT_NEW,
            _pad: [0; 3],
        };
        let _ = F::ages().insert(reply, age, u64::from(BPF_NOEXIST));
        return false;
    };
    if !ct_stale(reply.proto, age, now) {
        return false;
    }
    // SAFETY: copied out at once.
    let Some(old) = (unsafe { F::rnat().get(reply) }).copied() else {
        return false;
    };
    if F::rnat().remove(reply).is_err() {
        return false;
    }
    let old_orig = TupleOf::new(reply.proto, old.addr, old.port, reply.src, reply.sport);
    let _ = F::snat().remove(old_orig);
    let _ = F::ages().remove(reply);
    F::rnat()
        .insert(reply, back, u64::from(BPF_NOEXIST))
        .is_ok()
}

/// Picks a free NAT port for `orig` on `uplink` and records both directions.
#[inline(always)]
fn allocate<F: Family>(
    orig: &TupleOf<F::Addr>,
    uplink: &UplinkOf<F::Addr>,
    now: u32,
) -> Result<NatTargetOf<F::Addr>, DropReason> {
    let range = uplink.ports();
    let hash = tuple_hash(orig);
    let back = NatTargetOf::new(orig.src, orig.sport);
    let mut attempt = 0;
    // Verifier: a constant-bounded loop.
    while attempt < PORT_RETRIES {
        let port = nat_port(orig.sport, hash, attempt, range);
        // What the reply will look like when it arrives on the uplink.
        let reply = TupleOf::new(orig.proto, orig.dst, orig.dport, uplink.addr, port);
        // The reply tuple is the NAT port's owner.
        if claim::<F>(&reply, back, now) {
            let target = NatTargetOf::new(uplink.addr, port);
            if F::snat().insert(orig, target, 0).is_err() {
                // Roll back the claim: no half-recorded connection.
                let _ = F::rnat().remove(reply);
                return Err(DropReason::NatMapFull);
            }
            return Ok(target);
        }
        attempt += 1;
    }
    Err(DropReason::NatPortsExhausted)
}
