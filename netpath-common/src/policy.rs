//! Network policy: what an endpoint of a network with a policy may reach, as the endpoint
//! program checks it on the endpoint's own device, before any redirect, hairpin or FIB
//! lookup (so no shortcut bypasses it). [`crate::forward::decide`] applies it.
//!
//! - **Isolated** ([`ENDPOINT_FLAG_ISOLATED`]): a packet to another endpoint of the same
//!   network is dropped (`isolated`), whatever its protocol. A neighbour's published port
//!   stays reachable through a host address: such a connection is translated (hairpin)
//!   before the check, and its replies are recognised as replies. In bridge mode the
//!   bridge ports are isolated too (the kernel's `isolated` port flag), so frames the
//!   program leaves to the bridge (neighbour discovery, link-local unicast) do not cross
//!   either.
//! - **Internal** ([`ENDPOINT_FLAG_INTERNAL`]): a packet to anything but an endpoint of
//!   the network, its gateway, or a link-scope address ([`inside4`], [`inside6`]) is
//!   dropped (`internal_network`), and never translated (no hairpin, masquerade or
//!   published port): Docker's `--internal`.
//! - **Egress rules** ([`ENDPOINT_FLAG_EGRESS`]): a packet to no endpoint and no host
//!   address (what the host serves is host access's business, hairpin included) is
//!   looked up by (network, destination) in an LPM trie; the longest matching rule
//!   decides ([`egress_denied`]), and with none matching it goes.
//!
//! The caller works out what needs a lookup ([`Dest`]) only for an endpoint whose flags
//! ask for it, so a network without policy pays nothing.
//!
//! [`ENDPOINT_FLAG_ISOLATED`]: crate::maps::ENDPOINT_FLAG_ISOLATED
//! [`ENDPOINT_FLAG_INTERNAL`]: crate::maps::ENDPOINT_FLAG_INTERNAL
//! [`ENDPOINT_FLAG_EGRESS`]: crate::maps::ENDPOINT_FLAG_EGRESS

use crate::maps::NetworkValue;

/// What the policy needs to know of a destination that is no endpoint's, looked up by the
/// caller where the sender's flags ask (see [`crate::forward::decide`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dest {
    /// Within the sender's internal network ([`inside4`], [`inside6`]).
    pub inside: bool,
    /// Refused by the sender's network's egress rules ([`egress_denied`]).
    pub egress_denied: bool,
}

/// An egress rule's value in the egress tries: the destination is refused.
pub const EGRESS_DENY: u8 = 1;
/// An egress rule's value: the destination is reached (an exception carved out of a
/// shorter deny, say `--egress-deny private --egress-allow 10.1.2.0/24`).
pub const EGRESS_ALLOW: u8 = 2;

/// The egress tries' key of (network, IPv4 destination): the no-masquerade trie's layout
/// ([`crate::nat::no_masq_key`]); its prefix length is 32 + the rule's.
#[inline(always)]
pub const fn egress_key(network_id: u32, dst: [u8; 4]) -> [u8; 8] {
    crate::nat::no_masq_key(network_id, dst)
}

/// [`egress_key`] for IPv6.
#[inline(always)]
pub const fn egress_key6(network_id: u32, dst: [u8; 16]) -> [u8; 20] {
    crate::nat::no_masq_key6(network_id, dst)
}

/// Whether a packet to one of the host's own addresses opens something new there, which
/// restricted host access refuses unless its port is allowed (or published): a TCP SYN
/// without ACK (`tcp_flags`), any UDP datagram, an ICMP or ICMPv6 echo request (`icmp`:
/// its type), anything of another protocol. What it lets through cannot open a
/// connection — TCP's other segments (replies of the host's own connections), ICMP
/// errors, and neighbour discovery (ICMPv6 133 to 137), without which IPv6 to the
/// gateway fails. (No connection tracking for host traffic: a UDP reply to the host's
/// own request is refused too.)
#[inline(always)]
pub fn opens_on_host(proto: u8, tcp_flags: u8, icmp: u8) -> bool {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    match proto {
        crate::packet::IPPROTO_TCP => tcp_flags & (SYN | ACK) == SYN,
        crate::packet::IPPROTO_UDP => true,
        crate::packet::IPPROTO_ICMP => icmp == 8,
        crate::ipv6::IPPROTO_ICMPV6 => icmp == 128,
        _ => true,
    }
}

/// Whether the longest egress rule matching a destination (`rule`, the trie's value;
/// none: no rule matches) refuses it.
#[inline(always)]
pub fn egress_denied(rule: Option<u8>) -> bool {
    rule == Some(EGRESS_DENY)
}

