//! Fragments with real traffic (issue #15): a container of a dual-stack network asks a
//! server beyond the uplink ("the outside" namespace) over UDP, and the server answers
//! with 4000 bytes — on the 1500-byte links, a datagram that arrives at the uplink in
//! three fragments (IPv4: the server fragments it, DF unset; IPv6: the server fragments
//! it itself, as IPv6 routers never do). The reply to the masqueraded flow must reach
//! the container whole, byte for byte, over both families; the uplink's ingress saw the
//! fragments, the fragment maps recorded the datagrams translated to the container's
//! addresses, and no fragment was dropped as unseen.

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

/// Packets of `class` the uplink's ingress counted.
fn ingress_packets(d: &Daemon, class: &str) -> u64 {
    let stats = d.stats();
    stats["classes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["hook"] == "uplink_ingress" && c["class"] == class)
        .map(|c| c["packets"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_fragmented_udp_reply_to_a_masqueraded_flow_arrives_whole_over_both_families() {
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

    let (got, peer) = ask(&outside, &c, IpAddr::V4(OUTSIDE4), 7619);
    assert_eq!(peer.ip(), IpAddr::V4(UPLINK4), "request not masqueraded");
    assert_eq!(got.len(), ANSWER, "IPv4 answer's length");
    assert!(got == answer(), "IPv4 answer's bytes");
    let (got, peer) = ask(&outside, &c, IpAddr::V6(OUTSIDE6), 7620);
    assert_eq!(peer.ip(), IpAddr::V6(UPLINK6), "request not NAT66ed");
    assert_eq!(got.len(), ANSWER, "IPv6 answer's length");
    assert!(got == answer(), "IPv6 answer's bytes");

    // The datapath's doing: fragments on the uplink's ingress, each datagram recorded
    // as translated to the container, none dropped as unseen.
    assert!(ingress_packets(&d, "ipv4_fragment") >= 3);
    assert!(ingress_packets(&d, "ipv6_fragment") >= 3);
    let translated4 = records::<[u8; 4]>(&d, FRAG_MAP).into_iter().any(|(k, v)| {
        (k.src, k.dst, k.proto) == (OUTSIDE4.octets(), UPLINK4.octets(), IPPROTO_UDP)
            && (v.src, v.dst) == (OUTSIDE4.octets(), ep4.octets())
    });
    assert!(translated4, "no IPv4 datagram recorded as translated");
    let translated6 = records::<[u8; 16]>(&d, FRAG6_MAP)
        .into_iter()
        .any(|(k, v)| {
            (k.src, k.dst, k.proto) == (OUTSIDE6.octets(), UPLINK6.octets(), IPPROTO_UDP)
                && (v.src, v.dst) == (OUTSIDE6.octets(), ep6.octets())
        });
    assert!(translated6, "no IPv6 datagram recorded as translated");
    assert_eq!(d.drops("fragment_unseen"), 0);
}
