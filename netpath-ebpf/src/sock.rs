//! Host-local access to published ports without a proxy: cgroup socket-address hooks
//! on the root cgroup rewrite a host process's connect (TCP, connected UDP) or UDP send
//! to `127.0.0.1:P` or `<host address>:P` into the published endpoint's `ip:port`, before
//! any packet exists (as Cilium's socket-level load balancer does). The reverse hooks
//! make `getpeername` and UDP `recvmsg` show the published address again, so the
//! application never sees the translation.
//!
//! The IPv6 hooks serve `AF_INET6` sockets both ways: native IPv6 destinations
//! (`[::1]:P`, `[<host IPv6 address>]:P`) become the endpoint's IPv6 address through the
//! IPv6 publish map, and v4-mapped ones (`::ffff:127.0.0.1`, `::ffff:<host address>`)
//! take the IPv4 logic, reading and writing the mapped address (an unconnected UDP send
//! to a v4-mapped address runs the IPv4 sendmsg hook instead: see
//! [`netpath_sendmsg6`]).

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    maps::LruHashMap,
    programs::SockAddrContext,
};
use netpath_common::{
    nat::{Address, NatTargetOf, PublishKeyOf, SockNatKey, SockNatKey6},
    packet::{IPPROTO_TCP, IPPROTO_UDP},
    sockaddr::{mapped_of_v4, v4_of_mapped, v6_of_words, words_of_v6},
};

use crate::{
    family::{V4, V6},
    maps::{NETPATH_HOST_NETNS, NETPATH_SOCK_NAT, NETPATH_SOCK_NAT6},
    nat::Publish,
};

/// Socket hooks must return 1 ("allow"); they never refuse.
const ALLOW: i32 = 1;

/// Which address field of `bpf_sock_addr` a hook has: the verifier refuses an IPv4
/// hook's access to `user_ip6` and an IPv6 hook's to `user_ip4`. Always a constant at
/// the call site, so each program keeps only its own family's accesses.
#[derive(Clone, Copy)]
enum Family {
    /// `AF_INET` sockets: `user_ip4`.
    Inet,
    /// `AF_INET6` sockets: `user_ip6`.
    Inet6,
}

