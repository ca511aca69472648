//! Egress masquerade, for either address family ([`Family`]): a connection from a
//! netpath network leaves the uplink with the uplink's address and a NAT port
//! ([`egress`]); its replies get the endpoint's address and port back ([`ingress`]).

// By reference, the map helpers get pointers into the scratch space, not copies of the
// tuples on the stack.
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "pointers into the scratch space, not copies on the stack"
)]

use aya_ebpf::{bindings::BPF_NOEXIST, programs::TcContext};
use netpath_common::{
    maps::DropReason,
    nat::{
        Address, CT_NEW, NatAge, NatTargetOf, PORT_RETRIES, TupleOf, ct_next, ct_stale, nat_port,
        tuple_hash,
    },
    packet::Classified,
};

use super::{Family, Flow, Inbound, V4, V6, advance, family::Scratch, icmp, now, rewrite};
use crate::frame::TcFrame;

/// tc egress on an uplink: masquerade connections from netpath networks, IPv6 ones
/// (NAT66) with `ipv6` (a constant at each call, so only that family's code is there).
#[inline(always)]
pub fn egress(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    ifindex: u32,
    ipv6: bool,
) -> Result<(), DropReason> {
    match ipv6 {
        true => masquerade::<V6>(ctx, frame, c, ifindex),
        false => masquerade::<V4>(ctx, frame, c, ifindex),
    }
}

/// tc egress on an uplink: masquerade connections of family `F` from netpath networks:
/// [`find`] the connection's translation, [`allocate`] one for a new connection,
/// [`translate`] the packet. With `F::SUBPROGRAMS` (NAT66) each step is a BPF
/// subprogram called from here, one after the other.
///
/// Verifier: NAT66's steps nested in one another (or inlined into one frame) passed the
/// verifier's 512 bytes of stack for a call chain; side by side, the chain is the
/// program's frame and one step's. Their state is in the [`Scratch`] (for NAT66 a
/// per-CPU map value, which a subprogram may be given a pointer to).
#[inline(always)]
pub(super) fn masquerade<F: Family>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    ifindex: u32,
) -> Result<(), DropReason> {
    let now = now();
    F::with_scratch(|s| {
        let step = match F::SUBPROGRAMS {
            true => find_outlined::<F>(ctx, &c, ifindex, s),
            false => find::<F>(frame, &c, ifindex, s),
        };
        match step {
            Step::Skip => return Ok(()),
            Step::New if F::SUBPROGRAMS => allocate_outlined::<F>(s, now)?,
            Step::New => allocate::<F>(s, now)?,
            Step::Known => {}
        }
        match F::SUBPROGRAMS {
            true => translate_outlined::<F>(ctx, &c, s, now),
            false => translate::<F>(ctx, frame, &c, s, now),
        }
    })
    .unwrap_or(Err(DropReason::NatMapFull))
}

