//! Network policy over the fakes: what `--isolate` and `--internal` set on endpoints,
//! bridge ports, the masquerade and the network policy map, at creation and when
//! `update_network` changes them on running endpoints; what an internal network refuses;
//! and an update that fails at any of its steps, which leaves kernel and records as they
//! were.

use std::net::IpAddr;

use netpath_common::maps::{ENDPOINT_FLAG_INTERNAL, ENDPOINT_FLAG_ISOLATED, POLICY_FLAGS};

use super::*;
use crate::model::{HostAccess, NetworkPolicy, NetworkUpdate};

const ISOLATE: NetworkPolicy = NetworkPolicy {
    isolate: true,
    internal: false,
    egress_deny: Vec::new(),
    egress_allow: Vec::new(),
    host_access: HostAccess::All,
};
const INTERNAL: NetworkPolicy = NetworkPolicy {
    isolate: false,
    internal: true,
    egress_deny: Vec::new(),
    egress_allow: Vec::new(),
    host_access: HostAccess::All,
};

fn with_policy(name: &str, mode: Mode, policy: NetworkPolicy) -> NetworkCreate {
    NetworkCreate {
        subnet6: Some("fd77::/64".parse().expect("subnet6")),
        policy,
        ..net_req(name, mode)
    }
}

/// The policy flags of the endpoint at `ip` in the fake datapath.
fn policy_flags(k: &Kernel, ip: Option<std::net::Ipv4Addr>) -> u8 {
    let ip = IpAddr::V4(ip.expect("an IPv4 endpoint"));
    k.endpoints.get(&ip).expect("registered").flags & POLICY_FLAGS
}

/// The ifindex of endpoint `ep`'s host-side device.
fn dev(rig: &Rig, ep: &Endpoint) -> u32 {
    let w = rig.world();
    let link = w.kernel.links.values().find(|l| l.name == ep.host_ifname);
    link.expect("its device").index
}

