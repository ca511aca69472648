//! netpath's eBPF programs. Entry points stay thin: parse through the shared logic in
//! `netpath-common`, count, return a verdict. Each program's logic lives in its module.
#![no_std]
#![no_main]

mod counters;
mod events;
mod family;
mod frame;
mod maps;
mod nat;
mod policy;
mod route;
mod sock;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use netpath_common::{
    forward::{FrameInfo, Verdict, decide, uplink_candidate},
    ipv6::{IP6_DST, ipv6_info, uplink_candidate6},
    maps::{
        DropReason, ENDPOINT_FLAG_INTERNAL, ENDPOINT_FLAG_PUBLISHED, ENDPOINT_KIND_TAP,
        EndpointKey, EndpointKey6, EndpointValue, Forward, Hook,
    },
    packet::{Classified, ETH_DST, ETH_SRC, Frame, classify, frame_info},
};

use crate::{
    counters::{count_class, count_drop, count_tx},
    family::{V4, V6},
    frame::{TcFrame, XdpFrame},
    maps::{NETPATH_ENDPOINTS, NETPATH_ENDPOINTS6, NETPATH_IFACES},
    nat::{Fragment, Inbound, Side},
    route::redirect,
};

/// tc verdict "no opinion, continue" (`TC_ACT_UNSPEC`; `TCX_NEXT` under tcx): the next
/// program in the chain, or the kernel's normal path, handles the packet.
pub(crate) const TC_ACT_UNSPEC: i32 = -1;
/// tc verdict: drop.
pub(crate) const TC_ACT_SHOT: i32 = 2;
/// tc verdict (and `bpf_redirect*` return value): redirect as requested.
pub(crate) const TC_ACT_REDIRECT: i32 = 7;

/// XDP entry: counts the frame by class and hands it to the kernel unchanged.
#[xdp]
pub fn netpath_xdp(ctx: XdpContext) -> u32 {
    let frame = XdpFrame::new(&ctx);
    let class = classify(&frame).class;
    count_class(Hook::Xdp, class, frame.len());
    xdp_action::XDP_PASS
}

/// What a tc program decided: a tc action for the kernel (`TC_ACT_UNSPEC`, or
/// `TC_ACT_REDIRECT` from a redirect helper), or a drop and its reason. Every program's
/// decision passes through [`verdict`], the one place drops are counted.
pub(crate) type TcVerdict = Result<i32, DropReason>;

/// The action for `v`, counting a drop of `len` bytes under `hook` and its reason.
#[inline(always)]
fn verdict(hook: Hook, v: TcVerdict, len: u64) -> i32 {
    match v {
        Ok(action) => action,
        Err(reason) => {
            count_drop(hook, reason, len);
            TC_ACT_SHOT
        }
    }
}

/// Runs a tc program's logic: makes the frame's headers readable, classifies the frame
/// and counts it under `hook`, then hands it to `program` (with the frame's length) and
/// turns what that decided into a tc action.
#[inline(always)]
fn run_tc(
    ctx: &TcContext,
    hook: Hook,
    program: impl FnOnce(&TcContext, TcFrame, Classified, u64) -> TcVerdict,
) -> i32 {
    let len = ctx.len() as u64;
    let frame = TcFrame::new(ctx);
    let c = classify(&frame);
    count_class(hook, c.class, len);
    let action = verdict(hook, program(ctx, frame, c, len), len);
    events::report(ctx, hook, action, len);
    action
}

/// The device the packet is on: for ingress the one it arrived on, for egress the one
/// it leaves by.
#[inline(always)]
pub(crate) fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `ctx.skb.skb` is the program's `__sk_buff` context, valid for the whole
    // run; `ifindex` is a readable context field for tc programs.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Declares each `name: hook => logic;` as a tc program `name` (its name in the object,
