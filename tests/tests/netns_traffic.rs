//! Real traffic between two namespaces through the attached programs: XDP (driver mode)
//! on one veth end, tc ingress (tcx) on the other; counters must match what was sent.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::Duration,
};

use netpath::datapath::Datapath;
use netpath_common::{maps::Hook, packet::PacketClass};
use netpath_tests::{NetNs, TempPins, require_root, unique, veth_between};

const A_IP: &str = "10.201.0.1";
const B_IP: &str = "10.201.0.2";
const PINGS: u64 = 20;
const PING_PAYLOAD: u64 = 100;
const DATAGRAMS: u64 = 50;
const DATAGRAM_PAYLOAD: usize = 200;
const TCP_BYTES: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Ethernet + IPv4 + 8-byte ICMP/UDP header.
const fn frame_len(payload: u64) -> u64 {
    14 + 20 + 8 + payload
}

#[test]
fn counters_match_real_traffic_between_namespaces() {
    require_root!();
    let a = NetNs::new("ta");
    let b = NetNs::new("tb");
    let (a_if, b_if) = (unique("va"), unique("vb"));
    veth_between(&a, &a_if, A_IP, &b, &b_if, B_IP);
    let pins = TempPins::new();
    let mut dp = Datapath::open(&pins.path, false).expect("load datapath");

    let b_idx = b.ifindex(&b_if);
    let a_idx = a.ifindex(&a_if);
    b.enter(|| dp.attach_xdp(&b_if, b_idx, true))
        .expect("attach XDP (driver mode) in B");
    a.enter(|| dp.attach_tc_ingress(&a_if, a_idx))
        .expect("attach tc ingress in A");

    // ICMP: PINGS echo requests A→B (seen by XDP on B's end), as many replies B→A
    // (seen by tc on A's end).
    a.exec(&[
        "ping",
        "-q",
        "-c",
        &PINGS.to_string(),
        "-i",
        "0.01",
        "-W",
        "1",
        "-s",
        &PING_PAYLOAD.to_string(),
        B_IP,
    ]);

    // UDP: B echoes DATAGRAMS datagrams back to A.
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = b.spawn(move || {
        let sock = UdpSocket::bind((B_IP, 9000)).expect("bind udp");
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..DATAGRAMS {
            let (n, peer) = sock.recv_from(&mut buf).expect("udp server recv");
            sock.send_to(&buf[..n], peer).expect("udp server send");
        }
    });
    ready_rx.recv_timeout(TIMEOUT).expect("udp server ready");
    let client = a.spawn(|| {
        let sock = UdpSocket::bind((A_IP, 0)).expect("bind udp client");
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let payload = [0x5a; DATAGRAM_PAYLOAD];
        let mut buf = [0u8; 2048];
        for _ in 0..DATAGRAMS {
            // One in flight at a time: nothing is lost to socket buffers.
            sock.send_to(&payload, (B_IP, 9000)).expect("udp send");
            let n = sock.recv(&mut buf).expect("udp echo");
            assert_eq!(n, DATAGRAM_PAYLOAD);
        }
    });
    client.join().expect("udp client");
    server.join().expect("udp server");

    // TCP: 1 MiB A→B.
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = b.spawn(move || {
        let listener = TcpListener::bind((B_IP, 9001)).expect("bind tcp");
        ready_tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("tcp read");
        got.len()
    });
    ready_rx.recv_timeout(TIMEOUT).expect("tcp server ready");
    a.spawn(|| {
        let mut conn = TcpStream::connect_timeout(
            &(B_IP.parse::<std::net::IpAddr>().unwrap(), 9001).into(),
            TIMEOUT,
        )
        .expect("tcp connect");
        conn.set_write_timeout(Some(TIMEOUT)).unwrap();
        conn.write_all(&vec![0xa5; TCP_BYTES]).expect("tcp write");
    })
    .join()
    .expect("tcp client");
    assert_eq!(server.join().expect("tcp server"), TCP_BYTES);

    let c = |hook, class| dp.counter(hook, class).expect("read counter");
    // Exact: every ICMP and UDP frame was seen once, at its full length, by both
    // attached programs.
    for hook in [Hook::Xdp, Hook::TcIngress] {
        let icmp = c(hook, PacketClass::Ipv4Icmp);
        assert_eq!(icmp.packets, PINGS, "{hook:?} icmp packets");
        assert_eq!(
            icmp.bytes,
            PINGS * frame_len(PING_PAYLOAD),
            "{hook:?} icmp bytes"
        );
        let udp = c(hook, PacketClass::Ipv4Udp);
        assert_eq!(udp.packets, DATAGRAMS, "{hook:?} udp packets");
        assert_eq!(
            udp.bytes,
            DATAGRAMS * frame_len(DATAGRAM_PAYLOAD as u64),
            "{hook:?} udp bytes"
        );
        assert!(
            c(hook, PacketClass::Arp).packets >= 1,
            "{hook:?} saw no ARP"
        );
        for class in [
            PacketClass::Ipv4Other,
            PacketClass::Ipv4Fragment,
            PacketClass::MalformedIpv4,
            PacketClass::TruncatedL4,
            PacketClass::Ipv6Tcp,
            PacketClass::Ipv6Udp,
            PacketClass::Ipv6Icmp,
            PacketClass::Ipv6Other,
            PacketClass::Ipv6Fragment,
            PacketClass::Ipv6Unparsed,
        ] {
            assert_eq!(c(hook, class).packets, 0, "{hook:?} {class:?}");
        }
    }
    // TCP: B's end received at least the payload plus headers; A's end saw the ACKs.
    let xdp_tcp = c(Hook::Xdp, PacketClass::Ipv4Tcp);
    assert!(
        xdp_tcp.bytes > TCP_BYTES as u64,
        "xdp tcp bytes {xdp_tcp:?}"
    );
    assert!(c(Hook::TcIngress, PacketClass::Ipv4Tcp).packets > 0);
    eprintln!(
        "xdp: icmp {:?} udp {:?} tcp {:?}; tc: tcp {:?}",
        c(Hook::Xdp, PacketClass::Ipv4Icmp),
        c(Hook::Xdp, PacketClass::Ipv4Udp),
        xdp_tcp,
        c(Hook::TcIngress, PacketClass::Ipv4Tcp)
    );
}
