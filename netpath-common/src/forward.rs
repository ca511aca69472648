//! The fast-path decision for a frame arriving on an endpoint's host-side device:
//! anti-spoofing, isolation, and where to redirect. Pure, so host tests and proptest
//! drive exactly what the tc program runs.

use crate::{
    ipv6::{self, Ipv6Kind},
    maps::{
        DropReason, ENDPOINT_FLAG_EGRESS, ENDPOINT_FLAG_INTERNAL, ENDPOINT_FLAG_IPV6,
        ENDPOINT_FLAG_ISOLATED, ENDPOINT_FLAG_NO_IPV4, ENDPOINT_KIND_TAP, EndpointValue,
    },
    policy::Dest,
};

/// What to do with a frame from an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not the fast path's business: the kernel path handles it unchanged.
    Pass,
    /// Hand to `ifindex` — into the peer of a veth host end (`peer`), or out of a TAP (to
    /// the VM) — with the Ethernet addresses [`redirect_macs`] gives for `dst_mac` (the
    /// destination endpoint's) and `src_mac` (its gateway's).
    Redirect {
        ifindex: u32,
        peer: bool,
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
    },
    Drop(DropReason),
}

/// The Ethernet addresses (destination, source) a redirected frame leaves with, given
/// its current ones: `None` if they stay. A frame already addressed to the destination
/// endpoint (`dst_mac`) was sent on-link, to be bridged: it keeps both addresses, as a
/// bridge would. Any other frame was sent to the gateway, to be routed: it gets the
/// endpoint's MAC and, as source, its gateway's (`src_mac`), as a router would.
/// (Not rewriting matters for speed too: a write makes a cloned skb — every TCP
/// segment — copy its header first.)
#[inline(always)]
pub fn redirect_macs(current: [u8; 12], dst_mac: [u8; 6], src_mac: [u8; 6]) -> Option<[u8; 12]> {
    if current[..6] == dst_mac {
        return None;
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&dst_mac);
    macs[6..].copy_from_slice(&src_mac);
    Some(macs)
}

/// The parts of a frame the decision needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameInfo {
    /// A well-formed IPv4 packet.
    Ipv4 { src: [u8; 4], dst: [u8; 4] },
    /// An ARP packet with its sender hardware and protocol addresses.
    Arp { sha: [u8; 6], spa: [u8; 4] },
    /// An IPv6 packet the chain walk read: its source and what the guard checks (the
    /// caller reads the destination itself, for its lookup: kept small for the
    /// program's stack).
    Ipv6 { src: [u8; 16], kind: Ipv6Kind },
    /// An IPv6 frame the guard cannot check ([`crate::packet::PacketClass::Ipv6Unparsed`],
    /// or its L4 header cut short).
    Ipv6Unparsed,
    /// Anything else (malformed IPv4, other ethertypes).
    Other,
}

/// Decides the fate of a frame with Ethernet source `eth_src` that arrived on the
/// host-side device of endpoint `from`, given the endpoint owning its destination IP
/// (`to`, looked up by the caller in the map of the packet's family) and, for IPv6,
/// which global addresses are `from`'s (`owns6`, the caller's lookup; see
/// [`ipv6::guard`]). Network policy ([`crate::policy`]) applies to a packet with a sound
/// source: `dest` is what the policy needs to know of a destination that is no endpoint's
/// (each part read only where `from`'s flags ask, so the caller need not look up what
/// they do not).
#[inline(always)]
pub fn decide(
    from: &EndpointValue,
    eth_src: [u8; 6],
    info: FrameInfo,
    to: Option<&EndpointValue>,
    owns6: impl Fn([u8; 16]) -> bool,
    dest: Dest,
) -> Verdict {
    if eth_src != from.mac {
        return Verdict::Drop(DropReason::SpoofedMac);
    }
    match info {
        FrameInfo::Arp { sha, spa } => {
            // The sender is the endpoint, or 0.0.0.0 for an ARP probe (RFC 5227: an
            // address not yet claimed), always with the endpoint's own MAC; an endpoint
            // without IPv4 has no address to announce or probe for.
            if sha != from.mac || (spa != [0; 4] && spa != from.ip) || !has_ipv4(from) {
                return Verdict::Drop(DropReason::SpoofedArp);
            }
            Verdict::Pass
        }
        FrameInfo::Ipv6 { .. } | FrameInfo::Ipv6Unparsed
            if from.flags & ENDPOINT_FLAG_IPV6 == 0 =>
        {
            Verdict::Drop(DropReason::Ipv6NotEnabled)
        }
        FrameInfo::Ipv6Unparsed => Verdict::Drop(DropReason::Ipv6Unparsed),
        FrameInfo::Ipv6 { src, kind } => match ipv6::guard(from, src, kind, owns6) {
            Some(reason) => Verdict::Drop(reason),
            None => toward(from, to, dest),
        },
        FrameInfo::Other => Verdict::Pass,
        FrameInfo::Ipv4 { src, dst: _ } => {
            if src != from.ip || !has_ipv4(from) {
                return Verdict::Drop(DropReason::SpoofedIp);
            }
            toward(from, to, dest)
        }
    }
}

