//! Every multi-step operation, failed at each of its steps in turn. A case is a table:
//! the operation's calls in order, and for each one the calls that follow when it
//! fails (the undo, and whatever else still runs). After the failure, the kernel model
//! and the records must be as they were before the operation; for removals, a retry
//! must finish the job.
//!
//! One table serves both network modes and both stacks: a step tagged [`On::Bridge`] or
//! [`On::Routed`] is only made in that mode, one tagged [`On::Dual`] (and its
//! [`On::BridgeDual`], [`On::RoutedDual`]) only in a dual-stack network (10.77.0.0/24
//! and fd77::/64); `$dev` stands for the endpoint's host-side device (ifindex 11
//! behind a bridge, which took 10; 10 in a routed network), `$ep` for the endpoint's
//! addresses as its map writes name them (`10.77.0.2`, dual-stack `10.77.0.2 fd77::2`).

use futures::{FutureExt, future::BoxFuture};

use super::*;

type Setup = for<'a> fn(&'a Rig, Mode) -> BoxFuture<'a, String>;
type Op = for<'a> fn(&'a Rig, Mode, &'a str) -> BoxFuture<'a, Result<(), ServiceError>>;

/// In which networks a step is made: by mode, and (`…Dual`) only when dual-stack.
#[derive(Clone, Copy, PartialEq)]
enum On {
    Both,
    Bridge,
    Routed,
    Dual,
    BridgeDual,
    RoutedDual,
}

impl On {
    fn applies(self, mode: Mode, dual: bool) -> bool {
        let bridge = mode == Mode::Bridge;
        match self {
            On::Both => true,
            On::Bridge => bridge,
            On::Routed => !bridge,
            On::Dual => dual,
            On::BridgeDual => dual && bridge,
            On::RoutedDual => dual && !bridge,
        }
    }
}

