//! NAT66 with real traffic: a container of a dual-stack network reaches a server in
//! another namespace ("the outside", behind the network's uplink, on a global IPv6
//! prefix: 2001:db8::/32 documentation addresses) with TCP, UDP and ping6; the server
//! sees the uplink's global IPv6 address, never the container's; replies find their way
//! back. No ip6tables or nftables rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netpath_tests::{
    Daemon, NetNs, OutsideLink,
    outside::{routed_in, tcp_and_udp_out},
    require_root,
};

const OUTSIDE4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const UPLINK4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x66, 0, 0, 0, 0, 1);
const UPLINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x66, 0, 0, 0, 0, 2);

#[test]
fn container_ipv6_traffic_leaves_with_the_uplink_ipv6_address() {
    require_root!();
    let outside = NetNs::with_ipv6("m6o");
    // The uplink needs its IPv4 address (masquerade is set up from it); the server
    // is reached over IPv6 only.
    let uplink = OutsideLink::new(&outside, UPLINK4, OUTSIDE4);
    uplink.add_ipv6(&outside, UPLINK6, OUTSIDE6);
    let up = uplink.name.clone();

    let d = Daemon::start();
    let net = netpath_tests::unique("m6");
    d.ok(&[
        "network",
        "create",
        &net,
        "--subnet",
        "10.227.0.0/24",
        "--subnet",
        "fd5c:66::/64",
        "--uplink",
        &up,
    ]);
    let c = NetNs::with_ipv6("m6c");
    let ep = d.add_endpoint(&net, &c);
    let ep6: Ipv6Addr = ep["ip6"].as_str().expect("ip6").parse().unwrap();
    assert_eq!(ep6, "fd5c:66::2".parse::<Ipv6Addr>().unwrap());

    let seen = tcp_and_udp_out(&outside, &c, IpAddr::V6(OUTSIDE6), 7600);
    assert_eq!(seen.tcp_bytes, 100_000);
    assert_eq!(seen.tcp.ip(), IpAddr::V6(UPLINK6), "TCP source not NAT66ed");
    assert_eq!(seen.udp.ip(), IpAddr::V6(UPLINK6), "UDP source not NAT66ed");
    c.exec(&[
        "ping",
        "-6",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        &OUTSIDE6.to_string(),
    ]);

    // The NAT66 tables hold the connections: `netpath stats` counts IPv6 on the
    // uplink's hooks.
    let stats = d.stats();
    let v6_on = |hook: &str| -> u64 {
        let classes = stats["classes"].as_array().unwrap().iter();
        classes
            .filter(|c| c["hook"] == hook && c["class"].as_str().unwrap().starts_with("ipv6"))
            .map(|c| c["packets"].as_u64().unwrap())
            .sum()
    };
    assert!(
        v6_on("uplink_egress") > 0 && v6_on("uplink_ingress") > 0,
        "{stats}"
    );
    // No ip6tables/nftables NAT was involved: the host has no such rule.
    if let Ok(out) = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
    {
        let rules = String::from_utf8_lossy(&out.stdout);
        assert!(
            !rules.contains("masquerade") && !rules.contains("snat"),
            "{rules}"
        );
    }
}

/// A container of a dual-stack network whose uplink leads to an outside namespace that
/// routes the network's IPv6 subnet back through it (the multi-host recipe).
struct RoutedBack {
    outside: NetNs,
    _uplink: OutsideLink,
    d: Daemon,
    net: String,
    c: NetNs,
    /// The container's IPv6 address.
    ep6: Ipv6Addr,
    /// The outside's and the uplink's IPv6 addresses: `2001:db8:<n>::1` and `::2`.
    outside6: Ipv6Addr,
    uplink6: Ipv6Addr,
}

