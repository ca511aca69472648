//! Every multi-step operation, failed at each of its steps in turn. A case is a table:
//! the operation's calls in order, and for each one the calls that follow when it
//! fails (the undo, and whatever else still runs). After the failure, the kernel model
//! and the records must be as they were before the operation; for removals, a retry
//! must finish the job.

use futures::{FutureExt, future::BoxFuture};

use super::*;

type Setup = for<'a> fn(&'a Rig) -> BoxFuture<'a, String>;
type Op = for<'a> fn(&'a Rig, &'a str) -> BoxFuture<'a, Result<(), ServiceError>>;

struct Case {
    name: &'static str,
    /// Builds what the operation needs; returns an id for it (an endpoint's, say).
    setup: Setup,
    op: Op,
    /// (call, what follows when that call fails).
    steps: &'static [(&'static str, &'static [&'static str])],
    /// What a failure at step k legitimately leaves changed (see the publish case).
    residue: fn(&mut Kernel, usize),
}

fn no_residue(_: &mut Kernel, _: usize) {}

/// A publish marks its endpoint as published, and the mark stays when the ports go:
/// it only makes the uplink program look the port up.
fn marked_published(k: &mut Kernel, _: usize) {
    let ep = k.endpoints.get_mut(&"10.77.0.2".parse().expect("ip"));
    ep.expect("endpoint").flags |= netpath_common::maps::ENDPOINT_FLAG_PUBLISHED;
}

/// Runs `case` once without failure (its calls must be exactly the table's), then once
/// per step failing there.
async fn run(case: &Case) {
    let rig = Rig::new();
    let ctx = (case.setup)(&rig).await;
    let m = rig.mark();
    (case.op)(&rig, &ctx).await.expect(case.name);
    let forward: Vec<&str> = case.steps.iter().map(|s| s.0).collect();
    assert_eq!(
        rig.calls_since(m),
        forward,
        "{}: the calls without failure",
        case.name
    );
    for (k, (call, after)) in case.steps.iter().enumerate() {
        let rig = Rig::new();
        let ctx = (case.setup)(&rig).await;
        let (mut kernel, records) = (rig.kernel(), rig.records().await);
        let m = rig.mark();
        rig.fail_at(m + k);
        let err = (case.op)(&rig, &ctx).await;
        assert!(
            err.is_err(),
            "{}: failing {call} (step {k}) must fail the operation",
            case.name
        );
        let calls = rig.calls_since(m);
        assert_eq!(
            calls[..=k],
            forward[..=k],
            "{}: the calls up to step {k}",
            case.name
        );
        assert_eq!(
            &calls[k + 1..],
            *after,
            "{}: the calls after {call} failed",
            case.name
        );
        (case.residue)(&mut kernel, k);
        assert_eq!(
            rig.kernel(),
            kernel,
            "{}: the kernel after {call} failed",
            case.name
        );
        assert_eq!(
            rig.records().await,
            records,
            "{}: the records after {call} failed",
            case.name
        );
    }
}

fn nothing(_: &Rig) -> BoxFuture<'_, String> {
    async { String::new() }.boxed()
}
fn bridge_net(rig: &Rig) -> BoxFuture<'_, String> {
    async { rig.network("web", Mode::Bridge).await.name }.boxed()
}
fn routed_net(rig: &Rig) -> BoxFuture<'_, String> {
    async { rig.network("web", Mode::Routed).await.name }.boxed()
}
fn bridge_veth(rig: &Rig) -> BoxFuture<'_, String> {
    async {
        rig.network("web", Mode::Bridge).await;
        rig.veth("web").await.id
    }
    .boxed()
}

const MASQ_UNDO: [&str; 4] = [
    "remove_masq_subnet 10.77.0.0/24",
    "set_no_masquerade 1 []",
    "remove_uplink 2",
    "forget_links 2",
];
const MASQ_AND_BRIDGE_UNDO: [&str; 6] = [
    "remove_masq_subnet 10.77.0.0/24",
    "set_no_masquerade 1 []",
    "remove_uplink 2",
    "forget_links 2",
    "forget_links 10",
    "delete_link 10",
];