/// (mode, call, what follows when that call fails).
type Step = (On, &'static str, &'static [&'static str]);

struct Case {
    name: &'static str,
    modes: &'static [Mode],
    /// Builds what the operation needs; returns an id for it (an endpoint's, say).
    setup: Setup,
    op: Op,
    steps: Vec<Step>,
    /// Whether the network is dual-stack (the `…Dual` steps are made).
    dual: bool,
    /// What a failure at step k legitimately leaves changed (see the publish case).
    residue: fn(&mut Kernel, usize),
}

impl Case {
    /// `op` on a network `web` made in each mode, leaving nothing behind when it fails.
    fn new(name: &'static str, op: Op, steps: &[Step]) -> Case {
        let residue = no_residue;
        let (modes, setup) = (BOTH_MODES, network);
        Case {
            name,
            modes,
            setup,
            op,
            steps: steps.to_vec(),
            dual: false,
            residue,
        }
    }

    /// The same case in a dual-stack network, made by `setup`.
    fn dual(self, setup: Setup) -> Case {
        Case {
            dual: true,
            setup,
            ..self
        }
    }
}

const BOTH_MODES: &[Mode] = &[Mode::Bridge, Mode::Routed];

fn no_residue(_: &mut Kernel, _: usize) {}

/// A publish marks its endpoint as published, and the mark stays when the ports go:
/// it only makes the uplink program look the port up.
fn marked_published(k: &mut Kernel, _: usize) {
    let ep = k.endpoints.get_mut(&"10.77.0.2".parse().expect("ip"));
    ep.expect("endpoint").flags |= netpath_common::maps::ENDPOINT_FLAG_PUBLISHED;
}

/// `case`'s table for `mode`: its steps, `$dev` and `$ep` replaced.
fn steps_in(case: &Case, mode: Mode) -> Vec<(String, Vec<String>)> {
    let dev = match mode {
        Mode::Bridge => "11",
        Mode::Routed => "10",
    };
    let ep = if case.dual {
        "10.77.0.2 fd77::2"
    } else {
        "10.77.0.2"
    };
    // A dual-stack network's masquerade covers its IPv6 subnet too (NAT66).
    let masq = if case.dual {
        "10.77.0.0/24 fd77::/64"
    } else {
        "10.77.0.0/24"
    };
    let fill = |s: &str| {
        s.replace("$dev", dev)
            .replace("$ep", ep)
            .replace("$masq", masq)
    };
    let steps = case.steps.iter().filter(|s| s.0.applies(mode, case.dual));
    steps
        .map(|(_, call, after)| (fill(call), after.iter().map(|a| fill(a)).collect()))
        .collect()
}

/// Runs `case` in each of its modes once without failure (its calls must be exactly
/// the table's), then once per step failing there.
async fn run(case: Case) {
    for &mode in case.modes {
        let stack = if case.dual { ", dual-stack" } else { "" };
        let name = format!("{} ({mode:?}{stack})", case.name);
        let steps = steps_in(&case, mode);
        let rig = Rig::new();
        let ctx = (case.setup)(&rig, mode).await;
        let m = rig.mark();
        (case.op)(&rig, mode, &ctx).await.expect(&name);
        let forward: Vec<&str> = steps.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            rig.calls_since(m),
            forward,
            "{name}: the calls without failure"
        );
        for (k, (call, after)) in steps.iter().enumerate() {
            let rig = Rig::new();
            let ctx = (case.setup)(&rig, mode).await;
            let (mut kernel, records) = (rig.kernel(), rig.records().await);
            let m = rig.mark();
            rig.fail_at(m + k);
            let err = (case.op)(&rig, mode, &ctx).await;
            assert!(
                err.is_err(),
                "{name}: failing {call} (step {k}) must fail the operation"
            );
            let calls = rig.calls_since(m);
            assert_eq!(
                calls[..=k],
                forward[..=k],
                "{name}: the calls up to step {k}"
            );
            assert_eq!(
                &calls[k + 1..],
                after,
                "{name}: the calls after {call} failed"
            );
            (case.residue)(&mut kernel, k);
            let kernel_now = rig.kernel();
            assert_eq!(kernel_now, kernel, "{name}: the kernel after {call} failed");
            let records_now = rig.records().await;
            assert_eq!(
                records_now, records,
                "{name}: the records after {call} failed"
            );
        }
    }
}

fn nothing(_: &Rig, _: Mode) -> BoxFuture<'_, String> {
    async { String::new() }.boxed()
}
fn network(rig: &Rig, mode: Mode) -> BoxFuture<'_, String> {
    async move { rig.network("web", mode).await.name }.boxed()
}
/// A dual-stack network `web`: 10.77.0.0/24 and fd77::/64.
fn dual_req(mode: Mode) -> NetworkCreate {
    NetworkCreate {
        subnet6: Some("fd77::/64".parse().expect("subnet6")),
        ..net_req("web", mode)
    }
}
fn dual_network(rig: &Rig, mode: Mode) -> BoxFuture<'_, String> {
    async move {
        let req = dual_req(mode);
        rig.svc
            .create_network(req)
            .await
            .expect("dual-stack network")
            .name
    }
    .boxed()
}
fn veth(rig: &Rig, mode: Mode) -> BoxFuture<'_, String> {
    async move {
        rig.network("web", mode).await;
        rig.veth("web").await.id
    }
    .boxed()
}

const MASQ_UNDO: &[&str] = &[
    "remove_masq_subnet $masq",
    "set_no_masquerade 1 []",
    "remove_uplink 2",
    "forget_links 2",
];
const MASQ_AND_BRIDGE_UNDO: &[&str] = &[
    "remove_masq_subnet $masq",
    "set_no_masquerade 1 []",
    "remove_uplink 2",
    "forget_links 2",
    "forget_links 10",
    "delete_link 10",
];

#[tokio::test]
async fn create_network() {
    // Whichever masquerade call fails, the masquerade is undone whole.
    let masq = MASQ_CALLS.map(|call| {
        let call = match call {
            "add_masq_subnet 10.77.0.0/24" => "add_masq_subnet $masq",
            call => call,
        };
        (On::Both, call, MASQ_UNDO)
    });
    let rest = [
        // IPv6 forwarding stays on, as IPv4's does.
        (On::Dual, "enable_ipv6_forwarding eth0", MASQ_UNDO),
        // The bridge is not made: nothing to delete.
        (On::Bridge, "ensure_bridge np-web", MASQ_UNDO),
        (
            On::Bridge,
            "add_address 10 10.77.0.1/24",
            MASQ_AND_BRIDGE_UNDO,
        ),
        // The bridge carries the IPv6 gateway too.
        (
            On::BridgeDual,
            "add_address 10 fd77::1/64",
            MASQ_AND_BRIDGE_UNDO,
        ),
        (On::Bridge, "set_up 10", MASQ_AND_BRIDGE_UNDO),
        (On::Bridge, "attach_tc ingress 10", MASQ_AND_BRIDGE_UNDO),
    ];
    let steps = &[masq.as_slice(), &rest].concat();
    let v4: Op = |rig, mode, _| {
        async move { rig.svc.create_network(net_req("web", mode)).await.map(drop) }.boxed()
    };
    let dual: Op = |rig, mode, _| {
        async move { rig.svc.create_network(dual_req(mode)).await.map(drop) }.boxed()
    };
    run(Case {
        setup: nothing,
        ..Case::new("create network", v4, steps)
    })
    .await;
    run(Case {
        op: dual,
        ..Case::new("create network", v4, steps).dual(nothing)
    })
    .await;
}

