//! Published ports over IPv6 through the daemon, with real traffic. A dual-stack bridge
//! network (10.207.0.0/24, 2001:db8:62::/64) whose uplink has 198.19.62.2 and
//! 2001:db8:61::2; a client in another namespace (198.19.62.1, 2001:db8:61::1):
//! - `-p 18620:80` and `-p 18620:53/udp` publish on both families (one lease each);
//!   the client reaches `[2001:db8:61::2]:18620` over TCP and UDP and the container sees
//!   the client's own IPv6 address; IPv4 still works on the same spec;
//! - host-local: a host process reaches `[::1]:18620` and `[2001:db8:61::2]:18620` (TCP,
//!   getpeername the published address; UDP echo through sendmsg6/recvmsg6, the reply
//!   from the published address);
//! - `-p [::1]:18621:81`: the host reaches it, the other namespace does not.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use netpath_tests::{
    Daemon, Ipv6ForwardingRestored, NetNs, OutsideLink,
    echo::{tcp_echo, tcp_server, udp_echo, udp_server},
    require_root,
};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 62, 1);
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 19, 62, 2);
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x61, 0, 0, 0, 0, 1);
const UPLINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x61, 0, 0, 0, 0, 2);
const PUBLISHED: u16 = 18620;
const LOOPBACK_ONLY: u16 = 18621;

#[test]
fn ipv6_published_ports_from_outside_and_from_the_host() {
    require_root!();
    let _forwarding = Ipv6ForwardingRestored::new();
    let outside = NetNs::with_ipv6("p6o");
    let uplink = OutsideLink::new(&outside, UPLINK, OUTSIDE);
    uplink.add_ipv6(&outside, UPLINK6, OUTSIDE6);
    let d = Daemon::start();
    let net = netpath_tests::unique("p6n");
    d.ok(&[
        "network",
        "create",
        &net,
        "--subnet",
        "10.207.0.0/24",
        "--subnet",
        "2001:db8:62::/64",
        "--uplink",
        &uplink.name,
    ]);
    let ns = NetNs::with_ipv6("p6c");
    let ep = d.add_endpoint(&net, &ns);
    let id = ep["id"].as_str().unwrap().to_owned();
    let ip: Ipv4Addr = ep["ip"].as_str().unwrap().parse().unwrap();
    let ip6: Ipv6Addr = ep["ip6"]
        .as_str()
        .expect("an IPv6 address")
        .parse()
        .unwrap();
    d.publish(
        &id,
        &[
            format!("{PUBLISHED}:80"),
            format!("{PUBLISHED}:53/udp"),
            format!("[::1]:{LOOPBACK_ONLY}:81"),
        ],
    );
    let ls: serde_json::Value = serde_json::from_str(&d.ok(&["port", "ls", "--json"])).unwrap();
    let mut ids: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let want = [
        format!("tcp/0.0.0.0:{PUBLISHED}"),
        format!("tcp/[::1]:{LOOPBACK_ONLY}"),
        format!("tcp/[::]:{PUBLISHED}"),
        format!("udp/0.0.0.0:{PUBLISHED}"),
        format!("udp/[::]:{PUBLISHED}"),
    ];
    assert_eq!(ids, want, "{ls}");

    // From outside, over IPv6 and IPv4: the container sees the client's own address.
    let server6 = tcp_server(&ns, ip6, 80, 3);
    let server4 = tcp_server(&ns, ip, 80, 1);
    let to6 = SocketAddr::from((UPLINK6, PUBLISHED));
    let to4 = SocketAddr::from((UPLINK, PUBLISHED));
    let r = outside.spawn(move || tcp_echo(to6)).join().unwrap();
    let (local6, peer6) = r.unwrap_or_else(|e| panic!("outside → {to6}: {e}"));
    assert_eq!(peer6, to6);
    let (_, peer4) = outside
        .spawn(move || tcp_echo(to4))
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("outside → {to4}: {e}"));
    assert_eq!(peer4, to4);

    // Host-local over [::1] and the host's IPv6 address: getpeername shows them.
    for to in [
        SocketAddr::from((Ipv6Addr::LOCALHOST, PUBLISHED)),
        SocketAddr::from((UPLINK6, PUBLISHED)),
    ] {
        let (_, peer) = tcp_echo(to).unwrap_or_else(|e| panic!("host → {to}: {e}"));
        assert_eq!(peer, to, "getpeername must show the published address");
    }
    let seen6 = server6.join().unwrap();
    assert_eq!(
        seen6[0], local6,
        "the container must see the client's address"
    );
    assert!(seen6.iter().all(|p| p.is_ipv6()), "{seen6:?}");
    server4.join().unwrap();

    // UDP from outside, then host-local (unconnected: sendmsg6 / recvmsg6).
    let udp = udp_server(&ns, ip6, 53, 3);
    let client = outside.spawn(move || {
        let u = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
        (u.local_addr().unwrap().port(), udp_echo(&u, to6))
    });
    let (port, from) = client.join().unwrap();
    assert_eq!(
        from,
        Ok(to6),
        "the UDP reply must come from the published address"
    );
    for to in [
        SocketAddr::from((Ipv6Addr::LOCALHOST, PUBLISHED)),
        SocketAddr::from((UPLINK6, PUBLISHED)),
    ] {
        let u = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
        let from = udp_echo(&u, to).unwrap_or_else(|e| panic!("host → UDP {to}: {e}"));
        assert_eq!(
            from, to,
            "the UDP reply must come from the published address"
        );
    }
    let peers = udp.join().unwrap();
    assert_eq!(peers[0], SocketAddr::from((OUTSIDE6, port)), "{peers:?}");

    // [::1] only: the host reaches it, the outside does not.
    let server81 = tcp_server(&ns, ip6, 81, 1);
    let local = SocketAddr::from((Ipv6Addr::LOCALHOST, LOOPBACK_ONLY));
    assert_eq!(tcp_echo(local).map(|(_, p)| p), Ok(local));
    server81.join().unwrap();
    let far = SocketAddr::from((UPLINK6, LOOPBACK_ONLY));
    let r = outside.spawn(move || tcp_echo(far)).join().unwrap();
    assert!(r.is_err(), "[::1]-only port reached from outside: {r:?}");
}
