//! The reconcile rules (`control::reconcile`), one test each, with the exact calls.

use super::*;
use crate::{
    config,
    model::{EndpointKind, EndpointState},
    netlink::Link,
    state::NewEndpoint,
    types::MacAddr,
};

/// The calls reconcile makes for a bridge network `web`: its masquerade (the first
/// five) and its bridge, ifindex `bridge`, plumbed again (idempotent).
fn network_calls(bridge: u32) -> Vec<String> {
    let bridge = [
        "ensure_bridge np-web".to_owned(),
        format!("add_address {bridge} 10.77.0.1/24"),
        format!("set_up {bridge}"),
        format!("attach_tc ingress {bridge}"),
    ];
    MASQ_CALLS
        .map(String::from)
        .into_iter()
        .chain(bridge)
        .collect()
}

/// `calls`, then `more`.
fn with(mut calls: Vec<String>, more: &[&str]) -> Vec<String> {
    calls.extend(more.iter().map(|c| c.to_string()));
    calls
}

/// A record of network `web` as a crash right after its reservation leaves it.
fn creating(id: &str, kind: EndpointKind, host_ifname: &str) -> NewEndpoint {
    let mac = MacAddr::random_local();
    NewEndpoint::new(id.into(), "web".into(), kind, None, mac, host_ifname.into())
}

/// Runs reconcile; checks its report lines and its calls, exactly.
async fn reconcile_says(rig: &Rig, actions: &[String], calls: &[String]) {
    let m = rig.mark();
    let done = rig.svc.reconcile().await.expect("reconcile");
    assert_eq!(done, actions, "what reconcile reports");
    assert_eq!(rig.calls_since(m), calls, "what reconcile does");
}

/// [`reconcile_says`], after which kernel and records must be as `before`.
async fn reconcile_restores(
    rig: &Rig,
    before: (Kernel, Records),
    said: &[String],
    calls: &[String],
) {
    reconcile_says(rig, said, calls).await;
    assert_eq!(
        (rig.kernel(), rig.records().await),
        before,
        "the state after"
    );
}

/// A device as another program (or another netpath instance) made it.
fn foreign(index: u32, name: &str, alias: Option<String>) -> Link {
    Link {
        index,
        name: name.into(),
        alias,
        mac: None,
        master: None,
        loopback: false,
    }
}

#[tokio::test]
async fn a_healthy_endpoint_is_registered_again_and_kept() {
    let rig = Rig::new();
    rig.network("web", Mode::Bridge).await;
    let ep = rig.veth("web").await;
    rig.svc
        .publish_ports(publish_req(&ep.id, &["8080:80"]))
        .await
        .expect("publish");
    let before = (rig.kernel(), rig.records().await);
    let expected = with(
        network_calls(10),
        &[
            "attach_tc_endpoint 11",
            "upsert_endpoint 10.77.0.2",
            "mark_published 10.77.0.2",
            "sweep_link_pins",
        ],
    );
    reconcile_restores(&rig, before, &[], &expected).await;
}

#[tokio::test]
async fn an_unfinished_record_is_rolled_back_with_its_untagged_device() {
    let rig = Rig::new();
    rig.network("web", Mode::Routed).await;
    let before = (rig.kernel(), rig.records().await);
    // A crash after the record and the TAP were made, before the TAP was tagged.
    let ep = rig
        .svc
        .store
        .reserve_endpoint(creating("00000000beef", EndpointKind::Tap, "vm0"))
        .expect("reserve");
    assert_eq!(ep.state, EndpointState::Creating);
    rig.world()
        .kernel
        .links
        .insert(40, foreign(40, "vm0", None));
    let masq = &network_calls(10)[..5];
    let expected = with(
        masq.to_vec(),
        &[
            "remove_endpoint 10.77.0.2",
            "forget_links 40",
            "delete_link 40",
            "sweep_link_pins",
        ],
    );
    let said = format!(
        "released endpoint 00000000beef ({}): creation never finished",
        ep.primary_ip()
    );
    reconcile_restores(&rig, before, &[said], &expected).await;
}

