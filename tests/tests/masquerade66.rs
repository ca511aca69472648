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

/// `--no-masquerade` with an IPv6 CIDR: IPv6 connections to it keep the endpoint's own
/// address (the far side routes the network's IPv6 subnet back); the datapath's IPv6
/// exemption trie, not only IPv4's, is written.
#[test]
fn exempted_ipv6_destinations_see_the_endpoint_address() {
    require_root!();
    const OUTSIDE4: Ipv4Addr = Ipv4Addr::new(100, 64, 67, 1);
    const UPLINK4: Ipv4Addr = Ipv4Addr::new(100, 64, 67, 2);
    const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x67, 0, 0, 0, 0, 1);
    const UPLINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x67, 0, 0, 0, 0, 2);
    let outside = NetNs::with_ipv6("x6o");
    let uplink = OutsideLink::new(&outside, UPLINK4, OUTSIDE4);
    uplink.add_ipv6(&outside, UPLINK6, OUTSIDE6);
    let d = Daemon::start();
    let net = netpath_tests::unique("x6");
    let subnet6 = "fd5c:67::/64";
    d.ok(&[
        "network",
        "create",
        &net,
        "--subnet",
        "10.226.0.0/24",
        "--subnet",
        subnet6,
        "--uplink",
        &uplink.name,
        "--no-masquerade",
        "2001:db8:67::/64",
    ]);
    let shown = d.ok(&["inspect", &net]);
    assert!(shown.contains("2001:db8:67::/64"), "{shown}");
    let up6 = UPLINK6.to_string();
    outside.exec(&["ip", "-6", "route", "add", subnet6, "via", &up6]);
    let c = NetNs::with_ipv6("x6c");
    let ep = d.add_endpoint(&net, &c);
    let ep6: Ipv6Addr = ep["ip6"].as_str().expect("ip6").parse().unwrap();
    let seen = tcp_and_udp_out(&outside, &c, IpAddr::V6(OUTSIDE6), 7610);
    assert_eq!(seen.tcp_bytes, 100_000);
    assert_eq!(
        seen.tcp.ip(),
        IpAddr::V6(ep6),
        "TCP to an exempted prefix NAT66ed"
    );
    assert_eq!(
        seen.udp.ip(),
        IpAddr::V6(ep6),
        "UDP to an exempted prefix NAT66ed"
    );
}

/// A connection from outside to an endpoint's own IPv6 address, routed through the host
/// (a route to the network's IPv6 subnet via the uplink), gets its replies from that
/// address — recorded on the way in, not NAT66ed on the way out, or the client resets it
/// (TCP) or never recognises it (UDP). The endpoint's own connections out stay NAT66ed.
#[test]
fn ipv6_connections_routed_in_get_replies_from_the_endpoint_address() {
    require_root!();
    const OUTSIDE4: Ipv4Addr = Ipv4Addr::new(100, 64, 68, 1);
    const UPLINK4: Ipv4Addr = Ipv4Addr::new(100, 64, 68, 2);
    const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x68, 0, 0, 0, 0, 1);
    const UPLINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x68, 0, 0, 0, 0, 2);
    let outside = NetNs::with_ipv6("r6o");
    let uplink = OutsideLink::new(&outside, UPLINK4, OUTSIDE4);
    uplink.add_ipv6(&outside, UPLINK6, OUTSIDE6);
    let d = Daemon::start();
    let net = netpath_tests::unique("r6");
    let subnet6 = "fd5c:68::/64";
    d.ok(&[
        "network",
        "create",
        &net,
        "--subnet",
        "10.225.0.0/24",
        "--subnet",
        subnet6,
        "--uplink",
        &uplink.name,
    ]);
    let up6 = UPLINK6.to_string();
    outside.exec(&["ip", "-6", "route", "add", subnet6, "via", &up6]);
    let c = NetNs::with_ipv6("r6c");
    let ep = d.add_endpoint(&net, &c);
    let ep6: Ipv6Addr = ep["ip6"].as_str().expect("ip6").parse().unwrap();
    let seen = routed_in(&outside, &c, IpAddr::V6(ep6), 7620);
    assert_eq!(
        seen.udp_reply_from,
        std::net::SocketAddr::from((ep6, 7621)),
        "UDP reply NAT66ed"
    );
    assert_eq!(seen.tcp_peer.ip(), IpAddr::V6(OUTSIDE6));
    assert_eq!(seen.udp_peer.ip(), IpAddr::V6(OUTSIDE6));
    // Its own connections out are still NAT66ed.
    let out = tcp_and_udp_out(&outside, &c, IpAddr::V6(OUTSIDE6), 7630);
    assert_eq!(out.tcp.ip(), IpAddr::V6(UPLINK6), "TCP source not NAT66ed");
}
