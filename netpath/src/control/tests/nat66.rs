//! NAT66 in the control plane: a dual-stack network masquerades its IPv6 subnet through
//! the uplink's first global IPv6 address (link-local ones never), one that arrives
//! after the network (SLAAC) is taken up by `refresh_uplinks6`, and removing the
//! network takes both families' entries away — with the exact calls.

use std::net::Ipv6Addr;

use super::*;
use crate::control::fake::{UPLINK_ADDR, UPLINK_INDEX};

const GLOBAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

/// `net_req` with the IPv6 subnet fd77::/64.
fn dual_stack(name: &str) -> NetworkCreate {
    NetworkCreate {
        subnet6: Some("fd77::/64".parse().expect("subnet6")),
        ..net_req(name, Mode::Routed)
    }
}

/// Gives the fake uplink IPv6 address `addr`.
fn add_uplink_address(rig: &Rig, addr: Ipv6Addr) {
    let mut w = rig.world();
    w.kernel.addrs.insert((UPLINK_INDEX, addr.into(), 64));
}

#[tokio::test]
async fn a_dual_stack_network_masquerades_its_ipv6_subnet_to_the_global_address() {
    let rig = Rig::new();
    // Link-local first: never a NAT66 source.
    add_uplink_address(&rig, "fe80::1".parse().expect("ll"));
    add_uplink_address(&rig, GLOBAL6);
    let mark = rig.mark();
    rig.svc
        .create_network(dual_stack("web"))
        .await
        .expect("create");
    let calls = rig.calls_since(mark);
    assert_eq!(
        calls[..5],
        [
            "attach_tc uplink-egress 2",
            "attach_tc uplink-ingress 2",
            "set_uplink 2 2001:db8::10",
            "add_masq_subnet 10.77.0.0/24 fd77::/64",
            "set_no_masquerade 1 []",
        ]
    );
    let k = rig.kernel();
    assert_eq!(k.uplinks[&UPLINK_INDEX].addr, UPLINK_ADDR.octets());
    let up6 = k.uplinks6[&UPLINK_INDEX];
    assert_eq!(
        (up6.addr, up6.first_port, up6.last_port),
        (GLOBAL6.octets(), 32768, 60999)
    );
    assert_eq!(k.masq6, [("fd77::/64".parse().expect("net"), 1)].into());

    let mark = rig.mark();
    rig.svc.remove_network("web", false).await.expect("remove");
    let calls = rig.calls_since(mark);
    assert_eq!(
        calls[..3],
        [
            "remove_masq_subnet 10.77.0.0/24 fd77::/64",
            "set_no_masquerade 1 []",
            "remove_uplink 2",
        ]
    );
    let k = rig.kernel();
    assert!(k.uplinks6.is_empty() && k.masq6.is_empty(), "{k:?}");
}

#[tokio::test]
async fn an_ipv6_address_that_arrives_later_is_taken_up_by_the_refresh() {
    let rig = Rig::new();
    rig.svc
        .create_network(dual_stack("web"))
        .await
        .expect("create");
    // No global address yet: IPv4 masquerade only.
    assert!(rig.kernel().uplinks6.is_empty());
    assert!(rig.kernel().uplinks.contains_key(&UPLINK_INDEX));
    // SLAAC brings one.
    add_uplink_address(&rig, GLOBAL6);
    let mark = rig.mark();
    rig.svc.refresh_uplinks6().await.expect("refresh");
    assert_eq!(rig.calls_since(mark), ["set_uplink 2 2001:db8::10"]);
    assert_eq!(rig.kernel().uplinks6[&UPLINK_INDEX].addr, GLOBAL6.octets());
    // An IPv4-only network does not make the refresh write anything.
    let rig4 = Rig::new();
    rig4.network("web", Mode::Routed).await;
    let mark = rig4.mark();
    rig4.svc.refresh_uplinks6().await.expect("refresh");
    assert!(rig4.calls_since(mark).is_empty());
}

/// `--no-masquerade` destinations of both families go to the datapath in one write, each
/// family's in its trie; removing the network clears them.
#[tokio::test]
async fn exemptions_of_both_families_are_written_and_cleared() {
    let rig = Rig::new();
    add_uplink_address(&rig, GLOBAL6);
    let exempt: Vec<ipnet::IpNet> = ["fd44::/48", "10.244.0.0/16", "fd44::/48"]
        .iter()
        .map(|c| c.parse().expect("net"))
        .collect();
    let mark = rig.mark();
    let net = rig
        .svc
        .create_network(NetworkCreate {
            no_masquerade: exempt,
            ..dual_stack("web")
        })
        .await
        .expect("create");
    // Sorted, without the repeat, IPv4 first.
    let want: Vec<ipnet::IpNet> = vec![
        "10.244.0.0/16".parse().unwrap(),
        "fd44::/48".parse().unwrap(),
    ];
    assert_eq!(net.no_masquerade, want);
    let calls = rig.calls_since(mark);
    assert!(
        calls.contains(&"set_no_masquerade 1 [10.244.0.0/16, fd44::/48]".to_string()),
        "{calls:?}"
    );
    assert_eq!(rig.kernel().no_masq[&1], want);
    rig.svc.remove_network("web", false).await.expect("remove");
    assert!(rig.kernel().no_masq.is_empty());
}