const UNDO_VETH: &[&str] = &["delete_link $dev", "remove_endpoint $ep"];

/// The steps of a veth endpoint's add: the pair made by `create`, and, unless the
/// container end stays on the host, its configuration inside by `inside`.
fn veth_steps(create: &'static str, inside: Option<&'static str>) -> Vec<Step> {
    let mut steps: Vec<Step> = vec![
        // Nothing made; the record's map entry is removed (absent is fine).
        (On::Both, create, &["remove_endpoint $ep"]),
        (On::Both, "configure $dev alias,up", UNDO_VETH),
        // Routed: the gateways on the host end, a host route to each address.
        (On::Routed, "add_address $dev 10.77.0.1/32", UNDO_VETH),
        (On::Routed, "add_route 10.77.0.2/32 dev $dev", UNDO_VETH),
        (On::RoutedDual, "add_address $dev fd77::1/128", UNDO_VETH),
        (On::RoutedDual, "add_route fd77::2/128 dev $dev", UNDO_VETH),
    ];
    if let Some(inside) = inside {
        // The datapath is registered while the namespace side is configured, so it
        // still happens, and is undone with the rest.
        let after: &[&str] = &[
            "attach_tc_endpoint $dev",
            "upsert_endpoint $ep",
            "delete_link $dev",
            "remove_endpoint $ep",
        ];
        steps.push((On::Both, inside, after));
    }
    steps.push((On::Both, "attach_tc_endpoint $dev", UNDO_VETH));
    steps.push((On::Both, "upsert_endpoint $ep", UNDO_VETH));
    steps
}

#[tokio::test]
async fn add_endpoint() {
    let op: Op =
        |rig, _, net| async move { rig.svc.add_endpoint(veth_req(net)).await.map(drop) }.boxed();
    let steps = veth_steps(
        "create_veth /run/netns/fake:eth0",
        Some("configure_namespace /run/netns/fake:eth0"),
    );
    run(Case::new("add endpoint", op, &steps)).await;
    run(Case::new("add endpoint", op, &steps).dual(dual_network)).await;
}

#[tokio::test]
async fn add_endpoint_left_in_the_host_namespace() {
    // Docker's Join: the container end stays on the host, and nothing is configured
    // inside (libnetwork does that after moving it).
    let op: Op = |rig, _, net| {
        async move {
            let req = EndpointCreate {
                netns: None,
                peer: Some("npdtest".into()),
                ..veth_req(net)
            };
            rig.svc.add_endpoint(req).await.map(drop)
        }
        .boxed()
    };
    let steps = veth_steps("create_veth host:npdtest", None);
    let name = "add endpoint, peer on the host";
    run(Case::new(name, op, &steps)).await;
    run(Case::new(name, op, &steps).dual(dual_network)).await;
}

#[tokio::test]
async fn add_tap() {
    // An unfinished TAP is deleted even before it carries the tag: the record says
    // this creation made it.
    const UNDO: &[&str] = &[
        "remove_endpoint 10.77.0.2",
        "forget_links $dev",
        "delete_link $dev",
    ];
    let op: Op =
        |rig, _, net| async move { rig.svc.add_tap(tap_req(net, "vm0")).await.map(drop) }.boxed();
    run(Case::new(
        "add TAP",
        op,
        &[
            (On::Both, "create_tap vm0", &["remove_endpoint 10.77.0.2"]),
            (On::Bridge, "configure $dev master,alias,up", UNDO),
            (On::Routed, "configure $dev alias,up", UNDO),
            (On::Routed, "add_address $dev 10.77.0.1/32", UNDO),
            (On::Both, "add_route 10.77.0.2/32 dev $dev", UNDO),
            (On::Both, "add_neighbor $dev 10.77.0.2", UNDO),
            (On::Both, "attach_tc_endpoint $dev", UNDO),
            (On::Both, "upsert_endpoint 10.77.0.2", UNDO),
        ],
    ))
    .await;
}

