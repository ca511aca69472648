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
//!
//! [`ENDPOINT_FLAG_ISOLATED`]: crate::maps::ENDPOINT_FLAG_ISOLATED
//! [`ENDPOINT_FLAG_INTERNAL`]: crate::maps::ENDPOINT_FLAG_INTERNAL

use crate::maps::NetworkValue;

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
