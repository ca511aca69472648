//! Egress masquerade with real traffic: a container reaches a server in another
//! namespace ("the outside", behind the network's uplink) with TCP, UDP and ping; the
//! server sees the uplink's address; replies find their way back. No iptables rule.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    time::Duration,
};

use netpath_tests::{
    Daemon, NetNs, OutsideLink,
    outside::{routed_in, tcp_and_udp_out},
    require_root,
};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const UPLINK_IP: &str = "198.51.100.2";
const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn container_traffic_leaves_with_the_uplink_address() {
    require_root!();
    let outside = NetNs::new("mo");
    let uplink = OutsideLink::new(&outside, UPLINK_IP.parse().unwrap(), OUTSIDE);
    let up = uplink.name.clone();

    let d = Daemon::start();
    let net = d.network_with_uplink("mq", "10.228.0.0/24", &up);
    let c = NetNs::new("mc");
    let ep = d.add_endpoint(&net, &c);
    let ep_ip = ep["ip"].as_str().unwrap().to_owned();

    // The outside: a TCP server and a UDP echo server that report their peers.
    let seen = tcp_and_udp_out(&outside, &c, OUTSIDE.into(), 7200);
    let (tcp_peer, bytes, udp_peer) = (seen.tcp, seen.tcp_bytes, seen.udp);
    assert_eq!(bytes, 100_000);
    assert_eq!(
        tcp_peer.ip().to_string(),
        UPLINK_IP,
        "TCP source not masqueraded"
    );
    assert_eq!(
        udp_peer.ip().to_string(),
        UPLINK_IP,
        "UDP source not masqueraded"
    );
    assert_ne!(tcp_peer.ip().to_string(), ep_ip);
    c.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.1"]);

    let stats = d.stats();
    let hook_packets = |hook: &str| -> u64 {
        stats["classes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["hook"] == hook)
            .map(|c| c["packets"].as_u64().unwrap())
            .sum()
    };
    assert!(
        hook_packets("uplink_egress") > 0 && hook_packets("uplink_ingress") > 0,
        "{stats}"
    );
    // Replies went from the uplink straight into the container: received by the endpoint
    // through the datapath (the TCP ACKs of 100 kB, the UDP reply, two echo replies).
    let rx = d.endpoint_rx();
    let ep: std::net::Ipv4Addr = ep_ip.parse().unwrap();
    assert!(rx.get(&ep).copied().unwrap_or_default() >= 5, "{rx:?}");
    // And it left the same way: 100 kB of TCP, the UDP datagram, two echo requests.
    let out = d.forwarded("endpoint_to_uplink");
    assert!(out >= 5, "{out} packets forwarded to the uplink");
    // No iptables/nftables NAT was involved: the host has no such rule.
    let nft = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output();
    if let Ok(out) = nft {
        let rules = String::from_utf8_lossy(&out.stdout);
        assert!(
            !rules.contains("masquerade") && !rules.contains("snat"),
            "{rules}"
        );
    }
}

/// A connection from outside to an endpoint's own address, routed through the host (a
/// route to the network's subnet via the uplink: the multi-host recipe), gets its
/// replies from the endpoint's address — not masqueraded, or the client resets it (TCP)
/// or never recognises it (UDP). The endpoint's own connections out stay masqueraded.
#[test]
fn connections_routed_in_get_replies_from_the_endpoint_address() {
    require_root!();
    let outside = NetNs::new("mo");
    let uplink = OutsideLink::new(&outside, UPLINK_IP.parse().unwrap(), OUTSIDE);
    let up = uplink.name.clone();
    let d = Daemon::start();
    let subnet = "10.229.0.0/24";
    let net = d.network_with_uplink("mr", subnet, &up);
    outside.exec(&["ip", "route", "add", subnet, "via", UPLINK_IP]);
    let c = NetNs::new("mc");
    let ep = d.add_endpoint(&net, &c);
    let ep_ip: Ipv4Addr = ep["ip"].as_str().unwrap().parse().unwrap();

    let seen = routed_in(&outside, &c, IpAddr::V4(ep_ip), 7300);
    assert_eq!(
        seen.udp_reply_from,
        SocketAddr::from((ep_ip, 7301)),
        "UDP reply masqueraded"
    );
    // The endpoint saw the client itself.
    assert_eq!(seen.tcp_peer.ip(), OUTSIDE);
    assert_eq!(seen.udp_peer.ip(), OUTSIDE);
    // Its own connections out are still masqueraded.
    let (tx, rx) = mpsc::channel();
    let peer = outside.spawn(move || {
        let l = TcpListener::bind((OUTSIDE, 7302)).unwrap();
        tx.send(()).unwrap();
        l.accept().unwrap().1
    });
    rx.recv_timeout(TIMEOUT).unwrap();
    c.spawn(|| {
        TcpStream::connect_timeout(&SocketAddr::from((OUTSIDE, 7302)), TIMEOUT)
            .expect("connect out");
    })
    .join()
    .unwrap();
    assert_eq!(peer.join().unwrap().ip().to_string(), UPLINK_IP);
}

/// `--no-masquerade CIDR`: connections to that destination keep the endpoint's address
/// (the far side routes the network's subnet back); others are still masqueraded.
#[test]
fn exempted_destinations_see_the_endpoint_address() {
    require_root!();
    let outside = NetNs::new("mo");
    let uplink = OutsideLink::new(&outside, UPLINK_IP.parse().unwrap(), OUTSIDE);
    let d = Daemon::start();
    let subnet = "10.230.0.0/24";
    let net = netpath_tests::unique("mx");
    d.ok(&[
        "network",
        "create",
        &net,
        "--subnet",
        subnet,
        "--uplink",
        &uplink.name,
        "--no-masquerade",
        "198.51.100.0/24",
    ]);
    let shown = d.ok(&["inspect", &net]);
    assert!(shown.contains("198.51.100.0/24"), "{shown}");
    outside.exec(&["ip", "route", "add", subnet, "via", UPLINK_IP]);
    let c = NetNs::new("mc");
    let ep = d.add_endpoint(&net, &c);
    let ep_ip: Ipv4Addr = ep["ip"].as_str().unwrap().parse().unwrap();
    let (tx, rx) = mpsc::channel();
    let server = outside.spawn(move || {
        let l = TcpListener::bind((OUTSIDE, 7400)).unwrap();
        tx.send(()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        s.write_all(b"hi").unwrap();
        peer
    });
    rx.recv_timeout(TIMEOUT).unwrap();
    c.spawn(move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((OUTSIDE, 7400)), TIMEOUT)
            .expect("connect to an exempted destination");
        let mut buf = [0u8; 2];
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.read_exact(&mut buf).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(
        server.join().unwrap().ip(),
        ep_ip,
        "exempted destination saw a masqueraded source"
    );
}