/// which the loader attaches by) that counts its frames under `hook` and runs `logic`
/// ([`run_tc`]).
macro_rules! tc_programs {
    ($( $(#[$doc:meta])* $name:ident: $hook:expr => $logic:ident; )+) => {
        $(
            $(#[$doc])*
            #[classifier]
            pub fn $name(ctx: TcContext) -> i32 {
                run_tc(&ctx, $hook, $logic)
            }
        )+
    };
}

tc_programs! {
    /// On every endpoint's host-side device (and the bridge): [`tc_ingress`].
    netpath_tc_ingress: Hook::TcIngress => tc_ingress;
    /// tcx egress on an uplink: [`uplink_egress`].
    netpath_tc_uplink_egress: Hook::UplinkEgress => uplink_egress;
    /// tcx ingress on an uplink: [`uplink_ingress`].
    netpath_tc_uplink_ingress: Hook::UplinkIngress => uplink_ingress;
}

/// tc ingress, on every endpoint's host-side device (and the bridge). For a frame from
/// an endpoint, applies anti-spoofing, the IPv6 guard and isolation, translates hairpin
/// connections to published ports, and hands same-network unicast (each of them IPv4 and
/// IPv6) straight to the destination endpoint (`bpf_redirect_peer` into a container,
/// `bpf_redirect` out of a TAP), and packets the FIB routes out of an uplink straight to
/// it. Everything else goes to the kernel path unchanged. In bridge mode too: this runs
/// before the bridge, so the bridge never carries what the guard refuses.
#[inline(always)]
fn tc_ingress(ctx: &TcContext, mut frame: TcFrame, c: Classified, len: u64) -> TcVerdict {
    let ifindex = ifindex(ctx);
    // Not an endpoint's device (e.g. the bridge): nothing to enforce or shortcut.
    // SAFETY: the reference points into map memory that stays valid for this run (RCU);
    // a concurrent control-plane update can only replace it with another valid entry.
    let Some(from) = (unsafe { NETPATH_IFACES.get(ifindex) }) else {
        return Ok(TC_ACT_UNSPEC);
    };
    count_tx(ifindex, len);
    // Network policy's lookups, made here (see `policy`).
    if !c.class.is_ipv6() {
        let pass = policy::pass(&frame, &c, from);
        return Ok(ingress4(ctx, &frame, &c, from, pass));
    }
    // The host access bit waits in the skb's control buffer for the end of hairpin's
    // steps (see below): kept in this frame, it grew it past what the chain leaves it.
    let pass = policy::pass(&frame, &c, from);
    set_cb0(ctx, u32::from(pass & policy::HOST_REFUSED));
    // IPv6: the guard, hairpin, the fast path, as in `ingress4` — but hairpin is called
    // from here, not from `ingress6`, in steps. Verifier: a call chain has 512 bytes of
    // stack (each frame rounded up to 16 under the JIT); this entry's frame takes ≈136,
    // `ingress6`'s ≈384, which leaves no room below it for hairpin (its 16-byte
    // addresses, 40-byte tuples and FIB parameters), and hairpin in one subprogram took
    // ≈570 by itself; split, each step takes at most ≈368. So `ingress6` first only says
    // whether hairpin may apply ([`HAIRPIN6`]); then [`hairpin6_reply`],
    // [`hairpin6_local`] and [`hairpin6_new`] try it, each a subprogram of its own; and
    // for a packet that is no hairpin packet (left untouched) `ingress6` runs again, this
    // time to the end. (Packets from unpublished endpoints to other endpoints, the bulk,
    // run it once.) Each returns its tc action as one value (a drop counted by
    // [`verdict`] already, as `TC_ACT_SHOT`): no result on this frame, and room for five
    // arguments. A subprogram that may change the packet invalidates the caller's packet
    // pointers, so the frame is taken again after each (into the same variable: a
    // temporary each time grew this frame past what the chain leaves it).
    // The second pass below needs no policy bit: a packet the policy refuses is dropped
    // in the first (a refusal bars hairpin), so one that gets there was not refused.
    // (Kept across the hairpin steps, the bit grew this frame past what the chain leaves
    // it.)
    let may = ingress6(
        ctx,
        &frame,
        &c,
        from,
        HAIRPIN_FIRST | (pass & policy::REFUSED),
    );
    if may != HAIRPIN6 && may != HAIRPIN6_TO_ENDPOINT {
        return Ok(may);
    }
    frame = TcFrame::new(ctx);
    let mut action = hairpin6_reply(ctx, &frame, &c, may == HAIRPIN6_TO_ENDPOINT);
    if action == UNTRACKED {
        frame = TcFrame::new(ctx);
        action = match hairpin6_local(ctx, &frame, &c) {
            true => hairpin6_new(ctx, &frame, &c),
            false => NOT_HAIRPIN,
        };
    }
    if action == NOT_HAIRPIN {
        // Hairpin declined it: a new connection host access refuses ends here.
        if cb0(ctx) & u32::from(policy::HOST_REFUSED) != 0 {
            return Err(DropReason::HostDenied);
        }
        frame = TcFrame::new(ctx);
        return Ok(ingress6(ctx, &frame, &c, from, 0));
    }
    Ok(action)
}

/// Sets `cb[0]` of the packet's skb (scratch space a tc program may use; written before
/// it is read, as earlier layers, GRO among them, leave theirs there).
#[inline(always)]
fn set_cb0(ctx: &TcContext, value: u32) {
    // SAFETY: `ctx.skb.skb` is the program's `__sk_buff`; `cb` is writable in tc programs.
    unsafe { (*ctx.skb.skb).cb[0] = value }
}

/// `cb[0]` of the packet's skb, as [`set_cb0`] left it.
#[inline(always)]
fn cb0(ctx: &TcContext) -> u32 {
    // SAFETY: as in `set_cb0`; readable in tc programs.
    unsafe { (*ctx.skb.skb).cb[0] }
}

/// [`ingress6`]'s answer when the guard let the packet through and hairpin may apply:
/// to a destination that is no endpoint, or ([`HAIRPIN6_TO_ENDPOINT`]) to one. Not tc
/// actions (those are -1 to 8), like the two below; none leaves [`tc_ingress`].
const HAIRPIN6: i32 = -100;
const HAIRPIN6_TO_ENDPOINT: i32 = -101;
/// [`hairpin6_reply`]'s and [`hairpin6_new`]'s answer for a packet that is no hairpin
/// packet (untouched).
const NOT_HAIRPIN: i32 = -102;
/// [`hairpin6_reply`]'s answer for a packet that is no reply of a connection to a
/// published port (untouched; it may start one).
const UNTRACKED: i32 = -103;

/// [`ingress6`]'s `pass` bits: hairpin may apply (the first pass); and whether the
/// policy refuses the destination (`policy::REFUSED`).
const HAIRPIN_FIRST: u8 = 1;

/// [`tc_ingress`] for everything but IPv6: anti-spoofing (IPv4, ARP), isolation,
/// hairpin, the fast path.
///
/// Verifier: this and [`ingress6`] are functions of their own (BPF subprograms, each
/// with a stack frame of its own, called from a small one): inlined together, LLVM kept
/// an IPv4 path's packet pointer and an IPv6 address word in one stack slot and compared
/// them as one value ("math between pkt pointer and register"), and the one frame grew
/// past what the verifier handles ("verifier bug: stack slot 43"; 512 bytes at most for
/// a call chain). At most five arguments: the length is read again here, and the
/// verdict is returned as its tc action (as [`ingress6`]'s), not through a hidden
/// pointer. `pass`: whether the policy refuses the destination (`policy::REFUSED`).
#[inline(never)]
fn ingress4(
    ctx: &TcContext,
    frame: &TcFrame,
    c: &Classified,
    from: &EndpointValue,
    pass: u8,
) -> i32 {
    let len = ctx.len() as u64;
    verdict(Hook::TcIngress, path4(ctx, frame, c, from, pass), len)
}

/// [`ingress4`]'s logic.
#[inline(always)]
fn path4(
    ctx: &TcContext,
    frame: &TcFrame,
    c: &Classified,
    from: &EndpointValue,
    pass: u8,
) -> TcVerdict {
    let (len, c, ifindex) = (ctx.len() as u64, *c, from.ifindex);
    let published = from.flags & ENDPOINT_FLAG_PUBLISHED != 0;
    let Some(eth_src) = frame.load::<6>(ETH_SRC) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let eth_dst = frame.load::<6>(ETH_DST).unwrap_or([0; 6]);
    let info = frame_info(frame, c);
    let (to, route_out) = match info {
        FrameInfo::Ipv4 { dst, .. } => {
            // SAFETY: copied out at once; a concurrent control-plane update can at worst
            // give an old or new value, both valid endpoints.
            let to = unsafe { NETPATH_ENDPOINTS.get(EndpointKey { ip: dst }) }.copied();
            (to, to.is_none() && uplink_candidate(from, eth_dst, dst))
        }
        _ => (None, false),
    };
    let decision = decide(
        from,
        eth_src,
        info,
        to.as_ref(),
        |_| false,
        policy::dest(pass),
    );
    // Forged packets never reach the NAT, nor those leaving an internal network (whose
    // endpoints reach no published port either); nor do packets to another endpoint from
    // one that never had ports published (they cannot be replies of hairpinned
    // connections, and only packets to a host address can start one). (Verifier: `info`
    // is not used past `decide`; keeping it alive made LLVM copy a register that is unset
    // on some paths.)
    if translatable(from, decision) && (to.is_none() || published) {
        let hairpin = nat::hairpin4(ctx, frame, c, ifindex, to.is_some())?;
        if let Some(to) = hairpin {
            let (way, peer) = (Forward::EndpointToEndpoint, to.kind != ENDPOINT_KIND_TAP);
            return redirect(ctx, way, to.ifindex, peer, to.mac, to.host_mac, len);
        }
        // Hairpin declined it: a new connection host access refuses ends here.
        if pass & policy::HOST_REFUSED != 0 {
            return Err(DropReason::HostDenied);
        }
    }
    act(ctx, decision, route_out, false, ifindex, len)
}

/// Whether a packet from `from` that the fast path decided `decision` on may still be
/// translated (hairpin): not a forgery, not leaving an internal network, and not from an
/// internal network's endpoint at all (a port published on a host address is outside
/// it, the gateway's included).
#[inline(always)]
fn translatable(from: &EndpointValue, decision: Verdict) -> bool {
    let barred = matches!(decision, Verdict::Drop(reason) if reason.bars_translation());
    !barred && from.flags & ENDPOINT_FLAG_INTERNAL == 0
}

/// [`tc_ingress`] for IPv6: the guard, then the fast path. With [`HAIRPIN_FIRST`] in
/// `pass`, a packet the guard lets through that hairpin may apply to (by `ingress4`'s
/// rules) stops short of the fast path: [`HAIRPIN6`] or [`HAIRPIN6_TO_ENDPOINT`], for the
/// caller to try hairpin first. [`policy::REFUSED`]: the policy refuses the destination. A
/// subprogram of its own (see [`ingress4`]), whose tc action
/// [`verdict`] gives (see [`tc_ingress`]).
#[inline(never)]
fn ingress6(
    ctx: &TcContext,
    frame: &TcFrame,
    c: &Classified,
    from: &EndpointValue,
    pass: u8,
) -> i32 {
    let len = ctx.len() as u64;
    verdict(Hook::TcIngress, guard6(ctx, frame, c, from, pass, len), len)
}

/// [`ingress6`]'s logic.
#[inline(always)]
fn guard6(
    ctx: &TcContext,
    frame: &TcFrame,
    c: &Classified,
    from: &EndpointValue,
    pass: u8,
    len: u64,
) -> TcVerdict {
    let Some(eth_src) = frame.load::<6>(ETH_SRC) else {
        return Ok(TC_ACT_UNSPEC);
    };
    let eth_dst = frame.load::<6>(ETH_DST).unwrap_or([0; 6]);
    let info = ipv6_info(frame, *c);
    let dst = match info {
        FrameInfo::Ipv6 { .. } => frame.load::<16>(IP6_DST),
        _ => None,
    };
    // SAFETY: the reference points into map memory that stays valid for this run (RCU);
    // a concurrent control-plane update can only replace it with another valid entry.
    // (Not copied out: this subprogram's stack is what the verifier's limit leaves.)
    let to = dst.and_then(|ip| unsafe { NETPATH_ENDPOINTS6.get(EndpointKey6 { ip }) });
    let route_out = match dst {
        Some(dst) => to.is_none() && uplink_candidate6(from, eth_dst, dst),
        None => false,
    };
    // The global addresses the map gives to this endpoint are its own.
    let owns = |ip: [u8; 16]| {
        // SAFETY: read at once.
        unsafe { NETPATH_ENDPOINTS6.get(EndpointKey6 { ip }) }
            .is_some_and(|e| e.ifindex == from.ifindex)
    };
    let decision = decide(from, eth_src, info, to, owns, policy::dest(pass));
    // As in `ingress4`: forged packets never reach the NAT, nor those of an internal
    // network, nor packets to another endpoint from one that never had ports published.
    let published = from.flags & ENDPOINT_FLAG_PUBLISHED != 0;
    let hairpin = pass & HAIRPIN_FIRST != 0;
    if hairpin && translatable(from, decision) && (to.is_none() || published) {
        return Ok(if to.is_some() {
            HAIRPIN6_TO_ENDPOINT
        } else {
            HAIRPIN6
        });
    }
    act(ctx, decision, route_out, true, from.ifindex, len)
}

/// The first step of IPv6 hairpin ([`nat::hairpin_reply6`]) for a packet [`ingress6`]
/// let through: a reply of a hairpinned connection is translated and handed to its
/// endpoint; otherwise [`NOT_HAIRPIN`] or [`UNTRACKED`], untouched. A subprogram of its
/// own, called from the entry, whose tc action [`verdict`] gives (see [`tc_ingress`]).
#[inline(never)]
fn hairpin6_reply(ctx: &TcContext, frame: &TcFrame, c: &Classified, to_endpoint: bool) -> i32 {
    let v = match nat::hairpin_reply6(ctx, frame, *c) {
        Ok(nat::Reply::Tracked(Some(to))) => hairpin_to(ctx, to),
        Ok(nat::Reply::Tracked(None)) => Ok(NOT_HAIRPIN),
        // An endpoint's address is never the host's: no new hairpin connection.
        Ok(nat::Reply::Untracked) if to_endpoint => Ok(NOT_HAIRPIN),
        Ok(nat::Reply::Untracked) => Ok(UNTRACKED),
        Err(reason) => Err(reason),
    };
    verdict(Hook::TcIngress, v, ctx.len() as u64)
}

/// Whether an [`UNTRACKED`] IPv6 packet to no endpoint is a new connection to a port
/// published on a host address ([`nat::hairpin_local6`]). A subprogram of its own, as
/// [`hairpin6_reply`]: with the translation ([`hairpin6_new`]), the FIB lookup's
/// parameters passed the call chain's 512 bytes.
#[inline(never)]
fn hairpin6_local(ctx: &TcContext, frame: &TcFrame, c: &Classified) -> bool {
    nat::hairpin_local6(ctx, frame, *c, ifindex(ctx))
}

/// The second step of IPv6 hairpin ([`nat::hairpin_new6`]), for a packet
/// [`hairpin6_local`] took: the new connection is DNATed and handed to its endpoint;
/// otherwise [`NOT_HAIRPIN`], untouched. A subprogram of its own, as [`hairpin6_reply`].
#[inline(never)]
fn hairpin6_new(ctx: &TcContext, frame: &TcFrame, c: &Classified) -> i32 {
    let v = match nat::hairpin_new6(ctx, frame, *c) {
        Ok(Some(to)) => hairpin_to(ctx, to),
        Ok(None) => Ok(NOT_HAIRPIN),
        Err(reason) => Err(reason),
    };
    verdict(Hook::TcIngress, v, ctx.len() as u64)
}

/// Hands a hairpinned packet straight to endpoint `to`.
#[inline(always)]
fn hairpin_to(ctx: &TcContext, to: &EndpointValue) -> TcVerdict {
    let (way, peer) = (Forward::EndpointToEndpoint, to.kind != ENDPOINT_KIND_TAP);
    let len = ctx.len() as u64;
    redirect(ctx, way, to.ifindex, peer, to.mac, to.host_mac, len)
}

/// Carries out the fast path's `decision` for a packet (IPv6 with `ipv6`) from the
/// endpoint behind `ifindex`; `route_out`: it may leave through an uplink, past the
/// host's IP stack, when the FIB agrees.
#[inline(always)]
fn act(
    ctx: &TcContext,
    decision: Verdict,
    route_out: bool,
    ipv6: bool,
    ifindex: u32,
    len: u64,
) -> TcVerdict {
    match decision {
        Verdict::Pass if route_out => {
            route::to_uplink(ctx, ifindex, ipv6, len).unwrap_or(Ok(TC_ACT_UNSPEC))
        }
        Verdict::Pass => Ok(TC_ACT_UNSPEC),
        Verdict::Drop(reason) => Err(reason),
        Verdict::Redirect {
            ifindex: target,
            peer,
            dst_mac,
            src_mac,
        } => {
            let way = Forward::EndpointToEndpoint;
            redirect(ctx, way, target, peer, dst_mac, src_mac, len)
        }
    }
}

/// tc (tcx) egress on an uplink: [`uplink_egress4`], [`uplink_egress6`], through
/// [`fragments`].
#[inline(always)]
fn uplink_egress(ctx: &TcContext, frame: TcFrame, c: Classified, _len: u64) -> TcVerdict {
    let ifindex = ifindex(ctx);
    fragments(
        ctx,
        &frame,
        c,
        Side::Egress,
        ifindex,
        |ctx, frame, c| match c.class.is_ipv6() {
            true => uplink_egress6(ctx, frame, c, ifindex),
            false => uplink_egress4(ctx, frame, c, ifindex),
        },
    )
}

/// Runs the uplink's `path` for a packet on its `side`, fragments through
/// `nat::fragment` first: a first fragment then takes `path` classed as it would be
/// whole, and `nat::first_done` records what it got; a later one is done there.
#[inline(always)]
fn fragments(
    ctx: &TcContext,
    frame: &TcFrame,
    c: Classified,
    side: Side,
    ifindex: u32,
    path: impl FnOnce(&TcContext, &TcFrame, &Classified) -> TcVerdict,
) -> TcVerdict {
    let mut c = c;
    let first = match nat::fragment(ctx, frame, c, side, ifindex)? {
        Fragment::Whole => false,
        Fragment::First(whole) => {
            nat::reclassify(&mut c, whole);
            true
        }
        Fragment::Done(action) => return Ok(action),
    };
    let action = path(ctx, frame, &c)?;
    if first {
        nat::first_done(ctx, c, action);
    }
    Ok(action)
}

/// [`uplink_egress`] for IPv4: published ports' replies, then egress masquerade.
///
/// Verifier: a subprogram, so that the program's own frame, which NAT66's steps are
/// called from, does not carry this path's stack (with the IPv4 path inlined in the
/// entry, the chain passed the verifier's 512 bytes: "combined stack size of 2 calls is
/// 608").
#[inline(never)]
fn uplink_egress4(ctx: &TcContext, frame: &TcFrame, c: &Classified, ifindex: u32) -> TcVerdict {
    let c = *c;
    // Replies of connections to published ports take the published address and port
    // as their source — here, after routing: rewritten earlier, a packet with one of
    // the host's addresses as its source would be dropped by the kernel as a martian.
    // Only then egress masquerade. (No port left, or a rewrite failed: never send a
    // half-translated packet.)
    if nat::publish_reply::<V4>(ctx, frame, c)? {
        return Ok(TC_ACT_UNSPEC);
    }
    nat::egress(ctx, frame, c, ifindex, false)?;
    Ok(TC_ACT_UNSPEC)
}

/// [`uplink_egress`] for IPv6: the replies of IPv6 published ports
/// ([`publish_reply6`]), then NAT66, whose steps are subprograms called from the
/// program itself (see `nat::masq::masquerade`).
#[inline(always)]
fn uplink_egress6(ctx: &TcContext, frame: &TcFrame, c: &Classified, ifindex: u32) -> TcVerdict {
    if publish_reply6(ctx, frame, c)? {
        return Ok(TC_ACT_UNSPEC);
    }
    nat::egress(ctx, frame, *c, ifindex, true)?;
    Ok(TC_ACT_UNSPEC)
}

/// Replies of connections to IPv6 published ports take the published address and port
/// as their source (as IPv4's do in [`uplink_egress4`]).
///
/// Verifier: a subprogram, so that its 40-byte tuples sit on a frame of their own, not
/// on the entry's, which NAT66's steps are called from (see [`uplink_egress4`]).
#[inline(never)]
fn publish_reply6(ctx: &TcContext, frame: &TcFrame, c: &Classified) -> Result<bool, DropReason> {
    nat::publish_reply::<V6>(ctx, frame, *c)
}

/// tc (tcx) ingress on an uplink: [`uplink_ingress4`], [`uplink_ingress6`], through
/// [`fragments`].
#[inline(always)]
fn uplink_ingress(ctx: &TcContext, frame: TcFrame, c: Classified, _len: u64) -> TcVerdict {
    fragments(
        ctx,
        &frame,
        c,
        Side::Ingress,
        ifindex(ctx),
        |ctx, frame, c| match c.class.is_ipv6() {
            true => uplink_ingress6(ctx, frame, c),
            false => uplink_ingress4(ctx, frame, c),
        },
    )
}

/// [`uplink_ingress`] for IPv6: replies to NAT66 connections (and ICMPv6 errors about
/// them) are translated back and left to the kernel path; anything else may be a
/// connection to an IPv6 published port ([`publish_ingress6`]). NAT66's steps are
/// subprograms, as in [`uplink_egress6`].
#[inline(always)]
fn uplink_ingress6(ctx: &TcContext, frame: &TcFrame, c: &Classified) -> TcVerdict {
    if nat::ingress6(ctx, frame, *c)? {
        return Ok(TC_ACT_UNSPEC);
    }
    publish_ingress6(ctx, frame, c)
}

/// A connection to an IPv6 published port is DNATed (DNAT66) and handed straight to its
/// endpoint. A subprogram: see [`publish_reply6`].
#[inline(never)]
fn publish_ingress6(ctx: &TcContext, frame: &TcFrame, c: &Classified) -> TcVerdict {
    match nat::publish_dnat::<V6>(ctx, frame, *c)? {
        Some(ip) => {
            let len = ctx.len() as u64;
            route::to_endpoint::<V6>(ctx, ip, len).unwrap_or(Ok(TC_ACT_UNSPEC))
        }
        None => Ok(TC_ACT_UNSPEC),
    }
}

/// [`uplink_ingress`] for IPv4: replies to masqueraded connections and connections to
/// published ports are translated, then handed straight to their endpoint. A
/// subprogram: see [`uplink_egress4`] (the length is read again here, as in
/// [`ingress4`]).
#[inline(never)]
fn uplink_ingress4(ctx: &TcContext, frame: &TcFrame, c: &Classified) -> TcVerdict {
    let (len, c) = (ctx.len() as u64, *c);
    // Replies to masqueraded connections first; anything else may be a connection to a
    // published port. (A translated reply is done: its destination, now an endpoint's
    // address and source port, must not be taken for a published port.)
    let inbound = match nat::ingress(ctx, frame, c) {
        Ok(Inbound::Untouched) => nat::publish_ingress(ctx, frame, c),
        done => done,
    };
    match inbound? {
        Inbound::ForEndpoint(ip) => {
            route::to_endpoint::<V4>(ctx, ip, len).unwrap_or(Ok(TC_ACT_UNSPEC))
        }
        _ => Ok(TC_ACT_UNSPEC),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could panic.
    loop {}
}

/// GPL-compatible, so GPL-only helpers are available to the programs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
