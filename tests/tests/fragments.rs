//! Fragments with real traffic (issue #15): a container of a dual-stack network asks a
//! server beyond the uplink ("the outside" namespace) over UDP, and the server answers
//! with 4000 bytes — on the 1500-byte links, a datagram that arrives at the uplink in
//! three fragments (IPv4: the server fragments it, DF unset; IPv6: the server fragments
//! it itself, as IPv6 routers never do). The reply to the masqueraded flow must reach
//! the container whole, byte for byte, over both families; the uplink's ingress saw the
//! fragments, the fragment maps recorded the datagrams translated to the container's
//! addresses, and no fragment was dropped as unseen. And the other way: the container
//! sends 4000 bytes (fragmented by its own stack), which the server gets whole from the
//! uplink's address.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::mpsc,
    time::Duration,
};

use aya::maps::{HashMap, Map, MapData};
use netpath_common::{
    frag::{FragKeyOf, FragValueOf},
    maps::{FRAG_MAP, FRAG6_MAP},
    nat::Address,
    packet::IPPROTO_UDP,
};
use netpath_tests::{Daemon, NetNs, OutsideLink, require_root};

const OUTSIDE4: Ipv4Addr = Ipv4Addr::new(198, 19, 219, 1);
const UPLINK4: Ipv4Addr = Ipv4Addr::new(198, 19, 219, 2);
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x5f, 0, 0, 0, 0, 1);
const UPLINK6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x5f, 0, 0, 0, 0, 2);
/// The answer's size: three fragments on a 1500-byte link.
const ANSWER: usize = 4000;
const TIMEOUT: Duration = Duration::from_secs(5);

/// The answer: a pattern that no reordering or loss of a fragment leaves intact.
fn answer() -> Vec<u8> {
    (0..ANSWER).map(|i| (i * 31 + i / 256) as u8).collect()
}

/// The server in `outside` answers one request on `server`:`port` with [`answer`]; the
/// container in `container` asks and returns what it got and from whom.
fn ask(outside: &NetNs, container: &NetNs, server: IpAddr, port: u16) -> (Vec<u8>, SocketAddr) {
    let (tx, rx) = mpsc::channel();
    let srv = outside.spawn(move || {
        let u = UdpSocket::bind((server, port)).unwrap();
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        let (n, peer) = u.recv_from(&mut buf).expect("the request");
        assert_eq!(&buf[..n], b"big?");
        u.send_to(&answer(), peer).unwrap();
        peer
    });
    rx.recv_timeout(TIMEOUT).unwrap();
    let got = container
        .spawn(move || {
            let any: IpAddr = match server {
                IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
            };
            let u = UdpSocket::bind((any, 0)).unwrap();
            u.set_read_timeout(Some(TIMEOUT)).unwrap();
            u.send_to(b"big?", (server, port)).unwrap();
            let mut buf = vec![0u8; 65536];
            let (n, from) = u
                .recv_from(&mut buf)
                .expect("the fragmented answer, reassembled in the container");
            assert_eq!(from, SocketAddr::new(server, port));
            buf.truncate(n);
            buf
        })
        .join()
        .expect("container client");
    (got, srv.join().expect("outside server"))
}

/// The container in `container` sends [`answer`] (fragmented by its own stack) to the
/// server in `outside` on `server`:`port`: what the server got and from whom.
fn send(outside: &NetNs, container: &NetNs, server: IpAddr, port: u16) -> (Vec<u8>, SocketAddr) {
    let (tx, rx) = mpsc::channel();
    let srv = outside.spawn(move || {
        let u = UdpSocket::bind((server, port)).unwrap();
        u.set_read_timeout(Some(TIMEOUT)).unwrap();
        tx.send(()).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, peer) = u
            .recv_from(&mut buf)
            .expect("the fragmented send, reassembled outside");
        buf.truncate(n);
        (buf, peer)
    });
    rx.recv_timeout(TIMEOUT).unwrap();
    container
        .spawn(move || {
            let any: IpAddr = match server {
                IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
            };
            let u = UdpSocket::bind((any, 0)).unwrap();
            u.send_to(&answer(), (server, port)).unwrap();
        })
        .join()
        .expect("container sender");
    srv.join().expect("outside server")
}

