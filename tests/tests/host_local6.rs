//! Host-local access to published ports from `AF_INET6` sockets (Java's default, many
//! runtimes'), which reach IPv4 addresses v4-mapped: `::ffff:127.0.0.1` and
//! `::ffff:<host address>` pass the IPv6 socket hooks (`connect6`, `sendmsg6`,
//! `recvmsg6`, `getpeername6`), not the IPv4 ones, and must reach the endpoint as well,
//! showing the published address back:
//! - TCP to a published port and to a 127.0.0.1-only one, `getpeername` the published
//!   address;
//! - UDP `sendto`/`recvfrom` and connected UDP, the reply from the published address
//!   (an unconnected send to a v4-mapped address runs the IPv4 `sendmsg4` hook: the
//!   kernel hands it to `udp_sendmsg` before the IPv6 one would run);
//! - a native IPv6 destination (`[::1]`) on the published port is left alone: it
//!   reaches the host's own listener there.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Instant,
};

use netpath_tests::{
    Daemon, NetNs, OutsideLink,
    echo::{TIMEOUT, tcp_echo, tcp_server, udp_echo, udp_server},
    require_root,
};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 19, 7, 1);
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 19, 7, 2);
const PUBLISHED: u16 = 18290;
const LOOPBACK_ONLY: u16 = 18291;

/// `ip:port` as an `AF_INET6` socket reaches it: `[::ffff:ip]:port`.
fn mapped(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip.to_ipv6_mapped(), port))
}

/// An `AF_INET6` UDP socket that also reaches IPv4 (not `IPV6_V6ONLY`).
fn udp6() -> UdpSocket {
    let u = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
    assert!(u.local_addr().unwrap().is_ipv6(), "not an AF_INET6 socket");
    u
}

#[test]
fn af_inet6_sockets_reach_published_ports_through_v4_mapped_addresses() {
    require_root!();
    let outside = NetNs::new("l6o");
    let uplink = OutsideLink::new(&outside, UPLINK, OUTSIDE);
    let d = Daemon::start();
    let net = d.network_with_uplink("l6n", "10.233.0.0/24", &uplink.name);
    let ns = NetNs::new("l6b");
    let ep = d.add_endpoint(&net, &ns);
    let (id, ip) = (
        ep["id"].as_str().unwrap().to_owned(),
        ep["ip"].as_str().unwrap().parse::<Ipv4Addr>().unwrap(),
    );
    d.publish(
        &id,
        &[
            format!("{PUBLISHED}:80"),
            format!("{PUBLISHED}:53/udp"),
            format!("127.0.0.1:{LOOPBACK_ONLY}:81"),
        ],
    );

    // TCP over v4-mapped loopback and the v4-mapped host address.
    let server = tcp_server(&ns, ip, 80, 2);
    let server81 = tcp_server(&ns, ip, 81, 1);
    for to in [
        mapped(Ipv4Addr::LOCALHOST, PUBLISHED),
        mapped(UPLINK, PUBLISHED),
        mapped(Ipv4Addr::LOCALHOST, LOOPBACK_ONLY),
    ] {
        let (local, peer) = tcp_echo(to).unwrap_or_else(|e| panic!("host → {to}: {e}"));
        assert!(local.is_ipv6(), "the client socket was not AF_INET6");
        assert_eq!(peer, to, "getpeername must show the published address");
    }
    server.join().unwrap();
    server81.join().unwrap();

    // UDP: unconnected (sendto / recvfrom) to both addresses, then connected.
    let udp = udp_server(&ns, ip, 53, 3);
    for to in [
        mapped(Ipv4Addr::LOCALHOST, PUBLISHED),
        mapped(UPLINK, PUBLISHED),
    ] {
        let from = udp_echo(&udp6(), to).unwrap_or_else(|e| panic!("host → UDP {to}: {e}"));
        assert_eq!(
            from, to,
            "the UDP reply must come from the published address"
        );
    }
    let to = mapped(Ipv4Addr::LOCALHOST, PUBLISHED);
    let connected = udp6();
    connected.connect(to).unwrap();
    assert_eq!(connected.peer_addr().unwrap(), to, "connected UDP peer");
    connected.send(b"q?").unwrap();
    let mut buf = [0u8; 8];
    let (n, from) = connected
        .recv_from(&mut buf)
        .expect("reply on connected UDP");
    assert_eq!((&buf[..n], from), (&b"q?"[..], to));
    udp.join().unwrap();

    // Native IPv6 on the published port: not translated, the host's own listener there
    // takes the connection.
    let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, PUBLISHED)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let to = SocketAddr::from((Ipv6Addr::LOCALHOST, PUBLISHED));
    let c = TcpStream::connect_timeout(&to, TIMEOUT).expect("connect [::1]");
    assert_eq!(c.peer_addr().unwrap(), to);
    let start = Instant::now();
    let accepted = loop {
        match listener.accept() {
            Ok((_, peer)) => break peer,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < TIMEOUT => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("the [::1] listener got no connection: {e}"),
        }
    };
    assert_eq!(accepted, c.local_addr().unwrap());
}