/// `8080:80` and `53:53/udp`: a lease a spec on an IPv4-only endpoint, one per family
/// on a dual-stack one (a spec without HOSTIP); all or none.
#[tokio::test]
async fn publish_two_specs() {
    const UNDO: &[&str] = &["unpublish 6/0.0.0.0:8080", "unpublish 17/0.0.0.0:53"];
    const UNDO_DUAL: &[&str] = &[
        "unpublish 6/0.0.0.0:8080",
        "unpublish6 6/[::]:8080",
        "unpublish 17/0.0.0.0:53",
        "unpublish6 17/[::]:53",
    ];
    let op: Op = |rig, _, ep| {
        let req = publish_req(ep, &["8080:80", "53:53/udp"]);
        async move { rig.svc.publish_ports(req).await.map(drop) }.boxed()
    };
    // The first publish marked the endpoint as published before a later one failed.
    let residue: fn(&mut Kernel, usize) = |k, step| {
        if step > 0 {
            marked_published(k, step);
        }
    };
    let ipv4 = &[
        (On::Both, "publish 6/0.0.0.0:8080", UNDO),
        (On::Both, "publish 17/0.0.0.0:53", UNDO),
    ];
    run(Case {
        modes: &[Mode::Bridge],
        setup: veth,
        residue,
        ..Case::new("publish 8080:80 and 53:53/udp", op, ipv4)
    })
    .await;
    let dual = &[
        (On::Both, "publish 6/0.0.0.0:8080", UNDO_DUAL),
        (On::Both, "publish6 6/[::]:8080", UNDO_DUAL),
        (On::Both, "publish 17/0.0.0.0:53", UNDO_DUAL),
        (On::Both, "publish6 17/[::]:53", UNDO_DUAL),
    ];
    run(Case {
        modes: &[Mode::Bridge],
        residue,
        ..Case::new("publish 8080:80 and 53:53/udp, dual-stack", op, dual).dual(dual_veth)
    })
    .await;
}

fn dual_veth(rig: &Rig, mode: Mode) -> BoxFuture<'_, String> {
    async move {
        dual_network(rig, mode).await;
        rig.veth("web").await.id
    }
    .boxed()
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
    // The removals' networks are IPv4-only.
    let steps: Vec<String> = steps
        .iter()
        .map(|s| s.replace("$masq", "10.77.0.0/24"))
        .collect();
    let rig = Rig::new();
    base(&rig, Mode::Bridge).await;
    let ctx = add(&rig, Mode::Bridge).await;
    let m = rig.mark();
    remove(&rig, Mode::Bridge, &ctx).await.expect(name);
    assert_eq!(
        rig.calls_since(m),
        steps,
        "{name}: the calls without failure"
    );
    for (k, call) in steps.iter().enumerate() {
        let rig = Rig::new();
        base(&rig, Mode::Bridge).await;
        let (mut kernel, records) = (rig.kernel(), rig.records().await);
        let ctx = add(&rig, Mode::Bridge).await;
        let m = rig.mark();
        rig.fail_at(m + k);
        assert!(
            remove(&rig, Mode::Bridge, &ctx).await.is_err(),
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
        remove(&rig, Mode::Bridge, &ctx)
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

fn published_veth(rig: &Rig, _: Mode) -> BoxFuture<'_, String> {
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
        network,
        published_veth,
        |rig, _, ep| async move { rig.svc.remove_endpoint(ep).await.map(drop) }.boxed(),
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
        veth,
        |rig, _| {
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
        |rig, _, ep| async move { rig.svc.unpublish_ports(Some(ep), None).await.map(drop) }.boxed(),
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
        |rig, _| {
            async {
                rig.network("web", Mode::Bridge).await;
                rig.veth("web").await;
                rig.tap("web", "vm0").await;
                "web".to_owned()
            }
            .boxed()
        },
        |rig, _, net| async move { rig.svc.remove_network(net, true).await.map(drop) }.boxed(),
        &[
            // Endpoints first, each record released right after its devices go…
            &[
                "remove_endpoint 10.77.0.2",
                "forget_links 11",
                "delete_link 11",
                "remove_endpoint 10.77.0.3",
                "forget_links 12",
                "delete_link 12",
            ],
            // …then the network, as a creation failed at its last step is undone.
            MASQ_AND_BRIDGE_UNDO,
        ]
        .concat(),
        |r| r.networks.len() == 1,
        no_residue,
    )
    .await;
}