#[tokio::test]
async fn create_network_bridge() {
    run(&Case {
        name: "create bridge network",
        setup: nothing,
        op: |rig, _| {
            async {
                rig.svc
                    .create_network(net_req("web", Mode::Bridge))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        steps: &[
            ("attach_tc uplink-egress 2", &MASQ_UNDO),
            ("attach_tc uplink-ingress 2", &MASQ_UNDO),
            ("set_uplink 2", &MASQ_UNDO),
            ("add_masq_subnet 10.77.0.0/24", &MASQ_UNDO),
            ("set_no_masquerade 1 []", &MASQ_UNDO),
            // The bridge is not made: nothing to delete.
            ("ensure_bridge np-web", &MASQ_UNDO),
            ("add_address 10 10.77.0.1/24", &MASQ_AND_BRIDGE_UNDO),
            ("set_up 10", &MASQ_AND_BRIDGE_UNDO),
            ("attach_tc ingress 10", &MASQ_AND_BRIDGE_UNDO),
        ],
        residue: no_residue,
    })
    .await;
}

#[tokio::test]
async fn create_network_routed() {
    run(&Case {
        name: "create routed network",
        setup: nothing,
        op: |rig, _| {
            async {
                rig.svc
                    .create_network(net_req("web", Mode::Routed))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        steps: &[
            ("attach_tc uplink-egress 2", &MASQ_UNDO),
            ("attach_tc uplink-ingress 2", &MASQ_UNDO),
            ("set_uplink 2", &MASQ_UNDO),
            ("add_masq_subnet 10.77.0.0/24", &MASQ_UNDO),
            ("set_no_masquerade 1 []", &MASQ_UNDO),
        ],
        residue: no_residue,
    })
    .await;
}

#[tokio::test]
async fn add_endpoint_bridge() {
    const UNDO: &[&str] = &["delete_link 11", "remove_endpoint 10.77.0.2"];
    run(&Case {
        name: "add endpoint (bridge)",
        setup: bridge_net,
        op: |rig, net| async move { rig.svc.add_endpoint(veth_req(net)).await.map(drop) }.boxed(),
        steps: &[
            // Nothing made; the record's map entry is removed (absent is fine).
            (
                "create_veth /run/netns/fake:eth0",
                &["remove_endpoint 10.77.0.2"],
            ),
            ("configure 11 alias,up", UNDO),
            // The datapath is registered while the namespace side is configured, so it
            // still happens, and is undone with the rest.
            (
                "configure_namespace /run/netns/fake:eth0",
                &[
                    "attach_tc_endpoint 11",
                    "upsert_endpoint 10.77.0.2",
                    "delete_link 11",
                    "remove_endpoint 10.77.0.2",
                ],
            ),
            ("attach_tc_endpoint 11", UNDO),
            ("upsert_endpoint 10.77.0.2", UNDO),
        ],
        residue: no_residue,
    })
    .await;
}

#[tokio::test]
async fn add_endpoint_routed() {
    const UNDO: &[&str] = &["delete_link 10", "remove_endpoint 10.77.0.2"];
    run(&Case {
        name: "add endpoint (routed)",
        setup: routed_net,
        op: |rig, net| async move { rig.svc.add_endpoint(veth_req(net)).await.map(drop) }.boxed(),
        steps: &[
            (
                "create_veth /run/netns/fake:eth0",
                &["remove_endpoint 10.77.0.2"],
            ),
            ("configure 10 alias,up", UNDO),
            ("add_address 10 10.77.0.1/32", UNDO),
            ("add_route 10.77.0.2/32 dev 10", UNDO),
            (
                "configure_namespace /run/netns/fake:eth0",
                &[
                    "attach_tc_endpoint 10",
                    "upsert_endpoint 10.77.0.2",
                    "delete_link 10",
                    "remove_endpoint 10.77.0.2",
                ],
            ),
            ("attach_tc_endpoint 10", UNDO),
            ("upsert_endpoint 10.77.0.2", UNDO),
        ],
        residue: no_residue,
    })
    .await;
}

#[tokio::test]
async fn add_tap_bridge() {
    // An unfinished TAP is deleted even before it carries the tag: the record says
    // this creation made it.
    const UNDO: &[&str] = &[
        "remove_endpoint 10.77.0.2",
        "forget_links 11",
        "delete_link 11",
    ];
    run(&Case {
        name: "add TAP (bridge)",
        setup: bridge_net,
        op: |rig, net| async move { rig.svc.add_tap(tap_req(net, "vm0")).await.map(drop) }.boxed(),
        steps: &[
            ("create_tap vm0", &["remove_endpoint 10.77.0.2"]),
            ("configure 11 master,alias,up", UNDO),
            ("add_route 10.77.0.2/32 dev 11", UNDO),
            ("add_neighbor 11 10.77.0.2", UNDO),
            ("attach_tc_endpoint 11", UNDO),
            ("upsert_endpoint 10.77.0.2", UNDO),
        ],
        residue: no_residue,
    })
    .await;
}

#[tokio::test]
async fn add_tap_routed() {
    const UNDO: &[&str] = &[
        "remove_endpoint 10.77.0.2",
        "forget_links 10",
        "delete_link 10",
    ];
    run(&Case {
        name: "add TAP (routed)",
        setup: routed_net,
        op: |rig, net| async move { rig.svc.add_tap(tap_req(net, "vm0")).await.map(drop) }.boxed(),
        steps: &[
            ("create_tap vm0", &["remove_endpoint 10.77.0.2"]),
            ("configure 10 alias,up", UNDO),
            ("add_address 10 10.77.0.1/32", UNDO),
            ("add_route 10.77.0.2/32 dev 10", UNDO),
            ("add_neighbor 10 10.77.0.2", UNDO),
            ("attach_tc_endpoint 10", UNDO),
            ("upsert_endpoint 10.77.0.2", UNDO),
        ],
        residue: no_residue,
    })
    .await;
}

#[tokio::test]
async fn publish_two_specs() {
    const UNDO: &[&str] = &["unpublish 6/0.0.0.0:8080", "unpublish 17/0.0.0.0:53"];
    run(&Case {
        name: "publish 8080:80 and 53:53/udp",
        setup: bridge_veth,
        op: |rig, ep| {
            async move {
                rig.svc
                    .publish_ports(publish_req(ep, &["8080:80", "53:53/udp"]))
                    .await
                    .map(drop)
            }
            .boxed()
        },
        steps: &[
            ("publish 6/0.0.0.0:8080", UNDO),
            ("publish 17/0.0.0.0:53", UNDO),
        ],
        // The first publish marked the endpoint as published before the second failed.
        residue: |k, step| {
            if step > 0 {
                marked_published(k, step);
            }
        },
    })
    .await;
}

/// A removal failed at step k stops there (nothing follows the failed call), keeps the
/// record of what it removes, and a retry finishes the job: kernel and records as they
/// were before `add` made what `remove` removes.
async fn run_removal(
    name: &str,
    base: Setup,
    add: Setup,
    remove: Op,
    steps: &[&str],
    recorded: fn(&Records) -> bool,
    residue: fn(&mut Kernel, usize),
) {
    let rig = Rig::new();
    base(&rig).await;
    let ctx = add(&rig).await;
    let m = rig.mark();
    remove(&rig, &ctx).await.expect(name);
    assert_eq!(
        rig.calls_since(m),
        steps,
        "{name}: the calls without failure"
    );
    for (k, call) in steps.iter().enumerate() {
        let rig = Rig::new();
        base(&rig).await;
        let (mut kernel, records) = (rig.kernel(), rig.records().await);
        let ctx = add(&rig).await;
        let m = rig.mark();
        rig.fail_at(m + k);
        assert!(
            remove(&rig, &ctx).await.is_err(),
            "{name}: failing {call} must fail it"
        );
        assert_eq!(
            rig.calls_since(m).len(),
            k + 1,
            "{name}: nothing runs after {call} failed"
        );
        assert!(
            recorded(&rig.records().await),
            "{name}: the record stays when {call} fails"
        );
        rig.world().fail_at = None;
        remove(&rig, &ctx)
            .await
            .unwrap_or_else(|e| panic!("{name}: retry after {call}: {e}"));
        residue(&mut kernel, k);
        assert_eq!(
            rig.kernel(),
            kernel,
            "{name}: the kernel after a retry past {call}"
        );
        assert_eq!(
            rig.records().await,
            records,
            "{name}: the records after a retry past {call}"
        );
    }
}

fn published_veth(rig: &Rig) -> BoxFuture<'_, String> {
    async {
        let ep = rig.veth("web").await;
        rig.svc
            .publish_ports(publish_req(&ep.id, &["8080:80", "53:53/udp"]))
            .await
            .expect("publish");
        ep.id
    }
    .boxed()
}

#[tokio::test]
async fn remove_endpoint_with_ports() {
    run_removal(
        "remove a published endpoint",
        bridge_net,
        published_veth,
        |rig, ep| async move { rig.svc.remove_endpoint(ep).await.map(drop) }.boxed(),
        &[
            "unpublish 6/0.0.0.0:8080",
            "unpublish 17/0.0.0.0:53",
            "remove_endpoint 10.77.0.2",
            "forget_links 11",
            "delete_link 11",
        ],
        |r| r.endpoints.len() == 1 && r.ports.len() == 2,
        no_residue,
    )
    .await;
}

#[tokio::test]
async fn unpublish_endpoint_ports() {
    run_removal(
        "unpublish every port of an endpoint",
        bridge_veth,
        |rig| {
            async {
                let ep = rig.records().await.endpoints[0].id.clone();
                let specs = ["8080:80", "53:53/udp"];
                rig.svc
                    .publish_ports(publish_req(&ep, &specs))
                    .await
                    .expect("publish");
                ep
            }
            .boxed()
        },
        |rig, ep| async move { rig.svc.unpublish_ports(Some(ep), None).await.map(drop) }.boxed(),
        &["unpublish 6/0.0.0.0:8080", "unpublish 17/0.0.0.0:53"],
        |r| r.ports.len() == 2,
        marked_published,
    )
    .await;
}

#[tokio::test]
async fn remove_network_force() {
    run_removal(
        "remove a bridge network with a veth and a TAP (--force)",
        nothing,
        |rig| {
            async {
                rig.network("web", Mode::Bridge).await;
                rig.veth("web").await;
                rig.tap("web", "vm0").await;
                "web".to_owned()
            }
            .boxed()
        },
        |rig, net| async move { rig.svc.remove_network(net, true).await.map(drop) }.boxed(),
        &[
            // Endpoints first, each record released right after its devices go.
            "remove_endpoint 10.77.0.2",
            "forget_links 11",
            "delete_link 11",
            "remove_endpoint 10.77.0.3",
            "forget_links 12",
            "delete_link 12",
            "remove_masq_subnet 10.77.0.0/24",
            "set_no_masquerade 1 []",
            "remove_uplink 2",
            "forget_links 2",
            "forget_links 10",
            "delete_link 10",
        ],
        |r| r.networks.len() == 1,
        no_residue,
    )
    .await;
}