/// Whether endpoint `from` has an IPv4 address (see [`ENDPOINT_FLAG_NO_IPV4`]).
#[inline(always)]
fn has_ipv4(from: &EndpointValue) -> bool {
    from.flags & ENDPOINT_FLAG_NO_IPV4 == 0
}

/// A packet from `from` with a sound source, to the endpoint `to` (if its destination is
/// one): redirected within the network unless the network is isolated, refused across
/// networks; to no endpoint, refused from an internal network unless inside it, and where
/// the network's egress rules deny it (see [`decide`]).
#[inline(always)]
fn toward(from: &EndpointValue, to: Option<&EndpointValue>, dest: Dest) -> Verdict {
    let Some(to) = to else {
        if from.flags & ENDPOINT_FLAG_INTERNAL != 0 && !dest.inside {
            return Verdict::Drop(DropReason::Internal);
        }
        if from.flags & ENDPOINT_FLAG_EGRESS != 0 && dest.egress_denied {
            return Verdict::Drop(DropReason::EgressDenied);
        }
        return Verdict::Pass;
    };
    if to.network_id != from.network_id {
        return Verdict::Drop(DropReason::OtherNetwork);
    }
    if to.ifindex == from.ifindex {
        return Verdict::Pass;
    }
    if from.flags & ENDPOINT_FLAG_ISOLATED != 0 {
        return Verdict::Drop(DropReason::Isolated);
    }
    Verdict::Redirect {
        ifindex: to.ifindex,
        peer: to.kind != ENDPOINT_KIND_TAP,
        dst_mac: to.mac,
        src_mac: to.host_mac,
    }
}

/// Host routing shortcut, endpoint → uplink: whether a packet that [`decide`] passed to
/// the kernel (destination `dst`, not an endpoint) may skip the host's IP stack on its way
/// out — the caller still asks the FIB where it goes, and takes the shortcut only to an
/// uplink. It must have been sent to the gateway (`eth_dst` is the endpoint's gateway
/// MAC: to be routed, not bridged to a neighbour on the same segment) and be unicast to an
/// address a router forwards: not 0.0.0.0/8, loopback, multicast, class E or broadcast,
/// which the kernel drops as martians or handles itself.
#[inline(always)]
pub fn uplink_candidate(from: &EndpointValue, eth_dst: [u8; 6], dst: [u8; 4]) -> bool {
    eth_dst == from.host_mac && dst[0] != 0 && dst[0] != 127 && dst[0] < 224
}

