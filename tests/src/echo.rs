//! Echo servers inside a namespace and the clients that check them: what the published
//! port tests (hairpin, host-local) send through a translation and expect back intact.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

use crate::NetNs;

/// How long a server waits for its clients and a client for its answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// An echo-once TCP server on `ip:port` (either family) inside `ns` that serves `n`
/// connections and returns the peers it saw. Returns once it listens.
pub fn tcp_server(
    ns: &NetNs,
    ip: impl Into<IpAddr>,
    port: u16,
    n: usize,
) -> JoinHandle<Vec<SocketAddr>> {
    let ip: IpAddr = ip.into();
    let (tx, rx) = mpsc::channel();
    let h = ns.spawn(move || {
        let l = TcpListener::bind((ip, port)).unwrap();
        tx.send(()).unwrap();
        let mut peers = Vec::new();
        for _ in 0..n {
            let (mut c, peer) = l.accept().unwrap();
            c.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf).unwrap();
            peers.push(peer);
        }
        peers
    });
    rx.recv_timeout(TIMEOUT).expect("server did not start");
    h
}

/// Connects to `to` (an `AF_INET6` socket for an IPv6 address, v4-mapped ones too),
/// sends 5 bytes, expects them back; returns the local and remote addresses the client
/// saw.
pub fn tcp_echo(to: SocketAddr) -> Result<(SocketAddr, SocketAddr), String> {
    let mut c =
        TcpStream::connect_timeout(&to, TIMEOUT).map_err(|e| format!("connect {to}: {e}"))?;
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(b"hello").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf)
        .map_err(|e| format!("read from {to}: {e}"))?;
    if &buf != b"hello" {
        return Err(format!("{to} answered {buf:?}"));
    }
    Ok((c.local_addr().unwrap(), c.peer_addr().unwrap()))
}

/// A UDP echo server on `ip:port` (either family) inside `ns` that answers `n`
/// datagrams and returns their senders. Returns once it is bound.
pub fn udp_server(
    ns: &NetNs,
    ip: impl Into<IpAddr>,
    port: u16,
    n: usize,
) -> JoinHandle<Vec<SocketAddr>> {
    let ip: IpAddr = ip.into();
    let (tx, rx) = mpsc::channel();
    let h = ns.spawn(move || {
        let u = UdpSocket::bind((ip, port)).unwrap();
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        tx.send(()).unwrap();
        let mut peers = Vec::new();
        for _ in 0..n {
            let mut buf = [0u8; 64];
            let (len, peer) = u.recv_from(&mut buf).unwrap();
            u.send_to(&buf[..len], peer).unwrap();
            peers.push(peer);
        }
        peers
    });
    rx.recv_timeout(TIMEOUT).expect("server did not start");
    h
}

/// Sends a datagram from `socket` to `to` (unconnected: `sendto`), expects it back; returns
/// the sender `recvfrom` reported.
pub fn udp_echo(socket: &UdpSocket, to: SocketAddr) -> Result<SocketAddr, String> {
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    socket
        .send_to(b"q?", to)
        .map_err(|e| format!("send to {to}: {e}"))?;
    let mut buf = [0u8; 64];
    let (n, from) = socket
        .recv_from(&mut buf)
        .map_err(|e| format!("reply from {to}: {e}"))?;
    if &buf[..n] != b"q?" {
        return Err(format!("{to} answered {:?}", &buf[..n]));
    }
    Ok(from)
}
