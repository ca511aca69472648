//! netpath's eBPF programs. Entry points stay thin: parse through the shared logic in
//! `netpath-common`, count, return a verdict. Each program's logic lives in its module.
#![no_std]
#![no_main]

mod endpoints;
mod frame;
mod nat;
mod sock;
mod stats;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use netpath_common::{
    forward::{FrameInfo, Verdict, decide, redirect_macs},
    maps::{DropReason, ENDPOINT_FLAG_PUBLISHED, ENDPOINT_KIND_TAP, EndpointKey, Hook},
    packet::{Frame, classify, frame_info},
};

use crate::{
    endpoints::{NETPATH_ENDPOINTS, NETPATH_IFACES, count_drop, count_rx, count_tx},
    frame::{TcFrame, XdpFrame},
};

/// tc verdict "no opinion, continue" (`TC_ACT_UNSPEC`; `TCX_NEXT` under tcx): the next
/// program in the chain, or the kernel's normal path, handles the packet.
const TC_ACT_UNSPEC: i32 = -1;
/// tc verdict: drop.
const TC_ACT_SHOT: i32 = 2;
/// tc verdict (and `bpf_redirect*` return value): redirect as requested.
const TC_ACT_REDIRECT: i32 = 7;

/// XDP entry: counts the frame by class and hands it to the kernel unchanged.
#[xdp]
pub fn netpath_xdp(ctx: XdpContext) -> u32 {
    let frame = XdpFrame::new(&ctx);
    let class = classify(&frame).class;
    stats::count(Hook::Xdp, class, frame.len());
    xdp_action::XDP_PASS
}

/// tc ingress entry, on every endpoint's host-side device (and the bridge). Counts the
/// frame by class; for a frame from an endpoint, applies anti-spoofing and isolation,
/// translates hairpin connections to published ports, and hands same-network IPv4
/// unicast straight to the destination endpoint (`bpf_redirect_peer` into a container,
/// `bpf_redirect` out of a TAP). Everything else goes to the kernel path unchanged.
#[classifier]
pub fn netpath_tc_ingress(ctx: TcContext) -> i32 {
    let frame = TcFrame::new(&ctx);
    let c = classify(&frame);
    let len = ctx.len() as u64;
    stats::count(Hook::TcIngress, c.class, len);
    // SAFETY: `ctx.skb.skb` is the program's `__sk_buff` context, valid for the whole
    // run; `ifindex` is a readable context field for tc programs.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Not an endpoint's device (e.g. the bridge): nothing to enforce or shortcut.
    // SAFETY: the reference points into map memory that stays valid for this run (RCU);
    // a concurrent control-plane update can only replace it with another valid entry.
    let Some(from) = (unsafe { NETPATH_IFACES.get(ifindex) }) else {
        return TC_ACT_UNSPEC;
    };
    let published = from.flags & ENDPOINT_FLAG_PUBLISHED != 0;
    count_tx(ifindex, len);
    let Some(eth_src) = frame.load::<6>(6) else {
        return TC_ACT_UNSPEC;
    };
    let info = frame_info(&frame, c.class);
    let to = match info {
        FrameInfo::Ipv4 { dst, .. } => {
            // SAFETY: the value is copied out immediately; a concurrent control-plane
            // update can at worst give an old or new value, both valid endpoints.
            unsafe { NETPATH_ENDPOINTS.get(EndpointKey { ip: dst }) }.copied()
        }
        _ => None,
    };
    let verdict = decide(from, eth_src, info, to.as_ref());
    // Forged packets never reach the NAT; nor do packets to another endpoint from one
    // that never had ports published (they cannot be replies of hairpinned connections,
    // and only packets to a host address can start one). (Verifier: `info` is not used
    // past `decide`; keeping it alive made LLVM copy a register that is unset on some
    // paths.)
    let spoofed = matches!(verdict, Verdict::Drop(reason) if reason.is_spoofing());
    if !spoofed && (to.is_none() || published) {
        match nat::hairpin(&ctx, &frame, c, ifindex, to.is_some()) {
            Ok(Some(to)) => {
                let peer = to.kind != ENDPOINT_KIND_TAP;
                return redirect(&ctx, to.ifindex, peer, to.mac, to.host_mac, len);
            }
            Ok(None) => {}
            Err(_) => {
                count_drop(DropReason::NatFailed, len);
                return TC_ACT_SHOT;
            }
        }
    }
    match verdict {
        Verdict::Pass => TC_ACT_UNSPEC,
        Verdict::Drop(reason) => {
            count_drop(reason, len);
            TC_ACT_SHOT
        }
        Verdict::Redirect {
            ifindex: target,
            peer,
            dst_mac,
            src_mac,
        } => redirect(&ctx, target, peer, dst_mac, src_mac, len),
    }
}