/// The records of the pinned fragment map `name`.
fn records<A: Address>(d: &Daemon, name: &str) -> Vec<(FragKeyOf<A>, FragValueOf<A>)>
where
    FragKeyOf<A>: aya::Pod,
    FragValueOf<A>: aya::Pod,
{
    let data = MapData::from_pin(d.paths.bpffs.join("maps").join(name)).expect(name);
    let map: HashMap<_, FragKeyOf<A>, FragValueOf<A>> =
        HashMap::try_from(Map::from_map_data(data).unwrap()).unwrap();
    map.iter().map(|e| e.unwrap()).collect()
}

/// `records` hold the answer from `outside` to `uplink`, its later fragments sent on to
/// `ep`, and the container's send from `ep` to `outside`, leaving from `uplink`.
fn translated_both_ways<A: Address>(
    records: &[(FragKeyOf<A>, FragValueOf<A>)],
    outside: A,
    uplink: A,
    ep: A,
) {
    let recorded = |key: (A, A), value: (A, A)| {
        records.iter().any(|(k, v)| {
            (k.src, k.dst, k.proto) == (key.0, key.1, IPPROTO_UDP) && (v.src, v.dst) == value
        })
    };
    assert!(
        recorded((outside, uplink), (outside, ep)),
        "answer: {records:?}"
    );
    assert!(
        recorded((ep, outside), (uplink, outside)),
        "send: {records:?}"
    );
}

/// Packets of `class` the uplink's `hook` counted.
fn packets(d: &Daemon, hook: &str, class: &str) -> u64 {
    let stats = d.stats();
    stats["classes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["hook"] == hook && c["class"] == class)
        .map(|c| c["packets"].as_u64().unwrap())
        .sum()
}

#[test]
fn fragmented_udp_to_and_from_a_masqueraded_container_arrives_whole_over_both_families() {
    require_root!();
    let outside = NetNs::with_ipv6("fgo");
    let uplink = OutsideLink::new(&outside, UPLINK4, OUTSIDE4);
    uplink.add_ipv6(&outside, UPLINK6, OUTSIDE6);
    let d = Daemon::start();
    let net = netpath_tests::unique("fg");
    d.ok(&[
        "network",
        "create",
        &net,
        "--subnet",
        "10.219.0.0/24",
        "--subnet",
        "fd5f::/64",
        "--uplink",
        &uplink.name,
    ]);
    let c = NetNs::with_ipv6("fgc");
    let ep = d.add_endpoint(&net, &c);
    let ep4: Ipv4Addr = ep["ip"].as_str().expect("ip").parse().unwrap();
    let ep6: Ipv6Addr = ep["ip6"].as_str().expect("ip6").parse().unwrap();

    let families = [
        (IpAddr::V4(OUTSIDE4), IpAddr::V4(UPLINK4), 7619),
        (IpAddr::V6(OUTSIDE6), IpAddr::V6(UPLINK6), 7621),
    ];
    for (server, uplink, port) in families {
        // The answer, fragmented by the server, reaches the container whole.
        let (got, peer) = ask(&outside, &c, server, port);
        assert_eq!(peer.ip(), uplink, "request not masqueraded");
        assert!(
            got == answer(),
            "answer from {server} ({} bytes)",
            got.len()
        );
        // The other way: the container's own fragmented send leaves masqueraded, whole.
        let (got, peer) = send(&outside, &c, server, port + 1);
        assert_eq!(peer.ip(), uplink, "fragmented send not masqueraded");
        assert!(got == answer(), "send to {server} ({} bytes)", got.len());
    }

    // The datapath's doing: fragments on both of the uplink's hooks, each datagram
    // recorded with the addresses its later fragments got, none dropped as unseen.
    for hook in ["uplink_ingress", "uplink_egress"] {
        assert!(packets(&d, hook, "ipv4_fragment") >= 3, "{hook}");
        assert!(packets(&d, hook, "ipv6_fragment") >= 3, "{hook}");
    }
    let frags4 = records::<[u8; 4]>(&d, FRAG_MAP);
    translated_both_ways(&frags4, OUTSIDE4.octets(), UPLINK4.octets(), ep4.octets());
    let frags6 = records::<[u8; 16]>(&d, FRAG6_MAP);
    translated_both_ways(&frags6, OUTSIDE6.octets(), UPLINK6.octets(), ep6.octets());
    assert_eq!(d.drops("fragment_unseen"), 0);
}
