//! Network policy's lookups for the endpoint program (`netpath_common::policy` says what
//! they mean): whether the sender's network refuses a destination that is no endpoint's
//! — outside an internal network, or denied by egress rules — made only where the
//! sender's flags ask, so a network without policy pays nothing.
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
    maps::{ENDPOINT_FLAG_EGRESS, ENDPOINT_FLAG_INTERNAL, EndpointValue},
    packet::{Frame, IP_DST},
    policy::{self, Dest, egress_key, egress_key6},
};

use crate::{
    frame::TcFrame,
    maps::{
        NETPATH_EGRESS, NETPATH_EGRESS6, NETPATH_LOCAL_ADDRS, NETPATH_LOCAL_ADDRS6,
        NETPATH_NETWORKS,
    },
};

/// The bit of the endpoint program's pass argument that says the policy refuses the
/// packet's destination (if it is no endpoint's).
pub const REFUSED: u8 = 2;

/// [`REFUSED`] or 0 for a packet from `from` (its IPv6 destination with `ipv6`), for an
/// endpoint whose flags ask for a lookup; 0 for any other.
#[inline(always)]
pub fn pass(frame: &TcFrame, from: &EndpointValue, ipv6: bool) -> u8 {
    match from.flags & (ENDPOINT_FLAG_INTERNAL | ENDPOINT_FLAG_EGRESS) != 0 {
        true => refusal(frame, from, ipv6),
        false => 0,
    }
}

/// The lookups of [`pass`], in a subprogram of their own (see the module docs). A frame
/// too short for the destination is refused nothing (the halves pass it on unparsed).
#[inline(never)]
fn refusal(frame: &TcFrame, from: &EndpointValue, ipv6: bool) -> u8 {
    let net = u32::from(from.network_id);
    let internal = from.flags & ENDPOINT_FLAG_INTERNAL != 0;
    let egress = from.flags & ENDPOINT_FLAG_EGRESS != 0;
    // SAFETY (every lookup): read at once; a concurrent control-plane update can only
    // replace an entry with another valid one.
    let (inside, denied) = if ipv6 {
        let Some(dst) = frame.load::<16>(IP6_DST) else {
            return 0;
        };
        let inside = internal && policy::inside6(dst, unsafe { NETPATH_NETWORKS.get(net) });
        // A host address is host access's business (hairpin to a published port too).
        let denied = egress
            && unsafe { NETPATH_LOCAL_ADDRS6.get(dst) }.is_none()
            && policy::egress_denied(
                NETPATH_EGRESS6
                    .get(Key::new(160, egress_key6(net, dst)))
                    .copied(),
            );
        (inside, denied)
    } else {
        let Some(dst) = frame.load::<4>(IP_DST) else {
            return 0;
        };
        let inside = internal && policy::inside4(dst, unsafe { NETPATH_NETWORKS.get(net) });
        let denied = egress
            && unsafe { NETPATH_LOCAL_ADDRS.get(dst) }.is_none()
            && policy::egress_denied(
                NETPATH_EGRESS
                    .get(Key::new(64, egress_key(net, dst)))
                    .copied(),
            );
        (inside, denied)
    };
    REFUSED * u8::from((internal && !inside) || denied)
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