/// Declares each `name(attach point): logic, family;` as a socket-address hook `name`
/// (its name in the object, which the loader attaches by) that runs `logic` for sockets
/// of `family` and allows the call.
macro_rules! sock_hooks {
    ($( $(#[$doc:meta])* $name:ident($attach:ident): $logic:ident, $family:ident; )+) => {
        $(
            $(#[$doc])*
            #[cgroup_sock_addr($attach)]
            pub fn $name(ctx: SockAddrContext) -> i32 {
                $logic(&ctx, Family::$family);
                ALLOW
            }
        )+
    };
}

sock_hooks! {
    netpath_connect4(connect4): to_endpoint, Inet;
    netpath_sendmsg4(sendmsg4): to_endpoint, Inet;
    netpath_recvmsg4(recvmsg4): to_published, Inet;
    netpath_getpeername4(getpeername4): to_published, Inet;
    netpath_connect6(connect6): to_endpoint, Inet6;
    /// Sees native IPv6 destinations only (Linux 6.18, checked by hand): `udpv6_sendmsg`
    /// hands a datagram to a v4-mapped one over to `udp_sendmsg`, whose sendmsg4 hook
    /// translates it (`tests/tests/host_local6.rs` covers that path).
    netpath_sendmsg6(sendmsg6): to_endpoint, Inet6;
    netpath_recvmsg6(recvmsg6): to_published, Inet6;
    netpath_getpeername6(getpeername6): to_published, Inet6;
}

/// An address a hook sees, in the family its publish maps have.
#[derive(Clone, Copy)]
enum Addr {
    /// IPv4: `user_ip4`, or a v4-mapped `user_ip6`.
    V4([u8; 4]),
    /// A native IPv6 `user_ip6`.
    V6([u8; 16]),
}

/// The hook's address (the destination of connect / sendmsg, the peer of recvmsg /
/// getpeername) and its port in host order. `user_port` holds the port in network
/// order, in its low 16 bits.
#[inline(always)]
fn user_addr(sa: &bpf_sock_addr, family: Family) -> (Addr, u16) {
    let port = u16::from_be(sa.user_port as u16);
    let addr = match family {
        Family::Inet => Addr::V4(sa.user_ip4.to_ne_bytes()),
        Family::Inet6 => {
            let words = user_ip6(sa);
            match v4_of_mapped(words) {
                Some(v4) => Addr::V4(v4),
                None => Addr::V6(v6_of_words(words)),
            }
        }
    };
    (addr, port)
}

/// Sets the hook's address to `addr:port`: `user_ip4`, or `user_ip6` (an IPv4 address
/// v4-mapped). (`Addr::V6` occurs in IPv6 hooks only: see [`user_addr`].)
#[inline(always)]
fn set_user_addr(sa: &mut bpf_sock_addr, family: Family, addr: Addr, port: u16) {
    match (family, addr) {
        (Family::Inet, Addr::V4(a)) => sa.user_ip4 = u32::from_ne_bytes(a),
        (Family::Inet6, Addr::V4(a)) => set_user_ip6(sa, mapped_of_v4(a)),
        (Family::Inet6, Addr::V6(a)) => set_user_ip6(sa, words_of_v6(a)),
        (Family::Inet, Addr::V6(_)) => return,
    }
    sa.user_port = u32::from(port.to_be());
}

/// `user_ip6`, one 4-byte load per word. Verifier workaround: it accepts a load of
/// `user_ip6` only within one word (or 8 bytes at an 8-byte-aligned offset) and refuses,
/// say, an 8-byte load of words 1 and 2, which the compiler may make of plain loads of
/// adjacent words; volatile loads keep each one a single 4-byte load.
#[inline(always)]
fn user_ip6(sa: &bpf_sock_addr) -> [u32; 4] {
    let w = &sa.user_ip6;
    // SAFETY: reads of four `u32`s through a valid shared reference (the context).
    unsafe {
        [
            read_volatile(&w[0]),
            read_volatile(&w[1]),
            read_volatile(&w[2]),
            read_volatile(&w[3]),
        ]
    }
}

/// Writes `user_ip6`, one 4-byte store per word. Verifier workaround: a store to it must
/// be exactly a word (or 8 bytes at an 8-byte-aligned offset), so, as for [`user_ip6`],
/// volatile stores keep each one a single 4-byte store.
#[inline(always)]
fn set_user_ip6(sa: &mut bpf_sock_addr, words: [u32; 4]) {
    let w = &mut sa.user_ip6;
    // SAFETY: writes of four `u32`s through a valid exclusive reference (the context).
    unsafe {
        write_volatile(&mut w[0], words[0]);
        write_volatile(&mut w[1], words[1]);
        write_volatile(&mut w[2], words[2]);
        write_volatile(&mut w[3], words[3]);
    }
}

/// connect / sendmsg: a destination that is a published port on a host address becomes
/// its endpoint (of the destination's family).
#[inline(always)]
fn to_endpoint(ctx: &SockAddrContext, family: Family) {
    // SAFETY: the context pointer is valid and exclusively ours for this run; the
    // verifier checks every field access against the hook's rules.
    let sa = unsafe { &mut *ctx.sock_addr };
    let proto = sa.protocol as u8;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return;
    }
    let (dst, port) = user_addr(sa, family);
    // Only the host's own sockets: a process of this cgroup inside a container's
    // namespace must reach the addresses of that namespace, and go through the
    // datapath (hairpin) like the container's other traffic.
    // SAFETY: a helper taking the program's own context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.sock_addr as *mut _) };
    if NETPATH_HOST_NETNS.get(0).copied() != Some(netns) {
        return;
    }
    // SAFETY: a helper taking the program's own context (called once a publish matched).
    let cookie = || unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let ep = match dst {
        Addr::V4(dst) => {
            sock_endpoint::<V4>(proto, dst, port, cookie).map(|(a, p)| (Addr::V4(a), p))
        }
        Addr::V6(dst) => {
            sock_endpoint::<V6>(proto, dst, port, cookie).map(|(a, p)| (Addr::V6(a), p))
        }
    };
    if let Some((ep, ep_port)) = ep {
        set_user_addr(sa, family, ep, ep_port);
    }
}

/// The endpoint behind `dst:port` of family `F` if `dst` is this host's: a publish on
/// exactly that address (only ever made for the host's own addresses), or an
/// every-address one (`0.0.0.0`, `[::]`) when `dst` is loopback or one the control plane
/// listed (`Publish::is_host_addr`). The socket's reverse entry (endpoint → `dst:port`)
/// is recorded: without it the application would see the endpoint's address; better
/// than failing the connect, so a full map only costs cosmetics.
#[inline(always)]
fn sock_endpoint<F: SockNat>(
    proto: u8,
    dst: F::Addr,
    port: u16,
    cookie: impl FnOnce() -> u64,
) -> Option<(F::Addr, u16)> {
    let ep = match F::publish_entry(PublishKeyOf::new(proto, dst, port)) {
        Some(ep) => ep,
        None if F::is_host_addr(dst) => {
            F::publish_entry(PublishKeyOf::new(proto, F::Addr::UNSPECIFIED, port))?
        }
        None => return None,
    };
    let key = F::sock_key(cookie(), ep.addr, ep.port);
    let _ = F::sock_nat().insert(key, NatTargetOf::new(dst, port), 0);
    Some((ep.addr, ep.port))
}

/// What the socket hooks need of a family beyond its published ports: the reverse map
/// of translated sockets.
trait SockNat: Publish {
    /// The reverse map's key.
    type Key: 'static;
    /// (socket, endpoint address/port) → the published address/port it stands for.
    fn sock_nat() -> &'static LruHashMap<Self::Key, NatTargetOf<Self::Addr>>;
    /// The key of socket `cookie`'s entry for endpoint `addr:port`.
    fn sock_key(cookie: u64, addr: Self::Addr, port: u16) -> Self::Key;
}

/// Implements [`SockNat`] for each `family: map of key;`.
macro_rules! sock_nat {
    ($($family:ident: $map:ident of $key:ident;)+) => {
        $(
            impl SockNat for $family {
                type Key = $key;

                #[inline(always)]
                fn sock_nat() -> &'static LruHashMap<$key, NatTargetOf<Self::Addr>> {
                    &$map
                }

                #[inline(always)]
                fn sock_key(cookie: u64, addr: Self::Addr, port: u16) -> $key {
                    $key {
                        cookie,
                        addr,
                        port,
                        _pad: Default::default(),
                    }
                }
            }
        )+
    };
}

sock_nat! {
    V4: NETPATH_SOCK_NAT of SockNatKey;
    V6: NETPATH_SOCK_NAT6 of SockNatKey6;
}

/// recvmsg / getpeername: an endpoint address this socket reached through a published
/// port shows as the published address again. An IPv4 endpoint address is keyed as
/// IPv4 for both families (a socket's cookie is its own, so the entries of an
/// `AF_INET6` socket never meet an `AF_INET` one's); a native IPv6 one in
/// `NETPATH_SOCK_NAT6`.
#[inline(always)]
fn to_published(ctx: &SockAddrContext, family: Family) {
    // SAFETY: as in to_endpoint.
    let sa = unsafe { &mut *ctx.sock_addr };
    let (addr, port) = user_addr(sa, family);
    // SAFETY: a helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let front = match addr {
        Addr::V4(addr) => front_of::<V4>(cookie, addr, port).map(|(a, p)| (Addr::V4(a), p)),
        Addr::V6(addr) => front_of::<V6>(cookie, addr, port).map(|(a, p)| (Addr::V6(a), p)),
    };
    if let Some((addr, port)) = front {
        set_user_addr(sa, family, addr, port);
    }
}

/// The published address and port socket `cookie` reached endpoint `addr:port` of
/// family `F` through, if it did.
#[inline(always)]
fn front_of<F: SockNat>(cookie: u64, addr: F::Addr, port: u16) -> Option<(F::Addr, u16)> {
    // SAFETY: copied out at once.
    unsafe { F::sock_nat().get(F::sock_key(cookie, addr, port)) }.map(|f| (f.addr, f.port))
}
