//! Real traffic between container endpoints through the fast path: TCP and UDP flow,
//! the per-endpoint counters show the fast path carried them, and the kernel path (the
//! destination's host-side veth, i.e. the bridge's forwarding) did not. Spoofed frames
//! sent from inside a container never arrive, and the drop counters rise.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket},
    sync::{Arc, mpsc},
    time::Duration,
};

use netpath::{
    control::Service,
    model::{Endpoint, EndpointCreate, Mode, NetworkCreate},
};
use netpath_common::maps::DropReason;
use netpath_tests::{DaemonPaths, NetNs, ResetOnDrop, raw::send_raw, require_root, unique};

const TIMEOUT: Duration = Duration::from_secs(5);

fn host_tx_packets(ifname: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/statistics/tx_packets"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// What a test holds: cleanup guards (reset, then the private temp dir), the service,
/// the two namespaces and their endpoints.
type Fixture = (
    (ResetOnDrop, DaemonPaths),
    Arc<Service>,
    [NetNs; 2],
    [Endpoint; 2],
);

async fn two_endpoints(mode: Mode, subnet: &str) -> Fixture {
    let d = DaemonPaths::new();
    let paths = d.to_paths();
    let t = (ResetOnDrop(paths.clone()), d);
    let svc = Arc::new(
        Service::open(paths, false, netpath::control::EPHEMERAL_PORTS)
            .await
            .expect("open service"),
    );
    let name = unique("fp");
    svc.create_network(NetworkCreate {
        name: name.clone(),
        subnet: Some(subnet.parse().unwrap()),
        mode,
        gateway: None,
        subnet6: None,
        gateway6: None,
        uplink: None,
        mtu: None,
        no_masquerade: Vec::new(),
        policy: Default::default(),
        profile: None,
    })
    .await
    .expect("network");
    let ns = [NetNs::new("fa"), NetNs::new("fb")];
    let mut eps = Vec::new();
    for n in &ns {
        eps.push(
            svc.add_endpoint(EndpointCreate {
                network: name.clone(),
                netns: Some(n.path()),
                pid: None,
                ip: None,
                ip6: None,
                ifname: None,
                mac: None,
                container_id: None,
                peer: None,
            })
            .await
            .expect("endpoint"),
        );
    }
    let eps: [Endpoint; 2] = eps.try_into().unwrap();
    (t, svc, ns, eps)
}

/// An endpoint's IPv4 address (these networks are IPv4-only).
fn v4(ep: &Endpoint) -> Ipv4Addr {
    ep.ip.expect("an IPv4 address")
}

fn tcp_and_udp(ns: &[NetNs; 2], b_ip: Ipv4Addr, bytes: usize, datagrams: usize) {
    let (tx, rx) = mpsc::channel();
    let server = ns[1].spawn(move || {
        let l = TcpListener::bind((b_ip, 7001)).unwrap();
        let u = UdpSocket::bind((b_ip, 7002)).unwrap();
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        tx.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..datagrams {
            let (n, peer) = u.recv_from(&mut buf).expect("udp recv");
            u.send_to(&buf[..n], peer).unwrap();
        }
        got.len()
    });
    rx.recv_timeout(TIMEOUT).unwrap();
    ns[0]
        .spawn(move || {
            let mut c = TcpStream::connect_timeout(&(b_ip, 7001).into(), TIMEOUT).expect("connect");
            c.write_all(&vec![7u8; bytes]).unwrap();
            drop(c);
            let u = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            u.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut buf = [0u8; 2048];
            for _ in 0..datagrams {
                u.send_to(&[9u8; 300], (b_ip, 7002)).unwrap();
                assert_eq!(u.recv(&mut buf).expect("udp echo"), 300);
            }
        })
        .join()
        .expect("client");
    assert_eq!(server.join().expect("server"), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_to_container_tcp_and_udp_take_the_fast_path() {
    require_root!();
    for (mode, subnet) in [
        (Mode::Bridge, "10.222.0.0/24"),
        (Mode::Routed, "10.223.0.0/24"),
    ] {
        let (_t, svc, ns, eps) = two_endpoints(mode, subnet).await;
        // Warm up neighbors (ARP goes through the kernel path).
        ns[0].exec(&["ping", "-c", "1", "-W", "2", &v4(&eps[1]).to_string()]);
        let b_host_tx = host_tx_packets(&eps[1].host_ifname);
        let a_host_tx = host_tx_packets(&eps[0].host_ifname);
        let before = svc.endpoint_stats().await.unwrap();
        tcp_and_udp(&ns, v4(&eps[1]), 4 << 20, 100);
        let after = svc.endpoint_stats().await.unwrap();
        let find = |v: &[netpath::datapath::EndpointStat], ip| {
            v.iter().find(|e| e.ip == ip).cloned().unwrap()
        };
        let (b0, b1) = (find(&before, eps[1].ip), find(&after, eps[1].ip));
        let (a0, a1) = (find(&before, eps[0].ip), find(&after, eps[0].ip));
        eprintln!("{mode:?}: a {a0:?} → {a1:?}; b {b0:?} → {b1:?}");
        // b received ≥ 4 MiB + 100 datagrams through the fast path, a the echoes + ACKs.
        assert!(
            b1.rx_bytes - b0.rx_bytes > 4 << 20,
            "{mode:?}: b rx via fast path"
        );
        assert!(b1.rx_packets - b0.rx_packets >= 100, "{mode:?}");
        assert!(
            a1.rx_packets - a0.rx_packets >= 100,
            "{mode:?}: a rx via fast path"
        );
        // Everything a sent, b received via the fast path (and vice versa).
        assert_eq!(
            b1.rx_packets - b0.rx_packets,
            a1.tx_packets - a0.tx_packets,
            "{mode:?}"
        );
        // The kernel path did not carry it: the host-side veths transmitted (almost)
        // nothing toward the containers (a stray ARP/neighbor probe at most).
        let b_slow = host_tx_packets(&eps[1].host_ifname) - b_host_tx;
        let a_slow = host_tx_packets(&eps[0].host_ifname) - a_host_tx;
        assert!(
            b_slow <= 4 && a_slow <= 4,
            "{mode:?}: kernel path carried {a_slow}/{b_slow} packets"
        );
    }
}

fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
) -> Vec<u8> {
    let payload = b"spoof";
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = netpath_common::packet::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.extend_from_slice(payload);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_frames_from_a_container_never_arrive() {
    require_root!();
    let (_t, svc, ns, eps) = two_endpoints(Mode::Bridge, "10.224.0.0/24").await;
    let b_ip = v4(&eps[1]);
    let (a_mac, b_mac) = (eps[0].mac.octets(), eps[1].mac.octets());
    let (tx, rx) = mpsc::channel();
    let server = ns[1].spawn(move || {
        let u = UdpSocket::bind((b_ip, 7003)).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        tx.send(()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = u.recv_from(&mut buf) {
            got.push((buf[..n].to_vec(), peer));
        }
        got
    });
    rx.recv_timeout(TIMEOUT).unwrap();
    let drops = |r| svc_drop(&svc, r);
    let (ip0, mac0) = (drops(DropReason::SpoofedIp), drops(DropReason::SpoofedMac));
    let a_ip = v4(&eps[0]);
    ns[0]
        .spawn(move || {
            // Control: a well-formed frame arrives (proves the method works).
            send_raw("eth0", &udp_frame(b_mac, a_mac, a_ip, b_ip, 7003));
            for _ in 0..5 {
                // Forged source IP.
                send_raw(
                    "eth0",
                    &udp_frame(b_mac, a_mac, Ipv4Addr::new(10, 224, 0, 200), b_ip, 7003),
                );
                // Forged source MAC.
                send_raw(
                    "eth0",
                    &udp_frame(b_mac, [0x02, 1, 2, 3, 4, 5], a_ip, b_ip, 7003),
                );
            }
        })
        .join()
        .unwrap();
    let got = server.join().unwrap();
    assert_eq!(
        got.len(),
        1,
        "only the well-formed datagram may arrive: {got:?}"
    );
    assert_eq!(got[0].1.ip(), std::net::IpAddr::V4(a_ip));
    assert_eq!(drops(DropReason::SpoofedIp) - ip0, 5);
    assert_eq!(drops(DropReason::SpoofedMac) - mac0, 5);
}

fn svc_drop(svc: &Service, reason: DropReason) -> u64 {
    svc.drop_count(reason).unwrap()
}
