//! netpath's eBPF programs. Entry points stay thin: parse through the shared logic in
//! `netpath-common`, count, return a verdict. Each program's logic lives in its module.
#![no_std]
#![no_main]

mod endpoints;
mod frame;
mod stats;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use netpath_common::{maps::Hook, packet::classify};

use crate::frame::{TcFrame, XdpFrame};

/// tc verdict "no opinion, continue" (`TC_ACT_UNSPEC`; `TCX_NEXT` under tcx): the next
/// program in the chain, or the kernel's normal path, handles the packet.
const TC_ACT_UNSPEC: i32 = -1;

/// XDP entry: counts the frame by class and hands it to the kernel unchanged.
#[xdp]
pub fn netpath_xdp(ctx: XdpContext) -> u32 {
    let frame = XdpFrame::new(&ctx);
    let class = classify(&frame).class;
    stats::count(Hook::Xdp, class, frame.len());
    xdp_action::XDP_PASS
}

/// tc (tcx) ingress entry: counts the frame by class and leaves it to the kernel path.
#[classifier]
pub fn netpath_tc_ingress(ctx: TcContext) -> i32 {
    let frame = TcFrame::new(&ctx);
    let class = classify(&frame).class;
    stats::count(Hook::TcIngress, class, ctx.len() as u64);
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