#[tokio::test]
async fn an_endpoint_whose_device_is_gone_is_released() {
    let rig = Rig::new();
    rig.network("web", Mode::Bridge).await;
    let before = (rig.kernel(), rig.records().await);
    let ep = rig.veth("web").await;
    // Its namespace died: the kernel took the pair (and its tc filter) with it.
    let index = rig
        .world()
        .kernel
        .links
        .values()
        .find(|l| l.name == ep.host_ifname)
        .expect("veth")
        .index;
    rig.world().delete(index);
    let said = format!(
        "released endpoint {} (10.77.0.2): its device is gone",
        ep.id
    );
    let expected = with(
        network_calls(10),
        &["remove_endpoint 10.77.0.2", "sweep_link_pins"],
    );
    reconcile_restores(&rig, before, &[said], &expected).await;
}

#[tokio::test]
async fn a_tagged_device_without_record_is_removed_and_foreign_ones_stay() {
    let rig = Rig::new();
    rig.network("web", Mode::Bridge).await;
    let instance = rig.svc.instance.clone();
    let ours = config::link_alias(&instance, "veth", "0123456789ab");
    let theirs = config::link_alias("0badc0de", "veth", "0123456789ab");
    let kernel = rig.kernel();
    {
        let mut w = rig.world();
        w.kernel
            .links
            .insert(50, foreign(50, "np-0123456789ab", Some(ours)));
        // Another instance's device, and a user's device with a netpath-like name.
        w.kernel
            .links
            .insert(51, foreign(51, "np-other", Some(theirs)));
        w.kernel.links.insert(52, foreign(52, "np-user", None));
        w.kernel.pins.insert(("ingress", 50));
    }
    let expected = with(
        network_calls(10),
        &["sweep_link_pins", "forget_links 50", "delete_link 50"],
    );
    let said = "removed orphan device np-0123456789ab".to_owned();
    reconcile_says(&rig, &[said], &expected).await;
    let mut left = rig.kernel();
    let theirs: Vec<u32> = [51, 52]
        .into_iter()
        .filter(|i| left.links.remove(i).is_some())
        .collect();
    assert_eq!(theirs, [51, 52], "foreign devices are left alone");
    assert_eq!(left, kernel);
}

#[tokio::test]
async fn a_missing_bridge_is_made_again_and_pins_of_dead_devices_swept() {
    let rig = Rig::new();
    rig.network("web", Mode::Bridge).await;
    let ep = rig.veth("web").await;
    // Someone deleted the bridge (its ports lose their master, its pin stays).
    rig.world().delete(10);
    let said = [
        "recreated the bridge of network web".to_owned(),
        "removed 1 attachment pin(s) of deleted devices".to_owned(),
    ];
    // The new bridge is ifindex 12.
    let expected = with(
        network_calls(12),
        &[
            "attach_tc_endpoint 11",
            "upsert_endpoint 10.77.0.2",
            "sweep_link_pins",
        ],
    );
    reconcile_says(&rig, &said, &expected).await;
    let k = rig.kernel();
    assert!(k.pins.contains(&("ingress", 12)) && !k.pins.contains(&("ingress", 10)));
    assert!(k.addrs.contains(&(12, GW.into(), 24)));
    assert_eq!(
        k.endpoints[&ep.primary_ip()].host_mac,
        [2, 0, 0, 0, 0, 12],
        "the new bridge's MAC"
    );
}

/// The line a sweep or reconcile says of releasing `ep`.
fn released(ep: &crate::model::Endpoint, why: &str) -> String {
    format!("released endpoint {} ({}): {why}", ep.id, ep.primary_ip())
}

#[tokio::test]
async fn the_sweep_rolls_back_creating_records_only() {
    let rig = Rig::new();
    rig.network("web", Mode::Routed).await;
    let ready = rig.veth("web").await;
    let stuck = rig
        .svc
        .store
        .reserve_endpoint(creating(
            "00000000cafe",
            EndpointKind::Veth,
            "np-00000000cafe",
        ))
        .expect("reserve");
    let m = rig.mark();
    let actions = rig.svc.sweep_unfinished().await.expect("sweep");
    assert_eq!(actions, [released(&stuck, "creation never finished")]);
    assert_eq!(
        rig.calls_since(m),
        [format!("remove_endpoint {}", stuck.primary_ip())]
    );
    let left = rig.records().await.endpoints;
    assert_eq!(
        left.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [ready.id.as_str()]
    );
}