/// Whether an internal network's endpoint may send to IPv4 `dst`, which is no endpoint's
/// address: its gateway (`net`, the network's entry; none: no gateway is known, so none
/// is reached), the limited broadcast, or the link-local multicast block 224.0.0.0/24
/// (which no router forwards).
#[inline(always)]
pub fn inside4(dst: [u8; 4], net: Option<&NetworkValue>) -> bool {
    let gateway = net.is_some_and(|n| n.gateway != [0; 4] && n.gateway == dst);
    gateway || dst == [255; 4] || (dst[0] == 224 && dst[1] == 0 && dst[2] == 0)
}

/// Whether an internal network's endpoint may send to IPv6 `dst`, which is no endpoint's
/// address: its gateway, a link-local address (fe80::/10: the gateway's, for neighbour
/// discovery; never routed), or a link-local multicast group (ff02::/16: all-routers,
/// solicited-node).
#[inline(always)]
pub fn inside6(dst: [u8; 16], net: Option<&NetworkValue>) -> bool {
    let gateway = net.is_some_and(|n| n.gateway6 != [0; 16] && n.gateway6 == dst);
    gateway || (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80) || (dst[0] == 0xff && dst[1] == 0x02)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    const NET: NetworkValue = NetworkValue {
        gateway: [10, 9, 0, 1],
        gateway6: [0xfd, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    };

    #[test]
    fn only_what_opens_something_on_the_host_is_checked() {
        use crate::packet::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
        let icmp6 = crate::ipv6::IPPROTO_ICMPV6;
        for (proto, flags, icmp, opens) in [
            (IPPROTO_TCP, 0x02, 0, true),
            (IPPROTO_TCP, 0x12, 0, false),
            (IPPROTO_TCP, 0x10, 0, false),
            (IPPROTO_TCP, 0x04, 0, false),
            (IPPROTO_UDP, 0, 0, true),
            (IPPROTO_ICMP, 0, 8, true),
            (IPPROTO_ICMP, 0, 0, false),
            (IPPROTO_ICMP, 0, 3, false),
            (icmp6, 0, 128, true),
            (icmp6, 0, 135, false),
            (icmp6, 0, 136, false),
            (icmp6, 0, 1, false),
            (47, 0, 0, true),
        ] {
            assert_eq!(
                opens_on_host(proto, flags, icmp),
                opens,
                "{proto} {flags:#x} {icmp}"
            );
        }
    }

    #[test]
    fn only_a_deny_rule_denies() {
        assert!(egress_denied(Some(EGRESS_DENY)));
        assert!(!egress_denied(Some(EGRESS_ALLOW)));
        assert!(!egress_denied(None));
        // The key puts the network first: a rule of network 2 never matches network 3's
        // destinations (its first 32 bits differ).
        assert_eq!(egress_key(2, [10, 0, 0, 1]), [0, 0, 0, 2, 10, 0, 0, 1]);
        assert_eq!(egress_key6(3, [0xfd; 16])[..5], [0, 0, 0, 3, 0xfd]);
    }

    #[test]
    fn an_internal_endpoint_reaches_its_gateway_and_link_scope_only() {
        for (dst, inside) in [
            ([10, 9, 0, 1], true),
            ([255, 255, 255, 255], true),
            ([224, 0, 0, 251], true),
            // The subnet's broadcast, other host addresses, the world.
            ([10, 9, 0, 255], false),
            ([10, 9, 1, 1], false),
            ([198, 51, 100, 1], false),
            ([224, 0, 1, 1], false),
            ([0, 0, 0, 0], false),
        ] {
            assert_eq!(inside4(dst, Some(&NET)), inside, "{dst:?}");
        }
        // No entry (or a zero gateway): no gateway is reached.
        assert!(!inside4([10, 9, 0, 1], None));
        let none = NetworkValue {
            gateway: [0; 4],
            ..NET
        };
        assert!(!inside4([0; 4], Some(&none)));
        assert!(inside4([255; 4], None));
    }

    #[test]
    fn an_internal_endpoint_reaches_its_ipv6_gateway_link_local_and_ff02_only() {
        let addr = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        for (dst, inside) in [
            ("fd09::1", true),
            ("fe80::1", true),
            ("febf::1", true),
            ("ff02::1:ff00:1", true),
            ("ff02::2", true),
            ("fd09::2", false),
            ("fec0::1", false),
            ("ff05::2", false),
            ("2001:db8::1", false),
            ("::1", false),
        ] {
            assert_eq!(inside6(addr(dst), Some(&NET)), inside, "{dst}");
        }
        assert!(!inside6(addr("fd09::1"), None));
        let none = NetworkValue {
            gateway6: [0; 16],
            ..NET
        };
        assert!(!inside6([0; 16], Some(&none)));
    }
}
