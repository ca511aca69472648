//! Dual-stack networks: the IPv6 subnet's checks, IPv6 leases beside the IPv4 ones,
//! and records written before IPv6.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use super::*;
use crate::model::NetworkCreate;

fn net6(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// A bridge network on `subnet` and `subnet6`, gateways the first addresses.
fn create_dual(store: &Store, name: &str, subnet: &str, subnet6: &str) -> Result<Network> {
    let (subnet, subnet6) = (net(subnet), net6(subnet6));
    let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    let gateway6 = Ipv6Addr::from(u128::from(subnet6.network()) + 1);
    store.create_network(bridge_network(
        name,
        subnet,
        gateway,
        Some((subnet6, gateway6)),
    ))
}

fn reserve6(store: &Store, network: &str, ip6: Option<Ipv6Addr>) -> Result<Endpoint> {
    let new = NewEndpoint {
        ip6,
        ..new_ep(store, network, None)
    };
    store.reserve_endpoint(new)
}

#[test]
fn endpoints_get_the_lowest_free_address_of_each_family() {
    let (_dir, store) = fresh();
    let n = create_dual(&store, "d", "10.1.0.0/24", "fd01::/64").unwrap();
    assert_eq!(
        (n.subnet6, n.gateway6),
        (Some(net6("fd01::/64")), Some(ip6("fd01::1")))
    );
    let a = reserve6(&store, "d", None).unwrap();
    let b = reserve6(&store, "d", None).unwrap();
    assert_eq!((a.ip, a.ip6), (Some(ip("10.1.0.2")), Some(ip6("fd01::2"))));
    assert_eq!((b.ip, b.ip6), (Some(ip("10.1.0.3")), Some(ip6("fd01::3"))));
    assert_eq!(a.gateway6, Some(ip6("fd01::1")));
    // A released IPv6 lease is the next one given; a requested one is kept.
    store.release_endpoint(&a.id).unwrap();
    let c = reserve6(&store, "d", None).unwrap();
    assert_eq!(c.ip6, Some(ip6("fd01::2")));
    let d = reserve6(&store, "d", Some(ip6("fd01::beef"))).unwrap();
    assert_eq!(d.ip6, Some(ip6("fd01::beef")));
    assert_eq!(store.get_endpoint(&d.id).unwrap(), d);
}

#[test]
fn ipv6_addresses_are_checked_like_ipv4_ones() {
    let (_dir, store) = fresh();
    create_dual(&store, "d", "10.1.0.0/24", "fd01::/64").unwrap();
    create(&store, "v4", "10.2.0.0/24").unwrap();
    let taken = reserve6(&store, "d", Some(ip6("fd01::7"))).unwrap();
    let cases = [
        (
            "d",
            "fd02::2",
            "fd02::2 cannot be leased in network \"d\" (fd01::/64): it is outside the subnet",
        ),
        (
            "d",
            "fd01::",
            "fd01:: cannot be leased in network \"d\" (fd01::/64): it is the network address",
        ),
        (
            "d",
            "fd01::1",
            "fd01::1 cannot be leased in network \"d\" (fd01::/64): it is the gateway",
        ),
        ("d", "fd01::7", "fd01::7 is already leased to endpoint"),
        (
            "v4",
            "fd01::9",
            "network \"v4\" has no IPv6 subnet: it cannot lease fd01::9",
        ),
    ];
    for (network, ip, want) in cases {
        let err = reserve6(&store, network, Some(ip6(ip)))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "{ip}: {err}");
    }
    assert!(matches!(
        reserve6(&store, "d", Some(ip6("fd01::7"))),
        Err(StateError::IpInUse { endpoint, .. }) if endpoint == taken.id
    ));
    // Only the one endpoint holds a lease.
    assert_eq!(store.list_endpoints(None).unwrap(), [taken]);
}

#[test]
fn ipv6_subnets_are_checked_and_must_not_overlap() {
    let (_dir, store) = fresh();
    create_dual(&store, "a", "10.1.0.0/24", "fd01::/64").unwrap();
    let cases = [
        (
            "fd01::/80",
            "subnet fd01::/80 overlaps network \"a\" (fd01::/64)",
        ),
        (
            "fd00::/56",
            "subnet fd00::/56 cannot be used: an IPv6 subnet takes a prefix of /64 or longer",
        ),
        (
            "fd02::/124",
            "subnet fd02::/124 cannot be used: it has no room",
        ),
        (
            "fd02::1/64",
            "subnet fd02::1/64 cannot be used: it has host bits set (did you mean fd02::/64?)",
        ),
    ];
    for (i, (subnet6, want)) in cases.into_iter().enumerate() {
        let subnet = format!("10.{}.0.0/24", 10 + i);
        let err = create_dual(&store, &format!("n{i}"), &subnet, subnet6).unwrap_err();
        assert!(err.to_string().starts_with(want), "{subnet6}: {err}");
    }
    assert_eq!(store.list_networks().unwrap().len(), 1);
}