#[tokio::test]
async fn the_sweep_releases_an_endpoint_whose_device_vanished() {
    let rig = Rig::new();
    rig.network("web", Mode::Bridge).await;
    let gone = rig.veth("web").await;
    let stays = rig.veth("web").await;
    rig.svc
        .publish_ports(crate::model::PortPublish {
            endpoint: gone.id.clone(),
            spec: Some("18300:80".into()),
            specs: vec![],
        })
        .await
        .expect("publish");
    // Its namespace died with no engine to say so: the kernel took the pair.
    let index = (rig.world().kernel.links.values())
        .find(|l| l.name == gone.host_ifname)
        .expect("veth")
        .index;
    rig.world().delete(index);
    let m = rig.mark();
    let actions = rig.svc.sweep_unfinished().await.expect("sweep");
    assert_eq!(actions, [released(&gone, "its device is gone")]);
    assert_eq!(
        rig.calls_since(m),
        [
            "unpublish 6/0.0.0.0:18300".to_owned(),
            format!("remove_endpoint {}", gone.primary_ip())
        ]
    );
    let records = rig.records().await;
    assert_eq!(
        records.endpoints.iter().map(|e| &e.id).collect::<Vec<_>>(),
        [&stays.id]
    );
    assert!(records.ports.is_empty(), "{:?}", records.ports);
    // A second sweep finds nothing to do.
    assert!(rig.svc.sweep_unfinished().await.expect("sweep").is_empty());
}

#[tokio::test]
async fn a_tap_name_taken_meanwhile_leaves_that_device_alone() {
    let rig = Rig::new();
    rig.network("web", Mode::Routed).await;
    let records = rig.records().await;
    rig.world().tap_name_race = true;
    let m = rig.mark();
    let err = rig
        .svc
        .add_tap(tap_req("web", "vm0"))
        .await
        .expect_err("taken");
    assert!(
        message(&err).contains("a network device with that name already exists"),
        "{err}"
    );
    assert_eq!(
        rig.calls_since(m),
        ["create_tap vm0"],
        "no undo touches the other device"
    );
    assert!(rig.world().kernel.links.values().any(|l| l.name == "vm0"));
    assert_eq!(rig.records().await, records);
}

#[tokio::test]
async fn the_sweep_releases_an_endpoint_whose_container_end_came_back() {
    let rig = Rig::new();
    rig.network("web", Mode::Bridge).await;
    let req = crate::model::EndpointCreate {
        netns: None,
        peer: Some("npdback".into()),
        ..super::veth_req("web")
    };
    let ep = rig.svc.add_endpoint(req).await.expect("add");
    use crate::control::reconcile::STRANDED_SWEEPS;
    // Until the engine moves it, the container end is on the host: sweeps leave it.
    rig.world().new_link("npdback", None);
    for _ in 1..STRANDED_SWEEPS {
        assert!(rig.svc.sweep_unfinished().await.expect("sweep").is_empty());
    }
    // Moved into the container meanwhile: the count starts over.
    let index = (rig.world().kernel.links.values())
        .find(|l| l.name == "npdback")
        .unwrap()
        .index;
    rig.world().delete(index);
    assert!(rig.svc.sweep_unfinished().await.expect("sweep").is_empty());
    rig.world().new_link("npdback", None);
    for _ in 1..STRANDED_SWEEPS {
        assert!(rig.svc.sweep_unfinished().await.expect("sweep").is_empty());
    }
    assert_eq!(rig.records().await.endpoints.len(), 1);
    // On the host at STRANDED_SWEEPS sweeps in a row: released.
    let actions = rig.svc.sweep_unfinished().await.expect("sweep");
    assert_eq!(
        actions,
        [released(&ep, "its container end came back to the host")]
    );
    assert!(rig.records().await.endpoints.is_empty());
}