/// [`RoutedBack`] number `n` (its addresses: `100.64.<n>.0/24` and `2001:db8:<n>::/64` on
/// the uplink, `10.<158 + n>.0.0/24` and `fd5c:<n>::/64` for the network), the network created
/// with `extra` options.
fn routed_back(tag: &str, n: u8, extra: &[&str]) -> RoutedBack {
    let outside = NetNs::with_ipv6(&format!("{tag}o"));
    // `n`'s digits as the third group, as `2001:db8:<n>::` reads.
    let group = u16::from_str_radix(&n.to_string(), 16).unwrap();
    let v6 = |host| Ipv6Addr::new(0x2001, 0xdb8, group, 0, 0, 0, 0, host);
    let (outside6, uplink6) = (v6(1), v6(2));
    let uplink = OutsideLink::new(
        &outside,
        Ipv4Addr::new(100, 64, n, 2),
        Ipv4Addr::new(100, 64, n, 1),
    );
    uplink.add_ipv6(&outside, uplink6, outside6);
    let d = Daemon::start();
    let net = netpath_tests::unique(tag);
    let (subnet, subnet6) = (format!("10.{}.0.0/24", 158 + n), format!("fd5c:{n}::/64"));
    let create = [
        &[
            "network", "create", &net, "--subnet", &subnet, "--subnet", &subnet6,
        ][..],
        &["--uplink", &uplink.name],
        extra,
    ];
    d.ok(&create.concat());
    let via = uplink6.to_string();
    outside.exec(&["ip", "-6", "route", "add", &subnet6, "via", &via]);
    let c = NetNs::with_ipv6(&format!("{tag}c"));
    let ep = d.add_endpoint(&net, &c);
    let ep6 = ep["ip6"].as_str().expect("ip6").parse().unwrap();
    RoutedBack {
        outside,
        _uplink: uplink,
        d,
        net,
        c,
        ep6,
        outside6,
        uplink6,
    }
}

/// `--no-masquerade` with an IPv6 CIDR: IPv6 connections to it keep the endpoint's own
/// address; the datapath's IPv6 exemption trie, not only IPv4's, is written.
#[test]
fn exempted_ipv6_destinations_see_the_endpoint_address() {
    require_root!();
    let r = routed_back("x6", 67, &["--no-masquerade", "2001:db8:67::/64"]);
    let shown = r.d.ok(&["inspect", &r.net]);
    assert!(shown.contains("2001:db8:67::/64"), "{shown}");
    let seen = tcp_and_udp_out(&r.outside, &r.c, IpAddr::V6(r.outside6), 7610);
    assert_eq!(seen.tcp_bytes, 100_000);
    let own = IpAddr::V6(r.ep6);
    assert_eq!(seen.tcp.ip(), own, "TCP to an exempted prefix NAT66ed");
    assert_eq!(seen.udp.ip(), own, "UDP to an exempted prefix NAT66ed");
}

/// A connection from outside to an endpoint's own IPv6 address, routed through the host,
/// gets its replies from that address — recorded on the way in, not NAT66ed on the way
/// out, or the client resets it (TCP) or never recognises it (UDP). The endpoint's own
/// connections out stay NAT66ed.
#[test]
fn ipv6_connections_routed_in_get_replies_from_the_endpoint_address() {
    require_root!();
    let r = routed_back("r6", 68, &[]);
    let seen = routed_in(&r.outside, &r.c, IpAddr::V6(r.ep6), 7620);
    let echo_from = std::net::SocketAddr::from((r.ep6, 7621));
    assert_eq!(seen.udp_reply_from, echo_from, "UDP reply NAT66ed");
    assert_eq!(seen.tcp_peer.ip(), IpAddr::V6(r.outside6));
    assert_eq!(seen.udp_peer.ip(), IpAddr::V6(r.outside6));
    let out = tcp_and_udp_out(&r.outside, &r.c, IpAddr::V6(r.outside6), 7630);
    assert_eq!(
        out.tcp.ip(),
        IpAddr::V6(r.uplink6),
        "TCP source not NAT66ed"
    );
}