/// Sets the Ethernet addresses ([`redirect_macs`]) and hands the frame to `target`: into the peer of a
/// veth host end (`peer`), or out of it (a TAP, to the VM).
#[inline(always)]
fn redirect(
    ctx: &TcContext,
    target: u32,
    peer: bool,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    len: u64,
) -> i32 {
    // An unreadable header is rewritten whole.
    let current = ctx.load::<[u8; 12]>(0).unwrap_or([0; 12]);
    if let Some(macs) = redirect_macs(current, dst_mac, src_mac)
        && ctx.store(0, &macs, 0).is_err()
    {
        count_drop(DropReason::RedirectFailed, len);
        return TC_ACT_SHOT;
    }
    // SAFETY: plain helper calls with scalar arguments.
    let r = unsafe {
        if peer {
            bpf_redirect_peer(target, 0)
        } else {
            bpf_redirect(target, 0)
        }
    };
    if r != i64::from(TC_ACT_REDIRECT) {
        count_drop(DropReason::RedirectFailed, len);
        return TC_ACT_SHOT;
    }
    count_rx(target, len);
    TC_ACT_REDIRECT
}

/// tc (tcx) egress on an uplink: egress masquerade.
#[classifier]
pub fn netpath_tc_uplink_egress(ctx: TcContext) -> i32 {
    let frame = TcFrame::new(&ctx);
    let c = classify(&frame);
    let len = ctx.len() as u64;
    stats::count(Hook::UplinkEgress, c.class, len);
    // SAFETY: as in netpath_tc_ingress.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // Replies of connections to published ports take the published address and port
    // as their source — here, after routing: rewritten earlier, a packet with one of
    // the host's addresses as its source would be dropped by the kernel as a martian.
    // Only then egress masquerade.
    match nat::publish_reply(&ctx, &frame, c) {
        Ok(true) => return TC_ACT_UNSPEC,
        Ok(false) => {}
        Err(_) => {
            count_drop(DropReason::NatFailed, len);
            return TC_ACT_SHOT;
        }
    }
    if nat::egress(&ctx, &frame, c, ifindex).is_err() {
        // No port left, or a rewrite failed: never send a half-translated packet.
        count_drop(DropReason::NatFailed, len);
        return TC_ACT_SHOT;
    }
    TC_ACT_UNSPEC
}

/// tc (tcx) ingress on an uplink: replies to masqueraded connections.
#[classifier]
pub fn netpath_tc_uplink_ingress(ctx: TcContext) -> i32 {
    let frame = TcFrame::new(&ctx);
    let c = classify(&frame);
    let len = ctx.len() as u64;
    stats::count(Hook::UplinkIngress, c.class, len);
    // Replies to masqueraded connections first; anything else may be a connection to a
    // published port. (A translated reply is done: its destination, now an endpoint's
    // address and source port, must not be taken for a published port.)
    match nat::ingress(&ctx, &frame, c) {
        Ok(true) => return TC_ACT_UNSPEC,
        Ok(false) => {}
        Err(_) => {
            count_drop(DropReason::NatFailed, len);
            return TC_ACT_SHOT;
        }
    }
    if nat::publish_ingress(&ctx, &frame, c).is_err() {
        count_drop(DropReason::NatFailed, len);
        return TC_ACT_SHOT;
    }
    TC_ACT_UNSPEC
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
