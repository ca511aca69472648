//! Where a packet goes next, and the shortcuts past the host's IP stack (as Cilium's "BPF
//! host routing" does):
//! - endpoint → endpoint: [`redirect`], straight into the destination (see `main.rs`);
//! - uplink → endpoint: after the uplink's NAT (a published port's DNAT, the reply of a
//!   masqueraded connection), a packet for an endpoint goes straight into it
//!   ([`to_endpoint`]) instead of through the host's routing, netfilter and a second
//!   per-CPU backlog;
//! - endpoint → uplink: a packet the FIB routes out of an uplink netpath manages is
//!   handed to that uplink with the kernel's neighbour resolution (`bpf_redirect_neigh`),
//!   where the uplink's egress program then translates it as before ([`to_uplink`]).
//!
//! Both shortcuts decrement the TTL (IPv6: the hop limit), as the router they stand in
//! for would ([`Hop`]: what they need of a family). A packet whose TTL runs out, that is
//! too big for the device it would leave by, or that the FIB would not forward (a local
//! address, no route, forwarding off) goes to the kernel path unchanged, which answers
//! with the right ICMP error (a redirect would drop an oversized packet silently).

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH,
        bpf_check_mtu_flags::BPF_MTU_CHK_SEGS, bpf_check_mtu_ret::BPF_MTU_CHK_RET_SUCCESS,
        bpf_fib_lookup as FibParams, bpf_redir_neigh,
    },
    helpers::generated::{
        bpf_check_mtu, bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer,
    },
    programs::TcContext,
};
use netpath_common::{
    forward::{redirect_macs, routed_ttl},
    ipv6::{IP6_HOP_LIMIT, IP6_SRC, routable6},
    maps::{DropReason, ENDPOINT_KIND_TAP, EndpointKey, EndpointKey6, EndpointValue, Forward},
    packet::{IP_CSUM, IP_DST, IP_SRC, IP_TTL},
    sockaddr::words_of_v6,
};

use crate::{
    TC_ACT_REDIRECT, TcVerdict,
    counters::{count_forward, count_rx},
    family::{Ip, V4, V6},
    maps::{NETPATH_ENDPOINTS, NETPATH_ENDPOINTS6},
    nat,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// FIB lookup parameters for a packet of family `family` arriving on `ifindex`; the
/// caller fills in the addresses.
#[inline(always)]
fn fib_params(family: u8, ifindex: u32) -> FibParams {
    // SAFETY: `bpf_fib_lookup` is plain integers, arrays and unions of them: all-zero
    // is a valid value.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = family;
    p.ifindex = ifindex;
    // `tot_len` stays 0: the kernel then checks the skb itself (GSO-aware) against the
    // egress device's MTU.
    p
}

/// Parameters for an IPv4 packet from `src` to `dst`.
#[inline(always)]
fn fib_params4(ifindex: u32, src: [u8; 4], dst: [u8; 4]) -> FibParams {
    let mut p = fib_params(AF_INET, ifindex);
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(src);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(dst);
    p
}

/// Parameters for the packet's own addresses (IPv4 or IPv6); `None` if unreadable.
#[inline(always)]
fn fib_params_of(ctx: &TcContext, ifindex: u32, ipv6: bool) -> Option<FibParams> {
    if !ipv6 {
        let (Ok(src), Ok(dst)) = (ctx.load::<[u8; 4]>(IP_SRC), ctx.load::<[u8; 4]>(IP_DST)) else {
            return None;
        };
        return Some(fib_params4(ifindex, src, dst));
    }
    // Source and destination, 8 words in network order, as the helper wants them.
    let a = ctx.load::<[u32; 8]>(IP6_SRC).ok()?;
    let mut p = fib_params(AF_INET6, ifindex);
    p.__bindgen_anon_3.ipv6_src = [a[0], a[1], a[2], a[3]];
    p.__bindgen_anon_4.ipv6_dst = [a[4], a[5], a[6], a[7]];
    Some(p)
}

/// Asks the kernel's FIB how the packet `p` describes would be forwarded; returns the
/// helper's result code, with `p` filled in.
#[inline(always)]
fn fib_lookup(ctx: &TcContext, p: &mut FibParams, flags: u32) -> i64 {
    // SAFETY: `ctx.skb.skb` is the program's context; `p` is a live, writable
    // parameter block of exactly the size passed.
    unsafe {
        bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            p,
            core::mem::size_of::<FibParams>() as i32,
            flags,
        )
    }
}