/// Declares each `fn name(args) -> T = body;` as a BPF subprogram (`#[inline(never)]`)
/// over the family `F`: the outlined steps of [`masquerade`] and [`unmasquerade`]. A
/// step that reads the packet reads it afresh (`TcFrame::current`): a subprogram must
/// not use its caller's packet pointers, which a caller's or an earlier sibling's store
/// invalidated.
macro_rules! subprograms {
    ($( $(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $body:expr; )+) => {
        $(
            $(#[$doc])*
            #[inline(never)]
            fn $name<F: Family>($($arg: $ty),*) -> $ret {
                $body
            }
        )+
    };
}

subprograms! {
    /// [`find`].
    fn find_outlined(
        ctx: &TcContext,
        c: &Classified,
        ifindex: u32,
        s: &mut Scratch<F::Addr>
    ) -> Step = find::<F>(&TcFrame::current(ctx), c, ifindex, s);
    /// [`allocate`].
    fn allocate_outlined(s: &mut Scratch<F::Addr>, now: u32) -> Result<(), DropReason> =
        allocate::<F>(s, now);
    /// [`translate`].
    fn translate_outlined(
        ctx: &TcContext,
        c: &Classified,
        s: &mut Scratch<F::Addr>,
        now: u32
    ) -> Result<(), DropReason> = translate::<F>(ctx, &TcFrame::current(ctx), c, s, now);
    /// [`reply`].
    fn reply_outlined(
        ctx: &TcContext,
        c: &Classified,
        to: &mut F::Addr
    ) -> Result<bool, DropReason> = reply::<F>(ctx, &TcFrame::current(ctx), c, to);
    /// [`icmp::error_ingress`].
    fn error_outlined(ctx: &TcContext, c: &Classified) -> Result<bool, DropReason> =
        icmp::error_ingress::<F>(ctx, &TcFrame::current(ctx), *c);
}

/// What [`find`] found.
enum Step {
    /// Not to be masqueraded.
    Skip,
    /// A connection without a translation yet (`s.orig`, `s.uplink` set).
    New,
    /// A translated connection (`s.orig`, `s.target` set).
    Known,
}

/// Egress: whether the packet is to be masqueraded on uplink `ifindex`, and its
/// connection's translation if it has one.
#[inline(always)]
fn find<F: Family>(
    frame: &TcFrame,
    c: &Classified,
    ifindex: u32,
    s: &mut Scratch<F::Addr>,
) -> Step {
    let Some(uplink) = F::uplink(ifindex) else {
        return Step::Skip;
    };
    let Some(f) = Flow::<F>::of(frame, *c, Some(F::ECHO_REQUEST)) else {
        return Step::Skip;
    };
    let Some(network) = F::masq_network(f.src) else {
        return Step::Skip;
    };
    s.orig = TupleOf::new(f.l4.proto, f.src, f.sport, f.dst, f.connection_dport());
    // SAFETY: copied out at once.
    match unsafe { F::snat().get(&s.orig) }.copied() {
        Some(t) => {
            s.target = t;
            Step::Known
        }
        // A destination the network reaches with its own addresses: left as it is. (Only
        // looked up for packets without a translation: masqueraded connections pay
        // nothing for it.)
        None if F::exempt(network, f.dst) => Step::Skip,
        None => {
            s.uplink = uplink;
            Step::New
        }
    }
}

/// Egress: records the packet of connection `s.orig` and gives it source `s.target`.
#[inline(always)]
fn translate<F: Family>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: &Classified,
    s: &mut Scratch<F::Addr>,
    now: u32,
) -> Result<(), DropReason> {
    // Read again (cheap, and no packet pointer crosses a subprogram call).
    let Some(f) = Flow::<F>::of(frame, *c, Some(F::ECHO_REQUEST)) else {
        return Ok(());
    };
    let dport = f.connection_dport();
    s.reply = TupleOf::new(f.l4.proto, f.dst, dport, s.target.addr, s.target.port);
    touch::<F>(&s.reply, f.tcp_flags(frame), false, now);
    rewrite(ctx, &f.l4, F::SRC, f.source(), s.target)
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

/// tc ingress on an uplink: translate replies to masqueraded IPv6 connections (and
/// ICMPv6 errors about them) back; the kernel path delivers them to the endpoint.
/// Whether the packet was one of them (translated).
#[inline(always)]
pub fn ingress6(ctx: &TcContext, frame: &TcFrame, c: Classified) -> Result<bool, DropReason> {
    Ok(!matches!(
        unmasquerade::<V6>(ctx, frame, c)?,
        Unmasqueraded::Untouched
    ))
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
/// (and ICMP errors about them) back. With `F::SUBPROGRAMS` (NAT66) the two are BPF
/// subprograms called one after the other, as [`masquerade`]'s steps are.
#[inline(always)]
pub(super) fn unmasquerade<F: Family>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
) -> Result<Unmasqueraded<F::Addr>, DropReason> {
    let mut to = F::Addr::UNSPECIFIED;
    let replied = match F::SUBPROGRAMS {
        true => reply_outlined::<F>(ctx, &c, &mut to)?,
        false => reply::<F>(ctx, frame, &c, &mut to)?,
    };
    if replied {
        return Ok(Unmasqueraded::Reply(to));
    }
    let error = match F::SUBPROGRAMS {
        true => error_outlined::<F>(ctx, &c)?,
        false => icmp::error_ingress::<F>(ctx, frame, c)?,
    };
    Ok(match error {
        true => Unmasqueraded::Error,
        false => Unmasqueraded::Untouched,
    })
}

/// Ingress: a reply of a masqueraded connection gets the endpoint's address and port
/// back; whether it was one, its endpoint's address in `to`. (Verifier: an `Option` of
/// an address returned from a subprogram had LLVM store an unset register into its
/// padding, "!read_ok".)
#[inline(always)]
fn reply<F: Family>(
    ctx: &TcContext,
    frame: &TcFrame,
    c: &Classified,
    to: &mut F::Addr,
) -> Result<bool, DropReason> {
    let Some(f) = Flow::<F>::of(frame, *c, Some(F::ECHO_REPLY)) else {
        return Ok(false);
    };
    let sport = if f.l4.proto == F::ICMP_PROTO {
        0
    } else {
        f.sport
    };
    let flags = f.tcp_flags(frame);
    // The tuples live in the family's work space, as in `masquerade`.
    F::with_scratch(|s| {
        s.reply = TupleOf::new(f.l4.proto, f.src, sport, f.dst, f.dport);
        // SAFETY: copied out at once.
        let Some(back) = (unsafe { F::rnat().get(&s.reply) }).copied() else {
            return Ok(false);
        };
        s.back = back;
        touch::<F>(&s.reply, flags, true, now());
        rewrite(ctx, &f.l4, F::DST, f.destination(), s.back)?;
        *to = s.back.addr;
        Ok(true)
    })
    .unwrap_or(Ok(false))
}

/// Records a packet of the connection whose replies look like `reply`.
#[inline(always)]
fn touch<F: Family>(reply: &TupleOf<F::Addr>, tcp_flags: u8, from_remote: bool, now: u32) {
    match F::ages().get_ptr_mut(reply) {
        Some(age) => {
            // SAFETY: fields of the map value, valid for this run (`advance`'s contract).
            unsafe {
                advance(
                    &raw mut (*age).seen,
                    &raw mut (*age).state,
                    reply.proto,
                    tcp_flags,
                    from_remote,
                    now,
                )
            }
        }
        None => {
            let age = NatAge::new(now, ct_next(CT_NEW, reply.proto, tcp_flags, from_remote));
            // A full LRU map evicts its oldest entry; failure only loses this record.
            let _ = F::ages().insert(reply, age, 0);
        }
    }
}

/// Claims NAT port `s.reply` (its reply tuple) for a connection translated back to
/// `s.back`: free, or held by a connection quiet for longer than its timeout (whose
/// records then go). `BPF_NOEXIST` inserts and the delete (which only one CPU can win)
/// keep two connections from ever sharing a port.
#[inline(always)]
fn claim<F: Family>(s: &mut Scratch<F::Addr>, now: u32) -> bool {
    let (reply, back) = (&s.reply, &s.back);
    if F::rnat()
        .insert(reply, back, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        return true;
    }
    // SAFETY: copied out at once.
    let Some(age) = (unsafe { F::ages().get(reply) }).copied() else {
        // Taken, age unknown (e.g. from before an upgrade): start its clock now.
        let age = NatAge::new(now, CT_NEW);
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
    s.old_orig = TupleOf::new(
        s.reply.proto,
        old.addr,
        old.port,
        s.reply.src,
        s.reply.sport,
    );
    let _ = F::snat().remove(&s.old_orig);
    let _ = F::ages().remove(&s.reply);
    F::rnat()
        .insert(&s.reply, &s.back, u64::from(BPF_NOEXIST))
        .is_ok()
}

/// [`allocate`]'s work.
#[inline(always)]
fn allocate<F: Family>(s: &mut Scratch<F::Addr>, now: u32) -> Result<(), DropReason> {
    let (range, uplink_addr) = (s.uplink.ports(), s.uplink.addr);
    let hash = tuple_hash(&s.orig);
    s.back = NatTargetOf::new(s.orig.src, s.orig.sport);
    let mut attempt = 0;
    // Verifier: a constant-bounded loop.
    while attempt < PORT_RETRIES {
        let port = nat_port(s.orig.sport, hash, attempt, range);
        // What the reply will look like when it arrives on the uplink.
        s.reply = TupleOf::new(s.orig.proto, s.orig.dst, s.orig.dport, uplink_addr, port);
        // The reply tuple is the NAT port's owner.
        if claim::<F>(s, now) {
            s.target = NatTargetOf::new(uplink_addr, port);
            if F::snat().insert(&s.orig, &s.target, 0).is_err() {
                // Roll back the claim: no half-recorded connection.
                let _ = F::rnat().remove(&s.reply);
                return Err(DropReason::NatMapFull);
            }
            return Ok(());
        }
        attempt += 1;
    }
    Err(DropReason::NatPortsExhausted)
}