#[tokio::test]
async fn an_isolated_bridge_network_flags_its_endpoints_and_isolates_their_ports() {
    let rig = Rig::new();
    let req = with_policy("web", Mode::Bridge, ISOLATE);
    let net = rig.svc.create_network(req).await.expect("create");
    assert_eq!(net.policy, ISOLATE);
    let (a, t) = (rig.veth("web").await, rig.tap("web", "tap-iso0").await);
    let k = rig.kernel();
    for ep in [&a, &t] {
        assert_eq!(policy_flags(&k, ep.ip), ENDPOINT_FLAG_ISOLATED, "{}", ep.id);
        assert!(k.isolated_ports.contains(&dev(&rig, ep)), "{} port", ep.id);
    }
    assert!(k.private_vlans.contains("np-web"), "the bridge answers ARP");
    // Isolation is not internal: the network masquerades as any other.
    assert!(k.masq.contains_key(&"10.77.0.0/24".parse().unwrap()));
    assert!(k.networks.is_empty(), "no policy entry without internal");
    // Routed: the flags, and no bridge port to isolate.
    let rig = Rig::new();
    let req = with_policy("web", Mode::Routed, ISOLATE);
    rig.svc.create_network(req).await.expect("create routed");
    let m = rig.mark();
    let a = rig.veth("web").await;
    assert_eq!(policy_flags(&rig.kernel(), a.ip), ENDPOINT_FLAG_ISOLATED);
    let calls = rig.calls_since(m);
    assert!(
        !calls.iter().any(|c| c.starts_with("set_port_isolated")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn an_internal_network_has_no_masquerade_and_publishes_nothing() {
    let rig = Rig::new();
    let req = with_policy("web", Mode::Bridge, INTERNAL);
    let net = rig.svc.create_network(req).await.expect("create");
    let a = rig.veth("web").await;
    let k = rig.kernel();
    assert!(k.masq.is_empty() && k.masq6.is_empty(), "{:?}", k.masq);
    assert!(k.uplinks.is_empty(), "no uplink programs for it");
    let entry = k.networks.get(&net.id).expect("its policy entry");
    assert_eq!(entry.gateway, [10, 77, 0, 1]);
    assert_eq!(
        IpAddr::from(entry.gateway6),
        "fd77::1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(policy_flags(&k, a.ip), ENDPOINT_FLAG_INTERNAL);
    // A publish is refused, with nothing changed.
    let before = (rig.kernel(), rig.records().await);
    let publish = PortPublish {
        endpoint: a.id.clone(),
        spec: Some("8080:80".into()),
        specs: Vec::new(),
    };
    let err = rig.svc.publish_ports(publish).await.expect_err("refused");
    assert!(matches!(err, ServiceError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("network web is internal"), "{err}");
    assert_eq!((rig.kernel(), rig.records().await), before);
    // Removing the network removes its entry.
    rig.svc.remove_network("web", true).await.expect("remove");
    assert!(rig.kernel().networks.is_empty());
}

#[tokio::test]
async fn update_changes_each_rule_on_running_endpoints_and_back() {
    for mode in [Mode::Bridge, Mode::Routed] {
        let rig = Rig::new();
        let req = with_policy("web", mode, NetworkPolicy::default());
        let net = rig.svc.create_network(req).await.expect("create");
        let (a, b) = (rig.veth("web").await, rig.tap("web", "tap-upd0").await);
        let open = rig.kernel();
        let update = |isolate, internal| NetworkUpdate {
            isolate,
            internal,
            ..Default::default()
        };
        // Isolate.
        let n = rig
            .svc
            .update_network("web", update(Some(true), None))
            .await;
        assert_eq!(n.expect("isolate").policy, ISOLATE, "{mode:?}");
        let k = rig.kernel();
        for ep in [&a, &b] {
            assert_eq!(policy_flags(&k, ep.ip), ENDPOINT_FLAG_ISOLATED, "{mode:?}");
            let isolated = k.isolated_ports.contains(&dev(&rig, ep));
            assert_eq!(isolated, mode == Mode::Bridge, "{mode:?} {}", ep.id);
        }
        let pvlan = k.private_vlans.contains("np-web");
        assert_eq!(pvlan, mode == Mode::Bridge, "{mode:?}");
        // Internal as well: the masquerade goes, the entry comes.
        let n = rig
            .svc
            .update_network("web", update(None, Some(true)))
            .await;
        let both = NetworkPolicy {
            isolate: true,
            internal: true,
            ..Default::default()
        };
        assert_eq!(n.expect("internal").policy, both);
        let k = rig.kernel();
        assert!(k.masq.is_empty() && k.uplinks.is_empty(), "{mode:?}");
        assert!(k.networks.contains_key(&net.id));
        let flags = ENDPOINT_FLAG_ISOLATED | ENDPOINT_FLAG_INTERNAL;
        assert_eq!(policy_flags(&k, a.ip), flags);
        let recorded = rig.svc.get_network("web").await.expect("record");
        assert_eq!(recorded.policy, both, "recorded");
        // Asking for what is already so changes nothing.
        let m = rig.mark();
        rig.svc
            .update_network("web", update(Some(true), Some(true)))
            .await
            .expect("same");
        assert!(rig.calls_since(m).is_empty(), "{:?}", rig.calls_since(m));
        // Both off: every entry and port as an open network's.
        let n = rig
            .svc
            .update_network("web", update(Some(false), Some(false)))
            .await;
        assert!(n.expect("open").policy.is_open());
        assert_eq!(rig.kernel(), open, "{mode:?}: back to open");
        // An unknown network.
        let err = rig
            .svc
            .update_network("nope", update(Some(true), None))
            .await;
        assert!(err.expect_err("unknown").is_not_found());
    }
}

#[tokio::test]
async fn a_network_with_published_ports_is_not_made_internal() {
    let rig = Rig::new();
    rig.network("web", Mode::Bridge).await;
    let a = rig.veth("web").await;
    let publish = PortPublish {
        endpoint: a.id.clone(),
        spec: Some("8080:80".into()),
        specs: Vec::new(),
    };
    rig.svc.publish_ports(publish).await.expect("publish");
    let before = (rig.kernel(), rig.records().await);
    let m = rig.mark();
    let update = NetworkUpdate {
        internal: Some(true),
        ..Default::default()
    };
    let err = rig
        .svc
        .update_network("web", update)
        .await
        .expect_err("refused");
    assert!(matches!(err, ServiceError::Conflict { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("tcp/0.0.0.0:8080"), "{text}");
    assert!(rig.calls_since(m).is_empty());
    assert_eq!((rig.kernel(), rig.records().await), before);
}

/// An update failed at each of its calls in turn: the old policy is back, kernel and
/// records as before.
#[tokio::test]
async fn an_update_failed_at_any_step_puts_the_old_policy_back() {
    let setup = || async {
        let rig = Rig::new();
        let req = with_policy("web", Mode::Bridge, ISOLATE);
        rig.svc.create_network(req).await.expect("create");
        rig.veth("web").await;
        rig.tap("web", "tap-fail0").await;
        rig
    };
    let update = NetworkUpdate {
        isolate: Some(false),
        internal: Some(true),
        ..Default::default()
    };
    let rig = setup().await;
    let m = rig.mark();
    rig.svc
        .update_network("web", update.clone())
        .await
        .expect("update");
    let steps = rig.calls_since(m);
    assert!(steps.len() >= 6, "{steps:?}");
    for (k, call) in steps.iter().enumerate() {
        let rig = setup().await;
        let before = (rig.kernel(), rig.records().await);
        rig.fail_at(rig.mark() + k);
        let err = rig.svc.update_network("web", update.clone()).await;
        assert!(err.is_err(), "failing {call} (step {k}) fails the update");
        assert_eq!(rig.kernel(), before.0, "kernel after {call} failed");
        assert_eq!(rig.records().await, before.1, "records after {call} failed");
    }
}

#[tokio::test]
async fn egress_rules_are_written_expanded_and_replaced_by_an_update() {
    use netpath_common::policy::{EGRESS_ALLOW, EGRESS_DENY};
    let rig = Rig::new();
    let req = NetworkCreate {
        profile: Some(crate::model::Profile::Untrusted),
        policy: NetworkPolicy {
            egress_allow: vec!["10.9.0.0/16".parse().unwrap()],
            ..Default::default()
        },
        ..with_policy("web", Mode::Routed, NetworkPolicy::default())
    };
    let net = rig.svc.create_network(req).await.expect("create");
    // The profile: isolated, `private` denied, no host access; the allow kept.
    assert!(net.policy.isolate);
    assert_eq!(net.policy.host_access, HostAccess::None);
    assert_eq!(net.policy.egress_deny, [crate::model::Destination::Private]);
    let a = rig.veth("web").await;
    let k = rig.kernel();
    let host = netpath_common::maps::ENDPOINT_FLAG_HOST;
    let flags = ENDPOINT_FLAG_ISOLATED | netpath_common::maps::ENDPOINT_FLAG_EGRESS | host;
    assert_eq!(policy_flags(&k, a.ip), flags);
    // Host access none: the flag, and no port written (an empty list).
    assert_eq!(k.host_access.get(&net.id), None);
    let rules = k.egress.get(&net.id).expect("its rules");
    let rule = |c: &str| {
        let c: ipnet::IpNet = c.parse().unwrap();
        rules.iter().find(|(r, _)| *r == c).map(|(_, v)| *v)
    };
    assert_eq!(rule("10.0.0.0/8"), Some(EGRESS_DENY));
    assert_eq!(rule("fc00::/7"), Some(EGRESS_DENY), "dual-stack: IPv6 too");
    // The fake host's own subnets (its routes that are no default and no single host).
    assert_eq!(rule("192.0.2.0/24"), Some(EGRESS_DENY));
    assert_eq!(rule("2001:db8:1::/48"), Some(EGRESS_DENY));
    assert_eq!(rule("10.9.0.0/16"), Some(EGRESS_ALLOW));
    // An update replaces the lists; an empty deny list drops the flag and the rules.
    let update = NetworkUpdate {
        egress_deny: Some(vec!["203.0.113.0/24".parse().unwrap()]),
        egress_allow: Some(Vec::new()),
        ..Default::default()
    };
    rig.svc.update_network("web", update).await.expect("update");
    let k = rig.kernel();
    let want = vec![("203.0.113.0/24".parse().unwrap(), EGRESS_DENY)];
    assert_eq!(k.egress.get(&net.id), Some(&want));
    let clear = NetworkUpdate {
        egress_deny: Some(Vec::new()),
        ..Default::default()
    };
    rig.svc.update_network("web", clear).await.expect("clear");
    let k = rig.kernel();
    assert!(k.egress.is_empty(), "{:?}", k.egress);
    assert_eq!(policy_flags(&k, a.ip), ENDPOINT_FLAG_ISOLATED | host);
    // Host access: DNS on the host, then everything again.
    let dns = NetworkUpdate {
        host_access: Some("53/udp,53/tcp,53/udp".parse().unwrap()),
        ..Default::default()
    };
    rig.svc.update_network("web", dns).await.expect("dns");
    assert_eq!(
        rig.kernel().host_access.get(&net.id),
        Some(&vec![(6, 53), (17, 53)])
    );
    let all = NetworkUpdate {
        host_access: Some(HostAccess::All),
        ..Default::default()
    };
    rig.svc.update_network("web", all).await.expect("all");
    let k = rig.kernel();
    assert!(k.host_access.is_empty());
    assert_eq!(policy_flags(&k, a.ip), ENDPOINT_FLAG_ISOLATED);
    // Removing a network with rules removes them.
    let update = NetworkUpdate {
        egress_deny: Some(vec!["private".parse().unwrap()]),
        ..Default::default()
    };
    rig.svc
        .update_network("web", update)
        .await
        .expect("deny again");
    assert!(!rig.kernel().egress.is_empty());
    rig.svc.remove_network("web", true).await.expect("remove");
    assert!(rig.kernel().egress.is_empty());
}