/// The TTL a routed packet leaves with, or `None` if it must not be forwarded (the
/// kernel path then answers with ICMP time exceeded): what every router does.
#[inline(always)]
pub const fn routed_ttl(ttl: u8) -> Option<u8> {
    if ttl > 1 { Some(ttl - 1) } else { None }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::maps::ENDPOINT_KIND_VETH;

    /// A destination inside (an internal network) and not denied: what no policy checks.
    const OPEN: Dest = Dest {
        inside: true,
        egress_denied: false,
    };

    fn dest(inside: bool, egress_denied: bool) -> Dest {
        Dest {
            inside,
            egress_denied,
        }
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4]) -> FrameInfo {
        FrameInfo::Ipv4 { src, dst }
    }

    fn arp(sha: [u8; 6], spa: [u8; 4]) -> FrameInfo {
        FrameInfo::Arp { sha, spa }
    }

    /// What `decide` says of an IPv4 packet from `a` (its own MAC and address) to `b`.
    fn from_to(a: &EndpointValue, b: &EndpointValue) -> Verdict {
        decide_from(a, ipv4(a.ip, b.ip), Some(b))
    }

    fn ep(last: u8, ifindex: u32, network_id: u16, kind: u8) -> EndpointValue {
        EndpointValue {
            ip: [10, 0, 0, last],
            ifindex,
            mac: [2, 0, 0, 0, 0, last],
            host_mac: [2, 0xff, 0, 0, 0, network_id as u8],
            network_id,
            kind,
            flags: 0,
        }
    }

    /// The IPv6 address of the endpoint `ep` made: fd00::(its last MAC byte).
    fn ip6(e: &EndpointValue) -> [u8; 16] {
        let mut a = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a[15] = e.mac[5];
        a
    }

    /// What the IPv6 endpoint map says of `e`'s addresses.
    fn owns(e: &EndpointValue) -> impl Fn([u8; 16]) -> bool {
        let own = ip6(e);
        move |a| a == own
    }

    /// `decide` for a frame from `a` with its own MAC.
    fn decide_from(a: &EndpointValue, info: FrameInfo, to: Option<&EndpointValue>) -> Verdict {
        decide(a, a.mac, info, to, owns(a), OPEN)
    }

    /// A plain IPv6 packet from `a`'s own address (to whichever endpoint the caller
    /// looked up).
    fn ipv6_from(a: &EndpointValue) -> FrameInfo {
        FrameInfo::Ipv6 {
            src: ip6(a),
            kind: Ipv6Kind::PLAIN,
        }
    }

    #[test]
    fn same_network_veth_is_redirected_to_the_peer_with_rewritten_macs() {
        let a = ep(2, 10, 1, ENDPOINT_KIND_VETH);
        let b = ep(3, 11, 1, ENDPOINT_KIND_VETH);
        let v = from_to(&a, &b);
        assert_eq!(
            v,
            Verdict::Redirect {
                ifindex: 11,
                peer: true,
                dst_mac: b.mac,
                src_mac: b.host_mac
            }
        );
    }

    #[test]
    fn bridged_frames_keep_their_macs_routed_ones_get_the_gateway() {
        let (b_mac, gw) = ([2, 0, 0, 0, 0, 3], [2, 0xee, 0, 0, 0, 3]);
        let a_mac = [2, 0, 0, 0, 0, 2];
        let cur = |dst: [u8; 6]| {
            let mut c = [0u8; 12];
            c[..6].copy_from_slice(&dst);
            c[6..].copy_from_slice(&a_mac);
            c
        };
        // On-link to B: unchanged.
        assert_eq!(redirect_macs(cur(b_mac), b_mac, gw), None);
        // To A's gateway (routed mode, or a hairpin): B's MAC, from B's gateway.
        let to_gw = redirect_macs(cur([2, 0xee, 0, 0, 0, 2]), b_mac, gw).unwrap();
        assert_eq!(to_gw[..6], b_mac);
        assert_eq!(to_gw[6..], gw);
    }

    #[test]
    fn tap_destination_is_a_plain_redirect() {
        let a = ep(2, 10, 1, ENDPOINT_KIND_VETH);
        let t = ep(4, 12, 1, ENDPOINT_KIND_TAP);
        let v = from_to(&a, &t);
        assert!(matches!(
            v,
            Verdict::Redirect {
                ifindex: 12,
                peer: false,
                ..
            }
        ));
    }

    #[test]
    fn spoofing_and_isolation_drop_with_the_right_reason() {
        let a = ep(2, 10, 1, ENDPOINT_KIND_VETH);
        let b = ep(3, 11, 1, ENDPOINT_KIND_VETH);
        let other = ep(5, 13, 2, ENDPOINT_KIND_VETH);
        use DropReason::*;
        // (Ethernet source, frame, destination endpoint, why it is dropped)
        for (eth_src, info, to, reason) in [
            (b.mac, ipv4(a.ip, b.ip), Some(&b), SpoofedMac),
            (a.mac, ipv4(b.ip, b.ip), Some(&b), SpoofedIp),
            (a.mac, ipv4(a.ip, other.ip), Some(&other), OtherNetwork),
            (a.mac, arp(a.mac, b.ip), None, SpoofedArp),
            (a.mac, arp(b.mac, a.ip), None, SpoofedArp),
            // A probe (sender 0.0.0.0) must still carry the endpoint's own MAC.
            (a.mac, arp(b.mac, [0; 4]), None, SpoofedArp),
            // An endpoint without IPv6 (an IPv4-only network's) speaks none.
            (a.mac, ipv6_from(&a), None, Ipv6NotEnabled),
            (a.mac, FrameInfo::Ipv6Unparsed, None, Ipv6NotEnabled),
            // Its MAC is checked first, as for every frame.
            (b.mac, ipv6_from(&a), None, SpoofedMac),
        ] {
            let v = decide(&a, eth_src, info, to, owns(&a), OPEN);
            assert_eq!(v, Verdict::Drop(reason), "{eth_src:?} {info:?}");
        }
    }

    #[test]
    fn unknown_self_and_other_traffic_pass() {
        let a = ep(2, 10, 1, ENDPOINT_KIND_VETH);
        for (info, to) in [
            (ipv4(a.ip, [8, 8, 8, 8]), None),
            (ipv4(a.ip, a.ip), Some(&a)),
            (arp(a.mac, a.ip), None),
            // An ARP probe (RFC 5227).
            (arp(a.mac, [0; 4]), None),
            (FrameInfo::Other, None),
        ] {
            assert_eq!(decide_from(&a, info, to), Verdict::Pass, "{info:?}");
        }
        // A dual-stack endpoint's IPv6 to a non-endpoint (no `to`) takes the kernel's path.
        let dual = EndpointValue {
            flags: ENDPOINT_FLAG_IPV6,
            ..a
        };
        assert_eq!(decide_from(&dual, ipv6_from(&dual), None), Verdict::Pass);
    }

    #[test]
    fn an_ipv6_only_endpoint_sends_no_ipv4_or_arp_but_its_ipv6_is_redirected() {
        let v6_only = |e: EndpointValue| EndpointValue {
            ip: [0; 4],
            flags: ENDPOINT_FLAG_IPV6 | ENDPOINT_FLAG_NO_IPV4,
            ..e
        };
        let a = v6_only(ep(2, 10, 1, ENDPOINT_KIND_VETH));
        let b = v6_only(ep(3, 11, 1, ENDPOINT_KIND_VETH));
        use DropReason::*;
        // Its map entry's 0.0.0.0 is no address of its own: not as a source, nor as a
        // probe's sender.
        for (info, reason) in [
            (ipv4([0; 4], [255; 4]), SpoofedIp),
            (ipv4([10, 0, 0, 2], [10, 0, 0, 3]), SpoofedIp),
            (arp(a.mac, [0; 4]), SpoofedArp),
            (arp(a.mac, [10, 0, 0, 2]), SpoofedArp),
        ] {
            assert_eq!(
                decide_from(&a, info, None),
                Verdict::Drop(reason),
                "{info:?}"
            );
        }
        assert_eq!(
            decide_from(&a, ipv6_from(&a), Some(&b)),
            Verdict::Redirect {
                ifindex: 11,
                peer: true,
                dst_mac: b.mac,
                src_mac: b.host_mac,
            }
        );
        assert_eq!(decide_from(&a, FrameInfo::Other, None), Verdict::Pass);
    }

    #[test]
    fn dual_stack_ipv6_is_guarded_then_redirected_like_ipv4() {
        let dual = |e: EndpointValue| EndpointValue {
            flags: ENDPOINT_FLAG_IPV6,
            ..e
        };
        let a = dual(ep(2, 10, 1, ENDPOINT_KIND_VETH));
        let b = dual(ep(3, 11, 1, ENDPOINT_KIND_VETH));
        let t = dual(ep(4, 12, 1, ENDPOINT_KIND_TAP));
        let other = dual(ep(5, 13, 2, ENDPOINT_KIND_VETH));
        let v = decide_from(&a, ipv6_from(&a), Some(&b));
        let to_b = Verdict::Redirect {
            ifindex: 11,
            peer: true,
            dst_mac: b.mac,
            src_mac: b.host_mac,
        };
        assert_eq!(v, to_b);
        // From its link-local address too (to a global one: the same redirect).
        let ll = FrameInfo::Ipv6 {
            src: ipv6::link_local(a.mac),
            kind: Ipv6Kind::PLAIN,
        };
        assert_eq!(decide_from(&a, ll, Some(&b)), to_b);
        let v = decide_from(&a, ipv6_from(&a), Some(&t));
        assert!(matches!(
            v,
            Verdict::Redirect {
                ifindex: 12,
                peer: false,
                ..
            }
        ));
        use DropReason::*;
        for (info, to, reason) in [
            (ipv6_from(&a), Some(&other), OtherNetwork),
            // b's address, which the map says is b's.
            (ipv6_from(&b), Some(&a), SpoofedIp),
            (FrameInfo::Ipv6Unparsed, None, Ipv6Unparsed),
        ] {
            assert_eq!(decide_from(&a, info, to), Verdict::Drop(reason), "{info:?}");
        }
    }

    #[test]
    fn an_isolated_network_refuses_endpoint_to_endpoint_in_both_families() {
        let iso = |e: EndpointValue| EndpointValue {
            flags: ENDPOINT_FLAG_IPV6 | ENDPOINT_FLAG_ISOLATED,
            ..e
        };
        let a = iso(ep(2, 10, 1, ENDPOINT_KIND_VETH));
        let b = iso(ep(3, 11, 1, ENDPOINT_KIND_VETH));
        let t = iso(ep(4, 12, 1, ENDPOINT_KIND_TAP));
        let other = iso(ep(5, 13, 2, ENDPOINT_KIND_VETH));
        use DropReason::*;
        for (info, to, reason) in [
            (ipv4(a.ip, b.ip), Some(&b), Isolated),
            (ipv4(a.ip, t.ip), Some(&t), Isolated),
            (ipv6_from(&a), Some(&b), Isolated),
            // Across networks the other network's rule comes first; forgeries stay
            // forgeries.
            (ipv4(a.ip, other.ip), Some(&other), OtherNetwork),
            (ipv4(b.ip, b.ip), Some(&b), SpoofedIp),
        ] {
            assert_eq!(decide_from(&a, info, to), Verdict::Drop(reason), "{info:?}");
        }
        // To itself, to the host, to the world, ARP: as without the policy.
        for (info, to) in [
            (ipv4(a.ip, a.ip), Some(&a)),
            (ipv4(a.ip, [198, 51, 100, 1]), None),
            (ipv6_from(&a), None),
            (arp(a.mac, a.ip), None),
        ] {
            assert_eq!(decide_from(&a, info, to), Verdict::Pass, "{info:?}");
        }
        // Isolation is the network's: one without it redirects as before.
        let open = EndpointValue { flags: 0, ..a };
        assert!(matches!(from_to(&open, &b), Verdict::Redirect { .. }));
    }

    #[test]
    fn an_internal_network_reaches_its_endpoints_and_what_inside_allows() {
        let int = |e: EndpointValue| EndpointValue {
            flags: ENDPOINT_FLAG_IPV6 | ENDPOINT_FLAG_INTERNAL,
            ..e
        };
        let a = int(ep(2, 10, 1, ENDPOINT_KIND_VETH));
        let b = int(ep(3, 11, 1, ENDPOINT_KIND_VETH));
        let out = ipv4(a.ip, [198, 51, 100, 1]);
        let d = |info, to, inside: bool| decide(&a, a.mac, info, to, owns(&a), dest(inside, false));
        assert_eq!(d(out, None, false), Verdict::Drop(DropReason::Internal));
        assert_eq!(
            d(ipv6_from(&a), None, false),
            Verdict::Drop(DropReason::Internal)
        );
        assert_eq!(d(out, None, true), Verdict::Pass);
        // Its own network's endpoints are inside whatever `inside` says.
        assert!(matches!(
            d(ipv4(a.ip, b.ip), Some(&b), false),
            Verdict::Redirect { .. }
        ));
        // `inside` means nothing to the endpoint of a network that is not internal.
        let open = EndpointValue { flags: 0, ..a };
        let v = decide(&open, a.mac, out, None, owns(&a), dest(false, true));
        assert_eq!(v, Verdict::Pass);
        // A forgery is a forgery first, and an internal drop is never translated.
        assert_eq!(
            d(ipv4(b.ip, [198, 51, 100, 1]), None, false),
            Verdict::Drop(DropReason::SpoofedIp)
        );
        assert!(DropReason::Internal.bars_translation());
        assert!(!DropReason::Isolated.bars_translation());
    }

    #[test]
    fn egress_rules_refuse_what_they_deny_and_nothing_else() {
        let with = |e: EndpointValue, flags| EndpointValue { flags, ..e };
        let a = with(
            ep(2, 10, 1, ENDPOINT_KIND_VETH),
            ENDPOINT_FLAG_IPV6 | ENDPOINT_FLAG_EGRESS,
        );
        let b = with(
            ep(3, 11, 1, ENDPOINT_KIND_VETH),
            ENDPOINT_FLAG_IPV6 | ENDPOINT_FLAG_EGRESS,
        );
        let out = ipv4(a.ip, [10, 9, 9, 9]);
        let d = |e: &EndpointValue, info, to, denied| {
            decide(e, e.mac, info, to, owns(e), dest(true, denied))
        };
        assert_eq!(
            d(&a, out, None, true),
            Verdict::Drop(DropReason::EgressDenied)
        );
        assert_eq!(
            d(&a, ipv6_from(&a), None, true),
            Verdict::Drop(DropReason::EgressDenied)
        );
        assert_eq!(d(&a, out, None, false), Verdict::Pass);
        // The network's own endpoints are no egress, whatever a rule says of their subnet.
        assert!(matches!(
            d(&a, ipv4(a.ip, b.ip), Some(&b), true),
            Verdict::Redirect { .. }
        ));
        // Without the flag no rule is read; forgeries stay forgeries; internal comes first.
        let open = with(a, ENDPOINT_FLAG_IPV6);
        assert_eq!(d(&open, out, None, true), Verdict::Pass);
        let spoofed = ipv4(b.ip, [10, 9, 9, 9]);
        assert_eq!(
            d(&a, spoofed, None, true),
            Verdict::Drop(DropReason::SpoofedIp)
        );
        let both = with(a, ENDPOINT_FLAG_EGRESS | ENDPOINT_FLAG_INTERNAL);
        let v = decide(&both, a.mac, out, None, owns(&a), dest(false, true));
        assert_eq!(v, Verdict::Drop(DropReason::Internal));
        assert!(DropReason::EgressDenied.bars_translation());
    }

    #[test]
    fn only_routed_unicast_to_the_gateway_may_take_the_uplink_shortcut() {
        let a = ep(2, 10, 1, ENDPOINT_KIND_VETH);
        let remote = [198, 51, 100, 7];
        assert!(uplink_candidate(&a, a.host_mac, remote));
        // Bridged to a neighbour on the segment (not the gateway's MAC): the bridge's.
        assert!(!uplink_candidate(&a, [2, 0, 0, 0, 0, 9], remote));
        for dst in [
            [0, 1, 2, 3],
            [127, 0, 0, 1],
            [224, 0, 0, 251],
            [240, 0, 0, 1],
            [255; 4],
        ] {
            assert!(!uplink_candidate(&a, a.host_mac, dst), "{dst:?}");
        }
        assert!(uplink_candidate(&a, a.host_mac, [223, 255, 255, 254]));
    }

    #[test]
    fn routing_decrements_the_ttl_and_stops_at_one() {
        assert_eq!(routed_ttl(64), Some(63));
        assert_eq!(routed_ttl(2), Some(1));
        assert_eq!(routed_ttl(1), None);
        assert_eq!(routed_ttl(0), None);
    }

    proptest! {
        /// Whatever the frame, a redirect only ever targets an endpoint of the sender's
        /// own network, and only for a packet whose source is the sender's.
        #[test]
        fn redirects_never_cross_networks_or_carry_spoofed_sources(
            src in any::<[u8; 4]>(), mac in any::<[u8; 6]>(), net in 1u16..4, kind in 1u8..3,
        ) {
            let a = ep(2, 10, 1, ENDPOINT_KIND_VETH);
            let mut b = ep(3, 11, net, kind);
            b.ip = [10, 0, 0, 3];
            let v = decide(&a, mac, FrameInfo::Ipv4 { src, dst: b.ip }, Some(&b), |_| false, OPEN);
            if let Verdict::Redirect { ifindex, .. } = v {
                prop_assert_eq!(net, 1);
                prop_assert_eq!(src, a.ip);
                prop_assert_eq!(mac, a.mac);
                prop_assert_eq!(ifindex, 11);
            }
        }
    }
}
