//! Traffic out through a network's uplink to a server in "the outside" namespace, for
//! the masquerade tests of either family: a TCP upload and a UDP echo from a container,
//! reporting the peers the server saw.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::Duration,
};

use crate::NetNs;

/// How long a step may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The peers the outside server saw.
pub struct Seen {
    /// The TCP client's address, as accepted.
    pub tcp: SocketAddr,
    /// The bytes received over TCP.
    pub tcp_bytes: usize,
    /// The UDP client's address.
    pub udp: SocketAddr,
}

/// A container in `container` sends 100 kB over TCP to `server`:`port` and a UDP
/// datagram to `server`:`port + 1` (which the server echoes, checked back in the
/// container: the reply found its way through the reverse translation); the server runs
/// in `outside`.
pub fn tcp_and_udp_out(outside: &NetNs, container: &NetNs, server: IpAddr, port: u16) -> Seen {
    let (tx, rx) = mpsc::channel();
    let srv = outside.spawn(move || {
        let (l, u) = (
            TcpListener::bind((server, port)).unwrap(),
            UdpSocket::bind((server, port + 1)).unwrap(),
        );
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        tx.send(()).unwrap();
        let (tcp, tcp_bytes) = upload(&l);
        let mut buf = [0u8; 1500];
        let (n, udp) = u.recv_from(&mut buf).unwrap();
        u.send_to(&buf[..n], udp).unwrap();
        Seen {
            tcp,
            tcp_bytes,
            udp,
        }
    });
    rx.recv_timeout(TIMEOUT).unwrap();
    container
        .spawn(move || {
            let to = SocketAddr::new(server, port);
            let mut s = TcpStream::connect_timeout(&to, TIMEOUT).expect("connect out");
            s.write_all(&[5u8; 100_000]).unwrap();
            drop(s);
            let any: IpAddr = match server {
                IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            };
            let u = UdpSocket::bind((any, 0)).unwrap();
            u.set_read_timeout(Some(TIMEOUT)).unwrap();
            u.send_to(b"hello", (server, port + 1)).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = u
                .recv_from(&mut buf)
                .expect("udp reply through the reverse translation");
            assert_eq!(&buf[..n], b"hello");
            assert_eq!(from, SocketAddr::new(server, port + 1));
        })
        .join()
        .expect("container client");
    srv.join().expect("outside server")
}

/// Accepts one connection on `l` and reads it to its end: the peer and the bytes.
fn upload(l: &TcpListener) -> (SocketAddr, usize) {
    let (mut conn, peer) = l.accept().unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    (peer, got.len())
}

/// The peers each side saw of connections routed in from the outside.
pub struct RoutedIn {
    /// The source of the UDP echo, as the outside client received it.
    pub udp_reply_from: SocketAddr,
    /// The TCP and UDP clients' addresses, as the container's servers saw them.
    pub tcp_peer: SocketAddr,
    pub udp_peer: SocketAddr,
}

/// A client in `outside` connects to `endpoint`:`port` (TCP, echoed) and sends a datagram
/// to `endpoint`:`port + 1` (UDP, echoed) — the endpoint's own address, routed in through
/// the host — to servers in `container`. The TCP echo must come back (a masqueraded
/// SYN-ACK would be reset) and the UDP reply must arrive.
pub fn routed_in(outside: &NetNs, container: &NetNs, endpoint: IpAddr, port: u16) -> RoutedIn {
    let any: IpAddr = match endpoint {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let (tx, rx) = mpsc::channel();
    let server = container.spawn(move || {
        let l = TcpListener::bind((any, port)).unwrap();
        let u = UdpSocket::bind((any, port + 1)).unwrap();
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        tx.send(()).unwrap();
        let (mut conn, tcp_peer) = l.accept().unwrap();
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).unwrap();
        conn.write_all(&buf[..n]).unwrap();
        let (n, udp_peer) = u.recv_from(&mut buf).unwrap();
        u.send_to(&buf[..n], udp_peer).unwrap();
        (tcp_peer, udp_peer)
    });
    rx.recv_timeout(TIMEOUT).unwrap();
    let udp_reply_from = outside
        .spawn(move || {
            let to = SocketAddr::new(endpoint, port);
            let mut s = TcpStream::connect_timeout(&to, TIMEOUT)
                .expect("TCP connection routed in (a masqueraded SYN-ACK is reset)");
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).expect("TCP echo");
            assert_eq!(&buf, b"ping");
            let u = UdpSocket::bind((any, 0)).unwrap();
            u.set_read_timeout(Some(TIMEOUT)).unwrap();
            u.send_to(b"hello", (endpoint, port + 1)).unwrap();
            let mut ubuf = [0u8; 16];
            let (n, from) = u.recv_from(&mut ubuf).expect("UDP reply");
            assert_eq!(&ubuf[..n], b"hello");
            from
        })
        .join()
        .expect("outside client");
    let (tcp_peer, udp_peer) = server.join().expect("container server");
    RoutedIn {
        udp_reply_from,
        tcp_peer,
        udp_peer,
    }
}

/// The peer of the first TCP connection a server on `at` in `outside` accepts while
/// `client` runs (within `within`); panics if none comes.
pub fn first_peer(
    outside: &NetNs,
    at: SocketAddr,
    within: Duration,
    client: impl FnOnce(),
) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    let server = outside.spawn(move || {
        let l = TcpListener::bind(at).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let start = std::time::Instant::now();
        loop {
            match l.accept() {
                Ok((_, peer)) => return peer,
                Err(_) if start.elapsed() < within => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("no connection to {at} within {within:?}: {e}"),
            }
        }
    });
    rx.recv_timeout(within).unwrap();
    client();
    server.join().unwrap()
}
