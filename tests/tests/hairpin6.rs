//! Hairpin over IPv6, with real traffic through the daemon. A dual-stack network
//! (10.211.0.0/24, fd5d::/64) whose uplink has 198.19.211.2 and fd5d:1::2 (the other end,
//! in a namespace standing for "outside": 198.19.211.1, fd5d:1::1); endpoints A and B, B
//! publishing `-p 18211:80` and `-p 18211:53/udp` (both families):
//! - A reaches `[fd5d:1::2]:18211` (TCP) and B's server sees A's own IPv6 address, A's
//!   socket the published address;
//! - B reaches its own published port through the host address (and, being SNATed to
//!   it, looks like the host to itself);
//! - UDP: A's datagram reaches B, the reply comes from the published address;
//! - IPv4 hairpin on the same spec still works.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use netpath_tests::{
    Daemon, Ipv6ForwardingRestored, NetNs, OutsideLink,
    echo::{tcp_echo, tcp_server, udp_echo, udp_server},
    require_root,
};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 211, 1);
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 19, 211, 2);
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0xfd5d, 1, 0, 0, 0, 0, 0, 1);
const UPLINK6: Ipv6Addr = Ipv6Addr::new(0xfd5d, 1, 0, 0, 0, 0, 0, 2);
const PUBLISHED: u16 = 18211;

/// An endpoint of `net` in `ns`: its id, IPv4 and IPv6 addresses.
fn endpoint(d: &Daemon, net: &str, ns: &NetNs) -> (String, Ipv4Addr, Ipv6Addr) {
    let v = d.add_endpoint(net, ns);
    (
        v["id"].as_str().unwrap().to_owned(),
        v["ip"].as_str().unwrap().parse().unwrap(),
        v["ip6"].as_str().expect("an IPv6 address").parse().unwrap(),
    )
}

#[test]
fn hairpin_over_ipv6() {
    require_root!();
    let _forwarding = Ipv6ForwardingRestored::new();
    let outside = NetNs::with_ipv6("h6o");
    let uplink = OutsideLink::new(&outside, UPLINK, OUTSIDE);
    uplink.add_ipv6(&outside, UPLINK6, OUTSIDE6);
    let d = Daemon::start();
    let net = netpath_tests::unique("h6n");
    d.ok(&[
        "network",
        "create",
        &net,
        "--subnet",
        "10.211.0.0/24",
        "--subnet",
        "fd5d::/64",
        "--uplink",
        &uplink.name,
    ]);
    let (a_ns, b_ns) = (NetNs::with_ipv6("h6a"), NetNs::with_ipv6("h6b"));
    let (_a, _a_ip, a_ip6) = endpoint(&d, &net, &a_ns);
    let (b, b_ip, b_ip6) = endpoint(&d, &net, &b_ns);
    d.publish(
        &b,
        &[format!("{PUBLISHED}:80"), format!("{PUBLISHED}:53/udp")],
    );
    let published = SocketAddr::from((UPLINK6, PUBLISHED));

    // TCP: A, then B itself, through the host's IPv6 address.
    let server = tcp_server(&b_ns, b_ip6, 80, 2);
    let (_, a_seen) = a_ns
        .spawn(move || tcp_echo(published))
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("A → {published}: {e}"));
    assert_eq!(a_seen, published, "A must see the published address");
    let (_, b_seen) = b_ns
        .spawn(move || tcp_echo(published))
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("B → its own {published}: {e}"));
    assert_eq!(b_seen, published);
    let peers: Vec<IpAddr> = server.join().unwrap().iter().map(|p| p.ip()).collect();
    assert_eq!(
        peers,
        [IpAddr::V6(a_ip6), IpAddr::V6(UPLINK6)],
        "B's server must see A's own address, then the host's for B itself"
    );

    // UDP: the reply comes from the published address.
    let udp = udp_server(&b_ns, b_ip6, 53, 1);
    let client = a_ns.spawn(move || {
        let u = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
        (u.local_addr().unwrap().port(), udp_echo(&u, published))
    });
    let (port, from) = client.join().unwrap();
    assert_eq!(
        from,
        Ok(published),
        "the UDP reply must come from the published address"
    );
    let udp_peers = udp.join().unwrap();
    assert_eq!(udp_peers, [SocketAddr::from((a_ip6, port))]);

    // IPv4 hairpin on the same spec.
    let server4 = tcp_server(&b_ns, b_ip, 80, 1);
    let to4 = SocketAddr::from((UPLINK, PUBLISHED));
    let (_, seen4) = a_ns
        .spawn(move || tcp_echo(to4))
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("A → {to4}: {e}"));
    assert_eq!(seen4, to4);
    server4.join().unwrap();
}