#[test]
fn the_ipv6_lease_goes_with_its_endpoint_and_network() {
    let (_dir, store) = fresh();
    create_dual(&store, "d", "10.1.0.0/24", "fd01::/64").unwrap();
    let a = reserve6(&store, "d", Some(ip6("fd01::5"))).unwrap();
    store.release_endpoint(&a.id).unwrap();
    let b = reserve6(&store, "d", Some(ip6("fd01::5"))).expect("the lease was released");
    store.remove_network("d", true).unwrap();
    create_dual(&store, "e", "10.1.0.0/24", "fd01::/64").unwrap();
    let c = reserve6(&store, "e", Some(ip6("fd01::5"))).expect("no lease outlives its network");
    assert_ne!(b.id, c.id);
}

#[test]
fn records_written_before_ipv6_load_as_ipv4_only() {
    let network = r#"{"id":1,"name":"web","subnet":"10.88.0.0/16","gateway":"10.88.0.1","mode":"bridge","uplink":"eth0","mtu":1500,"bridge":"np-web"}"#;
    let n: Network = serde_json::from_str(network).unwrap();
    assert_eq!((n.subnet6, n.gateway6), (None, None));
    let endpoint = r#"{"id":"0123456789ab","network":"web","kind":"veth","state":"ready","ip":"10.88.0.2","prefix_len":16,"mac":"02:00:00:00:00:02","gateway":"10.88.0.1","host_ifname":"np-0123456789ab","ifname":"eth0","netns":"/run/netns/x","uid":null,"gid":null,"queues":null}"#;
    let e: Endpoint = serde_json::from_str(endpoint).unwrap();
    assert_eq!((e.ip6, e.gateway6), (None, None));
    // And an IPv4-only record is written as before: no IPv6 keys.
    let text = serde_json::to_string(&n).unwrap() + &serde_json::to_string(&e).unwrap();
    for key in ["subnet6", "gateway6", "ip6"] {
        assert!(!text.contains(key), "{key} in {text}");
    }
}

#[test]
fn the_free_address_search_skips_the_gateway_and_stops_at_the_first_gap() {
    let leased = |ips: &[u128]| ips.iter().map(|&ip| Ok(ip)).collect::<Vec<_>>().into_iter();
    // (leased, first, last, gateway, the free one)
    type Case<'a> = (&'a [u128], u128, u128, u128, Option<u128>);
    let cases: [Case; 6] = [
        (&[], 1, 10, 1, Some(2)),
        (&[2, 3, 5], 1, 10, 1, Some(4)),
        (&[1, 2, 3], 1, 3, 9, None),
        (&[1, 3], 1, 3, 2, None),
        (&[], u128::MAX, u128::MAX, u128::MAX, None),
        (
            &[u128::MAX - 1],
            u128::MAX - 1,
            u128::MAX,
            0,
            Some(u128::MAX),
        ),
    ];
    for (taken, first, last, gateway, want) in cases {
        let got = lowest_free(leased(taken), first, last, gateway).unwrap();
        assert_eq!(
            got, want,
            "{taken:?} in {first}..={last}, gateway {gateway}"
        );
    }
}

