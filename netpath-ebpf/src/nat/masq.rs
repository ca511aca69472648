//! Egress masquerade: a connection from a netpath network leaves the uplink with the
//! uplink's address and a NAT port ([`egress`]); its replies get the endpoint's address
//! and port back ([`ingress`]).

use aya_ebpf::{bindings::BPF_NOEXIST, maps::lpm_trie::Key, programs::TcContext};
use netpath_common::{
    maps::DropReason,
    nat::{
        CT_NEW, NatAge, NatTarget, PORT_RETRIES, PortRange, Tuple, Uplink, ct_next, ct_stale,
        nat_port, no_masq_key, tuple_hash,
    },
    packet::{Classified, IP_DST, IP_SRC, IPPROTO_ICMP},
};

use super::{Flow, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, Inbound, icmp, now, rewrite};
use crate::{
    frame::TcFrame,
    maps::{
        NETPATH_MASQ_SRC, NETPATH_NAT_AGE, NETPATH_NO_MASQ, NETPATH_RNAT, NETPATH_SNAT,
        NETPATH_UPLINKS,
    },
};

/// tc egress on an uplink: masquerade connections from netpath networks.
#[inline(always)]
pub fn egress(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    ifindex: u32,
) -> Result<(), DropReason> {
    // SAFETY: values are copied out at once.
    let Some(uplink) = (unsafe { NETPATH_UPLINKS.get(ifindex) }).copied() else {
        return Ok(());
    };
    let Some(f) = Flow::of(frame, c, Some(ICMP_ECHO_REQUEST)) else {
        return Ok(());
    };
    let Some(&network) = NETPATH_MASQ_SRC.get(Key::new(32, f.src)) else {
        return Ok(());
    };
    // ICMP echo: the identifier is the connection's "port"; replies carry it back.
    let dport = if f.l4.proto == IPPROTO_ICMP {
        0
    } else {
        f.dport
    };
    let orig = Tuple::new(f.l4.proto, f.src, f.sport, f.dst, dport);
    let now = now();
    // SAFETY: copied out at once.
    let target = match unsafe { NETPATH_SNAT.get(orig) }.copied() {
        Some(t) => t,
        // A destination the network reaches with its own addresses: left as it is. (Only
        // looked up for packets without a translation: masqueraded connections pay
        // nothing for it.)
        None if NETPATH_NO_MASQ
            .get(Key::new(64, no_masq_key(network, f.dst)))
            .is_some() =>
        {
            return Ok(());
        }
        None => allocate(&orig, &uplink, now)?,
    };
    let reply = Tuple::new(f.l4.proto, f.dst, dport, target.addr, target.port);
    touch(&reply, f.tcp_flags(frame), false, now);
    rewrite(ctx, &f.l4, IP_SRC, f.source(), target)
}

/// tc ingress on an uplink: translate replies to masqueraded connections (and ICMP
/// errors about them) back. Anything but `Untouched` needs no other translation.
#[inline(always)]
pub fn ingress(ctx: &TcContext, frame: &TcFrame, c: Classified) -> Result<Inbound, DropReason> {
    let Some(f) = Flow::of(frame, c, Some(ICMP_ECHO_REPLY)) else {
        return match icmp::error_ingress(ctx, frame, c)? {
            true => Ok(Inbound::Translated),
            false => Ok(Inbound::Untouched),
        };
    };
    let sport = if f.l4.proto == IPPROTO_ICMP {
        0
    } else {
        f.sport
    };
    let reply = Tuple::new(f.l4.proto, f.src, sport, f.dst, f.dport);
    // SAFETY: copied out at once.
    let Some(back) = (unsafe { NETPATH_RNAT.get(reply) }).copied() else {
        return Ok(Inbound::Untouched);
    };
    touch(&reply, f.tcp_flags(frame), true, now());
    rewrite(ctx, &f.l4, IP_DST, f.destination(), back)?;
    Ok(Inbound::ForEndpoint(back.addr))
}

/// Records a packet of the connection whose replies look like `reply`.
#[inline(always)]
fn touch(reply: &Tuple, tcp_flags: u8, from_remote: bool, now: u32) {
    match NETPATH_NAT_AGE.get_ptr_mut(reply) {
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
            let _ = NETPATH_NAT_AGE.insert(reply, age, 0);
        }
    }
}

/// Claims NAT port `reply` (its reply tuple) for a connection translated back to
/// `back`: free, or held by a connection quiet for longer than its timeout (whose
/// records then go). `BPF_NOEXIST` inserts and the delete (which only one CPU can win)
/// keep two connections from ever sharing a port.
#[inline(always)]
fn claim(reply: &Tuple, back: NatTarget, now: u32) -> bool {
    if NETPATH_RNAT
        .insert(reply, back, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        return true;
    }
    // SAFETY: copied out at once.
    let Some(age) = (unsafe { NETPATH_NAT_AGE.get(reply) }).copied() else {
        // Taken, age unknown (e.g. from before an upgrade): start its clock now.
        let age = NatAge {
            seen: now,
            state: CT_NEW,
            _pad: [0; 3],
        };
        let _ = NETPATH_NAT_AGE.insert(reply, age, u64::from(BPF_NOEXIST));
        return false;
    };
    if !ct_stale(reply.proto, age, now) {
        return false;
    }
    // SAFETY: copied out at once.
    let Some(old) = (unsafe { NETPATH_RNAT.get(reply) }).copied() else {
        return false;
    };
    if NETPATH_RNAT.remove(reply).is_err() {
        return false;
    }
    let old_orig = Tuple::new(reply.proto, old.addr, old.port, reply.src, reply.sport);
    let _ = NETPATH_SNAT.remove(old_orig);
    let _ = NETPATH_NAT_AGE.remove(reply);
    NETPATH_RNAT
        .insert(reply, back, u64::from(BPF_NOEXIST))
        .is_ok()
}

/// Picks a free NAT port for `orig` on `uplink` and records both directions.
#[inline(always)]
fn allocate(orig: &Tuple, uplink: &Uplink, now: u32) -> Result<NatTarget, DropReason> {
    let range = PortRange {
        first: uplink.first_port,
        last: uplink.last_port,
    };
    let hash = tuple_hash(orig);
    let back = NatTarget::new(orig.src, orig.sport);
    let mut attempt = 0;
    // Verifier: a constant-bounded loop.
    while attempt < PORT_RETRIES {
        let port = nat_port(orig.sport, hash, attempt, range);
        // What the reply will look like when it arrives on the uplink.
        let reply = Tuple::new(orig.proto, orig.dst, orig.dport, uplink.addr, port);
        // The reply tuple is the NAT port's owner.
        if claim(&reply, back, now) {
            let target = NatTarget::new(uplink.addr, port);
            if NETPATH_SNAT.insert(orig, target, 0).is_err() {
                // Roll back the claim: no half-recorded connection.
                let _ = NETPATH_RNAT.remove(reply);
                return Err(DropReason::NatMapFull);
            }
            return Ok(target);
        }
        attempt += 1;
    }
    Err(DropReason::NatPortsExhausted)
}
