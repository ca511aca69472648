//! Host-local access to published ports without a proxy: cgroup socket-address hooks
//! on the root cgroup rewrite a host process's connect (TCP, connected UDP) or UDP send
//! to `127.0.0.1:P` or `<host address>:P` into the published endpoint's `ip:port`, before
//! any packet exists (as Cilium's socket-level load balancer does). The reverse hooks
//! make `getpeername` and UDP `recvmsg` show the published address again, so the
//! application never sees the translation.

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use netpath_common::{
    nat::{NatTarget, SockNatKey},
    packet::{IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    maps::{NETPATH_HOST_NETNS, NETPATH_LOCAL_ADDRS, NETPATH_SOCK_NAT},
    nat::published_at,
};

/// Socket hooks must return 1 ("allow"); they never refuse.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn netpath_connect4(ctx: SockAddrContext) -> i32 {
    to_endpoint(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn netpath_sendmsg4(ctx: SockAddrContext) -> i32 {
    to_endpoint(&ctx);
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn netpath_recvmsg4(ctx: SockAddrContext) -> i32 {
    to_published(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn netpath_getpeername4(ctx: SockAddrContext) -> i32 {
    to_published(&ctx);
    ALLOW
}

/// The destination address and port of the hook's context: the address as it sits in
/// memory, the port in host order (`user_port` holds it in network order, in its low
/// 16 bits).
#[inline(always)]
fn user_addr(sa: &bpf_sock_addr) -> ([u8; 4], u16) {
    (sa.user_ip4.to_ne_bytes(), u16::from_be(sa.user_port as u16))
}

#[inline(always)]
fn set_user_addr(sa: &mut bpf_sock_addr, addr: [u8; 4], port: u16) {
    sa.user_ip4 = u32::from_ne_bytes(addr);
    sa.user_port = u32::from(port.to_be());
}

/// connect4 / sendmsg4: a destination that is a published port on a host address
/// becomes its endpoint.
#[inline(always)]
fn to_endpoint(ctx: &SockAddrContext) {
    // SAFETY: the context pointer is valid and exclusively ours for this run; the
    // verifier checks every field access against the hook's rules.
    let sa = unsafe { &mut *ctx.sock_addr };
    let proto = sa.protocol as u8;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return;
    }
    // Only the host's own sockets: a process of this cgroup inside a container's
    // namespace must reach the addresses of that namespace, and go through the
    // datapath (hairpin) like the container's other traffic.
    // SAFETY: a helper taking the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr as *mut _) };
    if NETPATH_HOST_NETNS.get(0).copied() != Some(netns) {
        return;
    }
    let (dst, port) = user_addr(sa);
    let Some(ep) = published_local(proto, dst, port) else {
        return;
    };
    // SAFETY: a helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let key = SockNatKey {
        cookie,
        addr: ep.addr,
        port: ep.port,
        _pad: 0,
    };
    // Without the reverse entry the application would see the endpoint's address;
    // better than failing the connect, so a full map only costs cosmetics.
    let _ = NETPATH_SOCK_NAT.insert(key, NatTarget::new(dst, port), 0);
    set_user_addr(sa, ep.addr, ep.port);
}

/// The endpoint behind `dst:port` if `dst` is this host's: a publish on exactly that
/// address (only ever made for the host's own addresses), or a 0.0.0.0 publish when
/// `dst` is loopback or one of `NETPATH_LOCAL_ADDRS`.
#[inline(always)]
fn published_local(proto: u8, dst: [u8; 4], port: u16) -> Option<NatTarget> {
    if let Some(ep) = published_at(proto, dst, port) {
        return Some(ep);
    }
    if is_host_addr(dst) {
        published_at(proto, [0; 4], port)
    } else {
        None
    }
}

/// Whether `addr` is one of this host's addresses: loopback, or one the control plane
/// listed in `NETPATH_LOCAL_ADDRS` (the daemon re-reads them whenever the kernel
/// announces an address change, and every 30 s as a safety net).
#[inline(always)]
pub fn is_host_addr(addr: [u8; 4]) -> bool {
    // SAFETY: presence check only.
    addr[0] == 127 || unsafe { NETPATH_LOCAL_ADDRS.get(addr) }.is_some()
}

/// recvmsg4 / getpeername4: an endpoint address this socket reached through a
/// published port shows as the published address again.
#[inline(always)]
fn to_published(ctx: &SockAddrContext) {
    // SAFETY: as in to_endpoint.
    let sa = unsafe { &mut *ctx.sock_addr };
    let (addr, port) = user_addr(sa);
    // SAFETY: a helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let key = SockNatKey {
        cookie,
        addr,
        port,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(front) = unsafe { NETPATH_SOCK_NAT.get(key) }.copied() {
        set_user_addr(sa, front.addr, front.port);
    }
}