/// Whether the kernel would deliver a packet of family `F` from `src` to `dst`, arriving
/// on `ifindex`, locally: `dst` is one of this host's addresses (any device's, the
/// bridges' gateways included), as routing sees it now.
#[inline(always)]
pub fn is_local<F: Hop>(ctx: &TcContext, ifindex: u32, src: F::Addr, dst: F::Addr) -> bool {
    if !F::may_be_local(src, dst) {
        return false;
    }
    // Local (and subnet broadcast) routes are "not forwarded"; unicast routes give 0.
    let mut p = F::fib_params(ifindex, src, dst);
    fib_lookup(ctx, &mut p, 0) == i64::from(BPF_FIB_LKUP_RET_NOT_FWDED)
}

/// Sets the Ethernet addresses ([`redirect_macs`]) and hands the frame to `target`: into
/// the peer of a veth host end (`peer`), or out of it (a TAP, to the VM). Counted as
/// received by that endpoint, and as a forward `way`.
#[inline(always)]
pub fn redirect(
    ctx: &TcContext,
    way: Forward,
    target: u32,
    peer: bool,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    len: u64,
) -> TcVerdict {
    // An unreadable header is rewritten whole.
    let current = ctx.load::<[u8; 12]>(0).unwrap_or([0; 12]);
    if let Some(macs) = redirect_macs(current, dst_mac, src_mac)
        && ctx.store(0, &macs, 0).is_err()
    {
        return Err(DropReason::RedirectFailed);
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
        return Err(DropReason::RedirectFailed);
    }
    count_rx(target, len);
    count_forward(way, len);
    Ok(TC_ACT_REDIRECT)
}

/// Whether the packet fits the MTU of device `ifindex` — each segment of a GSO packet,
/// which the device's transmit path segments.
#[inline(always)]
fn fits_mtu(ctx: &TcContext, ifindex: u32) -> bool {
    // In: 0 (measure the skb itself); out: the device's MTU.
    let mut mtu_len: u32 = 0;
    // SAFETY: `ctx.skb.skb` is the program's context; `mtu_len` is a live u32.
    let r = unsafe {
        bpf_check_mtu(
            ctx.skb.skb as *mut _,
            ifindex,
            &mut mtu_len,
            0,
            u64::from(BPF_MTU_CHK_SEGS),
        )
    };
    r == i64::from(BPF_MTU_CHK_RET_SUCCESS)
}

/// What the shortcuts (and hairpin) need of an address family beyond [`Ip`]: its
/// endpoint map, how a router decrements its TTL, and how the FIB is asked whether an
/// address is the host's ([`is_local`]).
pub(crate) trait Hop: Ip {
    /// The endpoint whose address is `ip`, in its map (valid for the program's run, RCU;
    /// a concurrent control-plane update can only replace it with another valid entry).
    fn endpoint(ip: Self::Addr) -> Option<&'static EndpointValue>;
    /// FIB lookup parameters for a packet from `src` to `dst` arriving on `ifindex`.
    fn fib_params(ifindex: u32, src: Self::Addr, dst: Self::Addr) -> FibParams;
    /// Whether [`is_local`]'s FIB answer means anything for `src` → `dst`: "not
    /// forwarded" is also the answer for destinations that are never a host's own.
    fn may_be_local(src: Self::Addr, dst: Self::Addr) -> bool;

    /// Decrements the TTL (IPv6: the hop limit), patching the header checksum if there
    /// is one; `false` (nothing written) if the packet must not be forwarded
    /// ([`routed_ttl`]) or the header is unreadable.
    #[inline(always)]
    fn decrement_ttl(ctx: &TcContext) -> bool {
        let at = if Self::IS_V6 { IP6_HOP_LIMIT } else { IP_TTL };
        let Ok(old) = ctx.load::<u8>(at) else {
            return false;
        };
        let Some(new) = routed_ttl(old) else {
            return false;
        };
        if ctx.store(at, &new, 0).is_err() {
            return false;
        }
        // IPv6 has no header checksum. IPv4's covers the TTL as the high byte of a
        // 16-bit word (the protocol is the low one, unchanged, so 0 stands for it); the
        // helper takes the words as they sit in memory.
        let word = |ttl: u8| u64::from(u16::from_ne_bytes([ttl, 0]));
        Self::IS_V6
            || ctx
                .l3_csum_replace(IP_CSUM, word(old), word(new), 2)
                .is_ok()
    }
}

/// [`Hop::endpoint`], a lookup in the family's endpoint map `$map` keyed by `$key`.
macro_rules! endpoint_in {
    ($map:ident, $key:ident) => {
        #[inline(always)]
        fn endpoint(ip: Self::Addr) -> Option<&'static EndpointValue> {
            // SAFETY: see `Hop::endpoint`.
            unsafe { $map.get($key { ip }) }
        }
    };
}

impl Hop for V4 {
    endpoint_in!(NETPATH_ENDPOINTS, EndpointKey);

