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

/// The port B's publishes take on the host.
const PUBLISHED: u16 = 18211;
/// The uplink's two ends: outside's and the host's, over IPv4 and IPv6.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 211, 1);
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 19, 211, 2);
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0xfd5d, 1, 0, 0, 0, 0, 0, 1);
const UPLINK6: Ipv6Addr = Ipv6Addr::new(0xfd5d, 1, 0, 0, 0, 0, 0, 2);

/// An endpoint of `net` in `ns`: its id, IPv4 and IPv6 addresses.
fn endpoint(d: &Daemon, net: &str, ns: &NetNs) -> (String, Ipv4Addr, Ipv6Addr) {
    let v = d.add_endpoint(net, ns);
    (
        v["id"].as_str().unwrap().to_owned(),
        v["ip"].as_str().unwrap().parse().unwrap(),
        v["ip6"].as_str().expect("an IPv6 address").parse().unwrap(),
    )
}

/// A TCP echo from `ns` to `to`: the peer the client's socket sees.
fn echo(ns: &NetNs, to: SocketAddr) -> SocketAddr {
    let r = ns.spawn(move || tcp_echo(to)).join().unwrap();
    r.unwrap_or_else(|e| panic!("{} → {to}: {e}", ns.name())).1
}

#[test]
fn hairpin_over_ipv6() {
    require_root!();
    let _forwarding = Ipv6ForwardingRestored::new();
    let d = Daemon::start();
    let outside = NetNs::with_ipv6("h6o");
    let uplink = OutsideLink::new(&outside, UPLINK, OUTSIDE);
    uplink.add_ipv6(&outside, UPLINK6, OUTSIDE6);
    let subnets = ("10.211.0.0/24", "fd5d::/64");
    let net = d.dual_stack_network("h6n", subnets, &uplink.name);
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
    assert_eq!(
        echo(&a_ns, published),
        published,
        "A must see the published address"
    );
    assert_eq!(echo(&b_ns, published), published, "B reaching itself");
    let peers: Vec<IpAddr> = server.join().unwrap().iter().map(|p| p.ip()).collect();
    assert_eq!(
        peers,
        [IpAddr::V6(a_ip6), IpAddr::V6(UPLINK6)],
        "B's server must see A's own address, then the host's for B itself"
    );

    // UDP: the reply comes from the published address.
    let udp = udp_server(&b_ns, b_ip6, 53, 1);
    let (port, from) = a_ns
        .spawn(move || {
            let u = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
            let port = u.local_addr().unwrap().port();
            (port, udp_echo(&u, published).expect("A → UDP"))
        })
        .join()
        .unwrap();
    let why = "the UDP reply must come from the published address";
    assert_eq!(from, published, "{why}");
    assert_eq!(udp.join().unwrap(), [SocketAddr::from((a_ip6, port))]);

    // IPv4 hairpin on the same spec.
    let server4 = tcp_server(&b_ns, b_ip, 80, 1);
    let to4 = SocketAddr::from((UPLINK, PUBLISHED));
    assert_eq!(echo(&a_ns, to4), to4);
    server4.join().unwrap();
}