#[test]
fn ipv4_only_requests_read_as_before_to_an_older_daemon() {
    let req = NetworkCreate {
        name: "web".into(),
        subnet: Some(net("10.88.0.0/16")),
        ..Default::default()
    };
    let text = serde_json::to_string(&req).unwrap();
    assert!(
        !text.contains("subnet6") && !text.contains("gateway6"),
        "{text}"
    );
    let dual = NetworkCreate {
        subnet6: Some(net6("fd88::/64")),
        ..req
    };
    let text = serde_json::to_string(&dual).unwrap();
    assert!(text.contains(r#""subnet6":"fd88::/64""#), "{text}");
    assert_eq!(serde_json::from_str::<NetworkCreate>(&text).unwrap(), dual);
    let ep = crate::model::EndpointCreate {
        network: "web".into(),
        pid: Some(1),
        ..Default::default()
    };
    let text = serde_json::to_string(&ep).unwrap();
    assert!(!text.contains("ip6"), "{text}");
}

/// IPv6 port leases: one per family for a request naming both every-addresses, on one
/// host port; conflicts only within a family; an IPv4-only endpoint gets none.
#[test]
fn ipv6_port_leases_beside_the_ipv4_ones() {
    let (_dir, store) = fresh();
    create_dual(&store, "d", "10.1.0.0/24", "fd01::/64").unwrap();
    let a = reserve6(&store, "d", None).unwrap();
    let b = reserve6(&store, "d", None).unwrap();
    let both = store
        .lease_ports(
            &a.id,
            &[super::req(
                Proto::Tcp,
                "0.0.0.0,::",
                HostPort::Exact(8080),
                80,
            )],
            super::EPHEMERAL,
            &super::no_sockets,
        )
        .unwrap();
    let ids: Vec<(&str, IpAddr, IpAddr)> = both
        .iter()
        .map(|l| (l.id.as_str(), l.host_ip, l.guest_ip))
        .collect();
    assert_eq!(
        ids,
        [
            (
                "tcp/0.0.0.0:8080",
                "0.0.0.0".parse().unwrap(),
                "10.1.0.2".parse().unwrap()
            ),
            (
                "tcp/[::]:8080",
                "::".parse().unwrap(),
                "fd01::2".parse().unwrap()
            ),
        ]
    );
    // [::1]:8080 conflicts with [::]:8080 (A's), and nothing of B's request is leased.
    let err = store
        .lease_ports(
            &b.id,
            &[
                super::req(Proto::Tcp, "127.0.0.2", HostPort::Exact(8081), 81),
                super::req(Proto::Tcp, "::1", HostPort::Exact(8080), 80),
            ],
            super::EPHEMERAL,
            &super::no_sockets,
        )
        .unwrap_err();
    assert!(
        matches!(&err, StateError::PortInUse { lease, holder, .. }
            if lease == "tcp/[::1]:8080" && holder == "tcp/[::]:8080"),
        "{err:?}"
    );
    assert_eq!(store.list_ports().unwrap(), both);
    // Ephemeral on both families: the lowest port free in both (20000 is taken on IPv6
    // only, by a host socket; 20001 on IPv4, by a lease).
    store
        .lease_ports(
            &b.id,
            &[super::req(Proto::Udp, "0.0.0.0", HostPort::Exact(20001), 1)],
            super::EPHEMERAL,
            &super::no_sockets,
        )
        .unwrap();
    let busy6 = |_: Proto, ip: IpAddr, p: u16| ip.is_ipv6() && p == 20000;
    let got = store
        .lease_ports(
            &a.id,
            &[super::req(
                Proto::Udp,
                "0.0.0.0,::",
                HostPort::Ephemeral,
                53,
            )],
            super::EPHEMERAL,
            &busy6,
        )
        .unwrap();
    assert_eq!(
        got.iter()
            .map(|l| (l.id.as_str(), l.host_port))
            .collect::<Vec<_>>(),
        [("udp/0.0.0.0:20002", 20002), ("udp/[::]:20002", 20002)]
    );
    // Released by endpoint: both families' leases go.
    let gone = store.release_ports(Some(&a.id), None).unwrap();
    assert_eq!(gone.len(), 4);
    assert_eq!(store.list_ports().unwrap().len(), 1);
    // An IPv4-only endpoint has no IPv6 address to lead a lease to.
    create(&store, "v4", "10.2.0.0/24").unwrap();
    let c = reserve(&store, "v4", None).unwrap();
    assert!(matches!(
        store.lease_ports(
            &c.id,
            &[super::req(Proto::Tcp, "::", HostPort::Exact(9000), 80)],
            super::EPHEMERAL,
            &super::no_sockets
        ),
        Err(StateError::EndpointWithoutFamily { family: "IPv6", .. })
    ));
    assert_eq!(store.list_ports().unwrap().len(), 1);
}

#[test]
fn an_ipv6_only_network_leases_no_ipv4_and_overlaps_only_by_its_ipv6_subnet() {
    let (_dir, store) = fresh();
    let mut six = bridge_network("six", net("10.1.0.0/24"), ip("10.1.0.1"), None);
    (six.subnet, six.gateway) = (None, None);
    (six.subnet6, six.gateway6) = (Some(net6("fd0a::/64")), Some(ip6("fd0a::1")));
    store.create_network(six.clone()).unwrap();
    // Any IPv4 subnet goes beside it, even one an IPv6-only network's fixture had.
    create(&store, "four", "10.1.0.0/24").unwrap();
    let a = reserve6(&store, "six", None).unwrap();
    let b = reserve6(&store, "six", None).unwrap();
    assert_eq!((a.ip, a.gateway, a.ip6), (None, None, Some(ip6("fd0a::2"))));
    assert_eq!(b.ip6, Some(ip6("fd0a::3")));
    // The IPv4 network's addresses are untouched by them.
    assert_eq!(
        reserve(&store, "four", None).unwrap().ip,
        Some(ip("10.1.0.2"))
    );
    // No IPv4 address can be asked for.
    assert!(matches!(
        reserve(&store, "six", Some(ip("10.1.0.9"))),
        Err(StateError::NoIpv4 { .. })
    ));
    // Released, its IPv6 lease is the next one given.
    store.release_endpoint(&a.id).unwrap();
    assert_eq!(
        reserve6(&store, "six", None).unwrap().ip6,
        Some(ip6("fd0a::2"))
    );
    // Its endpoints hold it: a removal is refused unless forced, which takes them too.
    assert!(matches!(
        store.remove_network("six", false),
        Err(StateError::NetworkInUse { endpoints: 2, .. })
    ));
    assert_eq!(store.list_endpoints(Some("six")).unwrap().len(), 2);
    let (_, removed) = store.remove_network("six", true).unwrap();
    assert_eq!(removed.len(), 2);
    store.create_network(six.clone()).unwrap();
    assert_eq!(
        reserve6(&store, "six", None).unwrap().ip6,
        Some(ip6("fd0a::2"))
    );
    // Another network on an overlapping IPv6 subnet is refused.
    let mut clash = six;
    clash.name = "clash".into();
    clash.subnet6 = Some(net6("fd0a::/80"));
    assert!(matches!(
        store.create_network(clash),
        Err(StateError::SubnetOverlap { .. })
    ));
}
