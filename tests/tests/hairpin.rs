//! Hairpin and host-local access to published ports, with real traffic:
//! - an endpoint reaches a port published by another endpoint on the host's uplink
//!   address and on its network's gateway address, and the server sees the client's own
//!   address;
//! - an endpoint reaches its own published port through the host address;
//! - an endpoint of another network reaches it too (a published port is public);
//! - UDP hairpin replies come from the published address;
//! - traffic to the same port on an address that is not the host's is not hijacked;
//! - a process on the host reaches the published port on 127.0.0.1 and on the uplink
//!   address without any proxy (cgroup socket hooks), including a 127.0.0.1-only publish.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};

use netpath_tests::{
    Daemon, NetNs, OutsideLink,
    echo::{tcp_echo, tcp_server, udp_echo, udp_server},
    require_root,
};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 31);
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 32);
const PUBLISHED: u16 = 18180;
const LOOPBACK_ONLY: u16 = 18181;

fn endpoint(d: &Daemon, net: &str, ns: &NetNs) -> (String, Ipv4Addr) {
    let v = d.add_endpoint(net, ns);
    (
        v["id"].as_str().unwrap().to_owned(),
        v["ip"].as_str().unwrap().parse().unwrap(),
    )
}

#[test]
fn hairpin_and_host_local_reach_published_ports() {
    require_root!();
    // The uplink: a veth to a namespace standing for "outside".
    let outside = NetNs::new("ho");
    let uplink = OutsideLink::new(&outside, UPLINK, OUTSIDE);
    let up = uplink.name.clone();

    let d = Daemon::start();
    let net = d.network_with_uplink("hn", "10.231.0.0/24", &up);
    let other = d.network_with_uplink("hm", "10.232.0.0/24", &up);
    let gateway = Ipv4Addr::new(10, 231, 0, 1);
    let (a_ns, b_ns, c_ns) = (NetNs::new("ha"), NetNs::new("hb"), NetNs::new("hc"));
    let (_a, a_ip) = endpoint(&d, &net, &a_ns);
    let (b, b_ip) = endpoint(&d, &net, &b_ns);
    let (_c, c_ip) = endpoint(&d, &other, &c_ns);
    d.ok(&[
        "port",
        "publish",
        &b,
        "-p",
        &format!("{PUBLISHED}:80"),
        "-p",
        &format!("{PUBLISHED}:53/udp"),
        "-p",
        &format!("127.0.0.1:{LOOPBACK_ONLY}:81"),
    ]);
    let published = SocketAddr::from((UPLINK, PUBLISHED));

    // TCP: A via the uplink address, A via the gateway address, B itself, C from the
    // other network; then the host (127.0.0.1 and the uplink address).
    let server = tcp_server(&b_ns, b_ip, 80, 6);
    let (_, a_seen) = a_ns
        .spawn(move || tcp_echo(published))
        .join()
        .unwrap()
        .expect("A → uplink address");
    assert_eq!(a_seen, published, "A must see the published address");
    a_ns.spawn(move || tcp_echo(SocketAddr::from((gateway, PUBLISHED))))
        .join()
        .unwrap()
        .expect("A → gateway address");
    let (_, b_seen) = b_ns
        .spawn(move || tcp_echo(published))
        .join()
        .unwrap()
        .expect("B → its own published port");
    assert_eq!(b_seen, published);
    c_ns.spawn(move || tcp_echo(published))
        .join()
        .unwrap()
        .expect("C (other network) → published port");
    let (_, host_seen) = tcp_echo(SocketAddr::from((Ipv4Addr::LOCALHOST, PUBLISHED)))
        .expect("host → 127.0.0.1:published");
    assert_eq!(
        host_seen,
        SocketAddr::from((Ipv4Addr::LOCALHOST, PUBLISHED)),
        "the host process must see the address it connected to"
    );
    tcp_echo(published).expect("host → uplink address:published");
    let peers = server.join().unwrap();
    let ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
    assert_eq!(ips[0], IpAddr::V4(a_ip), "server must see A's own address");
    assert_eq!(ips[1], IpAddr::V4(a_ip));
    // B reaching itself through the host address looks like the host to B.
    assert_eq!(ips[2], IpAddr::V4(UPLINK));
    assert_eq!(ips[3], IpAddr::V4(c_ip), "server must see C's own address");

    // The 127.0.0.1-only publish: the host reaches it, another namespace does not.
    let server81 = tcp_server(&b_ns, b_ip, 81, 1);
    tcp_echo(SocketAddr::from((Ipv4Addr::LOCALHOST, LOOPBACK_ONLY)))
        .expect("host → 127.0.0.1-only publish");
    // Whether a TCP connection from `ns` to the 127.0.0.1-only port on the uplink address
    // succeeds.
    let reaches = |ns: &NetNs| {
        ns.spawn(|| {
            TcpStream::connect_timeout(
                &SocketAddr::from((UPLINK, LOOPBACK_ONLY)),
                std::time::Duration::from_millis(800),
            )
            .is_ok()
        })
        .join()
        .unwrap()
    };
    assert!(
        !reaches(&outside),
        "127.0.0.1-only publish reached from outside"
    );
    let from_a = reaches(&a_ns);
    assert!(!from_a, "127.0.0.1-only publish reached from an endpoint");
    server81.join().unwrap();

    // UDP hairpin: the reply comes from the published address.
    let udp = udp_server(&b_ns, b_ip, 53, 2);
    let udp_client = move || {
        let u = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        udp_echo(&u, published)
    };
    let from = a_ns.spawn(udp_client).join().unwrap().expect("A → UDP");
    assert_eq!(
        from, published,
        "UDP reply must come from the published address"
    );
    // From the host, unconnected UDP (sendmsg/recvmsg hooks).
    let from = udp_client().expect("host → UDP");
    assert_eq!(
        from, published,
        "host UDP reply must come from the published address"
    );
    let udp_peers = udp.join().unwrap();
    assert_eq!(udp_peers[0].ip(), IpAddr::V4(a_ip));

    // Not a host address: the same port elsewhere is not hijacked.
    let outside_server = tcp_server(&outside, OUTSIDE, PUBLISHED, 1);
    a_ns.spawn(|| tcp_echo(SocketAddr::from((OUTSIDE, PUBLISHED))))
        .join()
        .unwrap()
        .expect("A → outside server on the published port number");
    outside_server.join().unwrap();
}
