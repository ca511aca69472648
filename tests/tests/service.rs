//! The control plane in process: networks, 64 parallel container endpoints, 16 TAPs,
//! removal; every namespace gets its interface, address, route and gateway neighbor.

use std::{collections::HashSet, net::Ipv4Addr, sync::Arc};

use netpath::{
    control::Service,
    model::{EndpointCreate, Mode, NetworkCreate, TapCreate},
};
use netpath_tests::{DaemonPaths, NetNs, ResetOnDrop, require_root, run, unique};

/// A service in process on private paths, and what resets them when the test ends.
async fn open_service() -> (DaemonPaths, ResetOnDrop, Arc<Service>) {
    let d = DaemonPaths::new();
    let reset = ResetOnDrop(d.to_paths());
    let svc = Service::open(d.to_paths(), false, netpath::control::EPHEMERAL_PORTS)
        .await
        .expect("open service");
    (d, reset, Arc::new(svc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_parallel_endpoints_reach_their_gateway() {
    require_root!();
    let (_d, _t, svc) = open_service().await;
    let name = unique("n");
    let net = svc
        .create_network(NetworkCreate {
            name: name.clone(),
            subnet: Some("10.203.0.0/16".parse().unwrap()),
            mode: Mode::Bridge,
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
        .expect("create network");
    assert_eq!(net.gateway, Some(Ipv4Addr::new(10, 203, 0, 1)));

    let namespaces: Vec<NetNs> = (0..64).map(|_| NetNs::new("ep")).collect();
    let mut tasks = Vec::new();
    for ns in &namespaces {
        let svc = svc.clone();
        let req = EndpointCreate {
            network: name.clone(),
            netns: Some(ns.path()),
            pid: None,
            ip: None,
            ip6: None,
            ifname: None,
            mac: None,
            container_id: None,
            peer: None,
        };
        tasks.push(tokio::spawn(async move { svc.add_endpoint(req).await }));
    }
    let mut eps = Vec::new();
    for t in tasks {
        eps.push(t.await.unwrap().expect("add endpoint"));
    }
    let ips: HashSet<Ipv4Addr> = eps.iter().map(|e| e.ip.expect("IPv4")).collect();
    assert_eq!(ips.len(), 64, "IPs are not distinct");
    for (ns, ep) in namespaces.iter().zip(&eps) {
        let addr = String::from_utf8(ns.exec(&["ip", "-o", "addr", "show", "dev", "eth0"]).stdout)
            .unwrap();
        assert!(
            addr.contains(&format!("{}/16", ep.ip.expect("IPv4"))),
            "{addr}"
        );
        let routes = String::from_utf8(ns.exec(&["ip", "route"]).stdout).unwrap();
        assert!(
            routes.contains("default via 10.203.0.1 dev eth0"),
            "{routes}"
        );
        let neigh =
            String::from_utf8(ns.exec(&["ip", "neigh", "show", "10.203.0.1"]).stdout).unwrap();
        assert!(neigh.contains("PERMANENT"), "{neigh}");
    }
    // Each can ping the gateway (bounded: 1 packet, 2 s).
    for ns in &namespaces {
        ns.exec(&["ping", "-c", "1", "-W", "2", "10.203.0.1"]);
    }
    // Removing endpoints removes their devices.
    for ep in &eps[..8] {
        svc.remove_endpoint(&ep.id).await.expect("remove endpoint");
        let out = std::process::Command::new("ip")
            .args(["link", "show", &ep.host_ifname])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{} still exists", ep.host_ifname);
    }
    assert_eq!(svc.list_endpoints(Some(&name)).await.unwrap().len(), 56);
    let err = svc.remove_network(&name, false).await.unwrap_err();
    assert!(
        matches!(
            err,
            netpath::control::ServiceError::State(netpath::state::StateError::NetworkInUse {
                endpoints: 56,
                ..
            })
        ),
        "{err}"
    );
    svc.remove_network(&name, true).await.expect("force remove");
    let links = String::from_utf8(run(&["ip", "-o", "link"]).stdout).unwrap();
    for ep in &eps {
        assert!(
            !links.contains(&ep.host_ifname),
            "{} left behind",
            ep.host_ifname
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_taps_with_owner_and_host_routes() {
    require_root!();
    let (_d, _t, svc) = open_service().await;
    let name = unique("r");
    svc.create_network(NetworkCreate {
        name: name.clone(),
        subnet: Some("10.204.0.0/24".parse().unwrap()),
        mode: Mode::Routed,
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
    .expect("create routed network");
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let svc = svc.clone();
        let req = TapCreate {
            network: name.clone(),
            name: unique("tap"),
            uid: Some(1000 + i),
            gid: Some(2000 + i),
            queues: Some(if i % 4 == 0 { 2 } else { 1 }),
            ip: None,
            ip6: None,
            mac: None,
        };
        tasks.push(tokio::spawn(async move { svc.add_tap(req).await }));
    }
    let mut eps = Vec::new();
    for t in tasks {
        eps.push(t.await.unwrap().expect("add tap"));
    }
    let ips: HashSet<Ipv4Addr> = eps.iter().map(|e| e.ip.expect("IPv4")).collect();
    assert_eq!(ips.len(), 16);
    let routes = String::from_utf8(run(&["ip", "-4", "route", "show"]).stdout).unwrap();
    for ep in &eps {
        assert_eq!(ep.prefix_len, 32);
        let sys = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{}/{f}", ep.host_ifname))
                .unwrap()
                .trim()
                .to_owned()
        };
        assert_eq!(sys("owner"), ep.details.uid.unwrap().to_string());
        assert_eq!(sys("group"), ep.details.gid.unwrap().to_string());
        assert!(
            routes.contains(&format!("{} dev {}", ep.ip.expect("IPv4"), ep.host_ifname)),
            "no /32 route for {:?} in {routes}",
            ep.ip
        );
    }
    for ep in &eps {
        svc.remove_endpoint(&ep.id).await.expect("remove tap");
        assert!(
            !std::path::Path::new("/sys/class/net")
                .join(&ep.host_ifname)
                .exists()
        );
    }
}

/// A bridge-mode network holds 1,023 endpoints — a Linux bridge's port numbers are
/// 1 to 1,023 — and refuses the next one clearly, before any device is made (the
/// kernel's own refusal would be "Exchange full" halfway through the add). The kernel
/// agrees: one more port on that bridge fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bridge_refuses_another_endpoint_clearly_and_changes_nothing() {
    require_root!();
    let (d, _t, svc) = open_service().await;
    let name = unique("bf");
    let net = svc
        .create_network(NetworkCreate {
            name: name.clone(),
            subnet: Some("10.232.0.0/21".parse().unwrap()),
            mode: Mode::Bridge,
            ..NetworkCreate::default()
        })
        .await
        .expect("create network");
    // Container ends left in the host's namespace (as Docker's are before Join): no
    // namespace per endpoint. 16 adds at a time.
    let req = |peer: String| EndpointCreate {
        network: name.clone(),
        peer: Some(peer),
        ..EndpointCreate::default()
    };
    let mut added = 0;
    while added < netpath::state::BRIDGE_MAX_PORTS {
        let batch = (netpath::state::BRIDGE_MAX_PORTS - added).min(16);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let (svc, req) = (svc.clone(), req(unique("bp")));
                tokio::spawn(async move { svc.add_endpoint(req).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().expect("add endpoint");
        }
        added += batch;
    }
    // This service's links (other tests make and remove theirs meanwhile).
    let tag = format!("netpath:{}:", d.to_paths().instance());
    let links = || {
        let out = run(&["ip", "-j", "-d", "link", "show"]);
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ours = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["ifalias"].as_str().is_some_and(|a| a.starts_with(&tag)));
        ours.map(|l| l["ifname"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let (links_before, records_before) = (links(), svc.list_endpoints(None).await.unwrap());
    assert_eq!(records_before.len(), 1023);
    let peer = unique("bp");
    let err = svc.add_endpoint(req(peer.clone())).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "network \"{name}\" has 1023 endpoints, as many as a Linux bridge takes ports"
        )),
        "{err}"
    );
    assert!(
        err.hint().is_some_and(|h| h.contains("--mode routed")),
        "{err:?}"
    );
    assert_eq!(
        links(),
        links_before,
        "a device of this service was made or removed"
    );
    assert!(!std::path::Path::new("/sys/class/net").join(&peer).exists());
    assert_eq!(svc.list_endpoints(None).await.unwrap(), records_before);
    // The kernel's limit is the same: a 1,024th port on the bridge is refused.
    let bridge = net.bridge.clone().expect("a bridge");
    let (x, y) = (unique("bx"), unique("by"));
    run(&["ip", "link", "add", &x, "type", "veth", "peer", "name", &y]);
    let out = std::process::Command::new("ip")
        .args(["link", "set", &x, "master", &bridge])
        .output()
        .unwrap();
    run(&["ip", "link", "del", &x]);
    assert!(!out.status.success(), "the bridge took a 1,024th port");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Exchange full"), "{said}");
    svc.remove_network(&name, true)
        .await
        .expect("remove network");
}