    #[inline(always)]
    fn fib_params(ifindex: u32, src: [u8; 4], dst: [u8; 4]) -> FibParams {
        fib_params4(ifindex, src, dst)
    }

    #[inline(always)]
    fn may_be_local(_: [u8; 4], dst: [u8; 4]) -> bool {
        // Multicast and limited broadcast are "not forwarded" too, but never a host's own.
        dst[0] < 224
    }
}

impl Hop for V6 {
    endpoint_in!(NETPATH_ENDPOINTS6, EndpointKey6);

    #[inline(always)]
    fn fib_params(ifindex: u32, src: [u8; 16], dst: [u8; 16]) -> FibParams {
        let mut p = fib_params(AF_INET6, ifindex);
        p.__bindgen_anon_3.ipv6_src = words_of_v6(src);
        p.__bindgen_anon_4.ipv6_dst = words_of_v6(dst);
        p
    }

    #[inline(always)]
    fn may_be_local(src: [u8; 16], dst: [u8; 16]) -> bool {
        // The FIB answers "not forwarded" for any packet from or to a multicast,
        // link-local or loopback address (`rt6_need_strict`), host address or not.
        routable6(src) && routable6(dst)
    }
}

/// Uplink → endpoint: hands a packet (already translated) for endpoint address `ip` of
/// family `F` straight to it. `None`: not an endpoint's address, too big for its device
/// (an uplink may have the larger MTU), or the TTL (hop limit) ran out — the kernel path
/// takes it.
#[inline(always)]
pub fn to_endpoint<F: Hop>(ctx: &TcContext, ip: F::Addr, len: u64) -> Option<TcVerdict> {
    let to = *F::endpoint(ip)?;
    if !fits_mtu(ctx, to.ifindex) || !F::decrement_ttl(ctx) {
        return None;
    }
    deliver(ctx, to, len)
}

/// Hands a packet from an uplink, checked and with its TTL or hop limit decremented, to
/// endpoint `to`.
#[inline(always)]
fn deliver(ctx: &TcContext, to: EndpointValue, len: u64) -> Option<TcVerdict> {
    let peer = to.kind != ENDPOINT_KIND_TAP;
    let way = Forward::UplinkToEndpoint;
    Some(redirect(
        ctx,
        way,
        to.ifindex,
        peer,
        to.mac,
        to.host_mac,
        len,
    ))
}

/// Endpoint → uplink: a packet (IPv4, or IPv6 with `ipv6`) from the endpoint behind
/// `ifindex` that the FIB routes out of a netpath uplink is handed to that uplink, whose
/// neighbour entry supplies the MACs (resolving it first if need be). `None`: the kernel
/// path takes it, unchanged.
#[inline(always)]
pub fn to_uplink(ctx: &TcContext, ifindex: u32, ipv6: bool, len: u64) -> Option<TcVerdict> {
    let mut p = fib_params_of(ctx, ifindex, ipv6)?;
    // The neighbour is left to `bpf_redirect_neigh`, which keeps its state machine going
    // (a fast path that only read entries would never refresh a stale one).
    let r = fib_lookup(ctx, &mut p, BPF_FIB_LOOKUP_SKIP_NEIGH);
    if r != i64::from(BPF_FIB_LKUP_RET_SUCCESS) || !nat::is_uplink(p.ifindex) {
        return None;
    }
    let forwardable = if ipv6 {
        V6::decrement_ttl(ctx)
    } else {
        V4::decrement_ttl(ctx)
    };
    if !forwardable {
        return None;
    }
    // The next hop: the route's gateway, or the destination itself on a connected route
    // (the lookup leaves it in the destination field).
    // SAFETY: all-zero is a valid `bpf_redir_neigh` (integers and a union of them).
    let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    // SAFETY (both arms): reading the member of the family the lookup was for.
    if ipv6 {
        nh.nh_family = u32::from(AF_INET6);
        nh.__bindgen_anon_1.ipv6_nh = unsafe { p.__bindgen_anon_4.ipv6_dst };
    } else {
        nh.nh_family = u32::from(AF_INET);
        nh.__bindgen_anon_1.ipv4_nh = unsafe { p.__bindgen_anon_4.ipv4_dst };
    }
    // SAFETY: `nh` is a live parameter block of exactly the size passed.
    let r = unsafe {
        bpf_redirect_neigh(
            p.ifindex,
            &mut nh,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        )
    };
    if r != i64::from(TC_ACT_REDIRECT) {
        return Some(Err(DropReason::RedirectFailed));
    }
    count_forward(Forward::EndpointToUplink, len);
    Some(Ok(TC_ACT_REDIRECT))
}
