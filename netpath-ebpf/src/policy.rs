//! Network policy's lookups for the endpoint program (`netpath_common::policy` says what
//! they mean): whether the sender's network refuses a destination that is no endpoint's
//! — outside an internal network, or denied by egress rules ([`REFUSED`]), or a new
//! connection to a host address on a port it does not allow ([`HOST_REFUSED`]) — made
//! only where the sender's flags ask, so a network without policy pays nothing.
//!
//! Verifier: the lookups run in a subprogram of their own ([`refusal`]), called from the
//! program's entry before it hands the packet to its IPv4 or IPv6 half, and their answer
//! is one bit ([`REFUSED`]) in an argument: in either half they passed the call chain's
//! 512 bytes of stack, and with one bit per fact the states of the IPv6 half (which the
//! entry calls from two places) passed the verifier's million instructions. So
//! [`dest`] names the reason by the sender's flags: `internal_network` for an internal
//! network's endpoint (also in the one case where its egress rules refused a link-local
//! destination inside the network), else `egress_denied`.

use aya_ebpf::maps::lpm_trie::Key;
use netpath_common::{
    ipv6::IP6_DST,
    maps::{
        ENDPOINT_FLAG_EGRESS, ENDPOINT_FLAG_HOST, ENDPOINT_FLAG_INTERNAL, EndpointValue,
        HostAccessKey,
    },
    packet::{Classified, Frame, IP_DST},
    policy::{self, Dest, egress_key, egress_key6},
};

use crate::{
    frame::TcFrame,
    maps::{
        NETPATH_EGRESS, NETPATH_EGRESS6, NETPATH_HOST_ACCESS, NETPATH_LOCAL_ADDRS,
        NETPATH_LOCAL_ADDRS6, NETPATH_NETWORKS,
    },
};

/// The bit of the endpoint program's pass argument that says the policy refuses the
/// packet's destination (if it is no endpoint's).
pub const REFUSED: u8 = 2;
/// The bit that says host access refuses the packet unless hairpin takes it (a port
/// published on a host address is always reachable): not handed to `decide`, but
/// checked where hairpin declined (`main.rs`).
pub const HOST_REFUSED: u8 = 4;

/// [`REFUSED`], [`HOST_REFUSED`] or 0 for a packet `c` from `from`, for an endpoint
/// whose flags ask for a lookup; 0 for any other.
#[inline(always)]
pub fn pass(frame: &TcFrame, c: &Classified, from: &EndpointValue) -> u8 {
    match from.flags & (ENDPOINT_FLAG_INTERNAL | ENDPOINT_FLAG_EGRESS | ENDPOINT_FLAG_HOST) != 0 {
        true => refusal(frame, c, from),
        false => 0,
    }
}

/// The lookups of [`pass`], in a subprogram of their own (see the module docs). A frame
/// too short for the destination is refused nothing (the halves pass it on unparsed).
#[inline(never)]
fn refusal(frame: &TcFrame, c: &Classified, from: &EndpointValue) -> u8 {
    let net = u32::from(from.network_id);
    let internal = from.flags & ENDPOINT_FLAG_INTERNAL != 0;
    let egress = from.flags & ENDPOINT_FLAG_EGRESS != 0;
    // SAFETY (every lookup): read at once; a concurrent control-plane update can only
    // replace an entry with another valid one.
    let host = from.flags & ENDPOINT_FLAG_HOST != 0;
    let (inside, local, denied) = if c.class.is_ipv6() {
        let Some(dst) = frame.load::<16>(IP6_DST) else {
            return 0;
        };
        let inside = internal && policy::inside6(dst, unsafe { NETPATH_NETWORKS.get(net) });
        let key = Key::new(160, egress_key6(net, dst));
        let denied = egress && policy::egress_denied(NETPATH_EGRESS6.get(key).copied());
        // A host address is host access's business (hairpin to a published port too):
        // looked up only where a rule denied the destination, or for host access.
        let local = (denied || host) && unsafe { NETPATH_LOCAL_ADDRS6.get(dst) }.is_some();
        (inside, local, denied && !local)
    } else {
        let Some(dst) = frame.load::<4>(IP_DST) else {
            return 0;
        };
        let inside = internal && policy::inside4(dst, unsafe { NETPATH_NETWORKS.get(net) });
        let key = Key::new(64, egress_key(net, dst));
        let denied = egress && policy::egress_denied(NETPATH_EGRESS.get(key).copied());
        let local = (denied || host) && unsafe { NETPATH_LOCAL_ADDRS.get(dst) }.is_some();
        (inside, local, denied && !local)
    };
    if (internal && !inside) || denied {
        return REFUSED;
    }
    if local && host && !host_allowed(frame, c, net) {
        return HOST_REFUSED;
    }
    0
}

/// Whether restricted host access lets packet `c` of network `net` through to a host
/// address: it opens nothing there (`policy::opens_on_host`), or its port is allowed. A
/// packet without a known L4 header is refused.
#[inline(always)]
fn host_allowed(frame: &TcFrame, c: &Classified, net: u32) -> bool {
    if c.l4_offset == 0 {
        return false;
    }
    // TCP's flags (byte 13), ICMP's type (byte 0).
    let tcp_flags = frame.load_u8(c.l4_offset + 13).unwrap_or(0);
    let icmp = frame.load_u8(c.l4_offset).unwrap_or(0);
    if !policy::opens_on_host(c.proto, tcp_flags, icmp) {
        return true;
    }
    let Some(port) = frame.load::<2>(c.l4_offset + 2) else {
        return false;
    };
    let key = HostAccessKey {
        network: net,
        port: u16::from_be_bytes(port),
        proto: c.proto,
        _pad: 0,
    };
    // SAFETY: as in `refusal`.
    unsafe { NETPATH_HOST_ACCESS.get(key) }.is_some()
}

/// The [`Dest`] `decide` gets for a packet whose pass argument is `pass`: a refused
/// destination is outside (an internal network's endpoint's drop says so) and denied
/// (any other's says that), one bit for both.
#[inline(always)]
pub fn dest(pass: u8) -> Dest {
    let refused = pass & REFUSED != 0;
    Dest {
        inside: !refused,
        egress_denied: refused,
    }
}
