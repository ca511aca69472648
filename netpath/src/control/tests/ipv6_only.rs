//! An IPv6-only network (`--subnet fd7a::/64` alone): its bridge, endpoints and TAPs
//! get no IPv4 address, route, neighbour or lease; the datapath knows them by their
//! IPv6 address only, flagged so their IPv4 and ARP are dropped; published ports are
//! IPv6 only — with the exact calls.

use std::net::{IpAddr, Ipv6Addr};

use netpath_common::maps::{ENDPOINT_FLAG_IPV6, ENDPOINT_FLAG_NO_IPV4, ENDPOINT_FLAG_PUBLISHED};

use super::*;

/// Network `six`: fd7a::/64 only, in `mode`.
fn six(mode: Mode) -> NetworkCreate {
    NetworkCreate {
        subnet: None,
        subnet6: Some("fd7a::/64".parse().expect("subnet6")),
        ..net_req("six", mode)
    }
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("ipv6")
}

/// The calls since `mark` that mention an IPv4 address or subnet of the 10.0.0.0/8 the
/// fixtures use (the uplink's own address is 192.0.2.x and is left out).
fn ipv4_calls(rig: &Rig, mark: usize) -> Vec<String> {
    (rig.calls_since(mark).into_iter())
        .filter(|c| c.split(' ').any(|w| w.starts_with("10.")))
        .collect()
}

#[tokio::test]
async fn a_bridged_ipv6_only_network_and_endpoint_have_no_ipv4() {
    let rig = Rig::new();
    let mark = rig.mark();
    let net = rig
        .svc
        .create_network(six(Mode::Bridge))
        .await
        .expect("create");
    assert_eq!((net.subnet, net.gateway), (None, None));
    assert_eq!(
        (net.subnet6, net.gateway6),
        (Some("fd7a::/64".parse().expect("net")), Some(v6("fd7a::1")))
    );
    let calls = rig.calls_since(mark);
    assert!(
        calls.contains(&"add_masq_subnet - fd7a::/64".to_string()),
        "{calls:?}"
    );
    let k = rig.kernel();
    let bridge = k
        .links
        .values()
        .find(|l| l.name == "np-six")
        .expect("bridge")
        .index;
    let bridge_addrs: Vec<_> = k.addrs.iter().filter(|a| a.0 == bridge).collect();
    assert_eq!(bridge_addrs, [&(bridge, IpAddr::V6(v6("fd7a::1")), 64)]);
    assert!(k.masq.is_empty());

    let mark = rig.mark();
    let ep = rig.veth("six").await;
    assert_eq!(
        (ep.ip, ep.gateway, ep.ip6, ep.gateway6),
        (None, None, Some(v6("fd7a::2")), Some(v6("fd7a::1")))
    );
    assert_eq!(ipv4_calls(&rig, mark), Vec::<String>::new());
    assert!(
        rig.calls_since(mark)
            .contains(&"upsert_endpoint - fd7a::2".to_string())
    );
    let k = rig.kernel();
    let value = k.endpoints[&IpAddr::V6(v6("fd7a::2"))];
    assert_eq!(
        (value.ip, value.flags),
        ([0; 4], ENDPOINT_FLAG_IPV6 | ENDPOINT_FLAG_NO_IPV4)
    );

    // Published on IPv6 only; an IPv4 host address is refused.
    let leases = (rig.svc)
        .publish_ports(publish_req(&ep.id, &["8080:80"]))
        .await
        .expect("publish");
    let hosts: Vec<String> = leases.iter().map(|l| l.host_ip.to_string()).collect();
    assert_eq!(hosts, ["::"]);
    let flags = rig.kernel().endpoints[&IpAddr::V6(v6("fd7a::2"))].flags;
    assert_ne!(
        flags & ENDPOINT_FLAG_PUBLISHED,
        0,
        "marked by its IPv6 address"
    );
    let err = (rig.svc)
        .publish_ports(publish_req(&ep.id, &["127.0.0.1:8081:80"]))
        .await
        .expect_err("no IPv4 to publish on");
    assert!(
        message(&err).contains("has no IPv4 address (network six is IPv6-only)"),
        "{err}"
    );

    let mark = rig.mark();
    rig.svc.remove_endpoint(&ep.id).await.expect("remove");
    assert!(
        rig.calls_since(mark)
            .contains(&"remove_endpoint - fd7a::2".to_string())
    );
    assert!(rig.kernel().endpoints.is_empty());
}

#[tokio::test]
async fn a_routed_ipv6_only_tap_gets_its_128_and_nothing_of_ipv4() {
    let rig = Rig::new();
    rig.svc
        .create_network(six(Mode::Routed))
        .await
        .expect("create");
    let mark = rig.mark();
    let tap = rig.tap("six", "vm6").await;
    assert_eq!((tap.ip, tap.ip6), (None, Some(v6("fd7a::2"))));
    assert_eq!(ipv4_calls(&rig, mark), Vec::<String>::new());
    let k = rig.kernel();
    let index = k
        .links
        .values()
        .find(|l| l.name == "vm6")
        .expect("tap")
        .index;
    let addrs: Vec<_> = k.addrs.iter().filter(|a| a.0 == index).collect();
    assert_eq!(addrs, [&(index, IpAddr::V6(v6("fd7a::1")), 128)]);
    let neighbours: Vec<_> = k
        .neighbours
        .iter()
        .filter(|n| n.0 == index)
        .map(|n| n.1)
        .collect();
    assert_eq!(neighbours, [IpAddr::V6(v6("fd7a::2"))]);
    let routes: Vec<_> = k
        .routes
        .iter()
        .filter(|r| r.2 == Some(index))
        .map(|r| r.0)
        .collect();
    assert_eq!(
        routes,
        ["fd7a::2/128".parse::<ipnet::IpNet>().expect("net")]
    );
}

#[tokio::test]
async fn ipv4_asked_of_an_ipv6_only_network_is_refused() {
    let rig = Rig::new();
    rig.svc
        .create_network(six(Mode::Bridge))
        .await
        .expect("create");
    let mut req = veth_req("six");
    req.ip = Some("10.7.0.2".parse().expect("ip"));
    let err = rig.svc.add_endpoint(req).await.expect_err("no IPv4 subnet");
    assert!(
        message(&err).contains(
            "network \"six\" has no IPv4 subnet (it is IPv6-only): it cannot lease 10.7.0.2"
        ),
        "{err}"
    );
    let mut req = tap_req("six", "vm6");
    req.ip = Some("10.7.0.3".parse().expect("ip"));
    assert!(rig.svc.add_tap(req).await.is_err());
    assert!(rig.records().await.endpoints.is_empty());
}
