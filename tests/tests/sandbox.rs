//! A container endpoint's kernel side: a veth pair born across the namespace boundary,
//! address, default route, static gateway neighbor; the container reaches its gateway.

use std::net::Ipv4Addr;

use netpath::{
    netlink::{LinkConfig, Netlink},
    sandbox::{Inner, Ipv4Side, NamespaceSide, VethPlan, configure_inside, create_veth},
};
use netpath_tests::{NetNs, require_root, run, unique};

#[tokio::test(flavor = "current_thread")]
async fn veth_endpoint_in_bridge_mode_reaches_its_gateway() {
    require_root!();
    let nl = Netlink::connect().unwrap();
    let br_name = unique("npbr");
    let gw = Ipv4Addr::new(10, 202, 0, 1);
    let br = nl
        .ensure_bridge(&br_name, "netpath:test:bridge:x", None)
        .await
        .unwrap();
    struct DelLink(String);
    impl Drop for DelLink {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .output();
        }
    }
    let _br_guard = DelLink(br_name.clone());
    nl.add_address(br.index, gw.into(), 24).await.unwrap();
    nl.set_up(br.index).await.unwrap();
    let ns = NetNs::new("sb");
    let host = unique("np-");
    let _host_guard = DelLink(host.clone());
    let mac = [0x02, 0, 0, 0xaa, 0xbb, 0xcc];
    // The kernel pieces `control::endpoints` puts together (its order and undo are unit
    // tests over the fakes): the pair, the host end's one configuration request, and
    // the namespace side.
    let plan = VethPlan {
        host_ifname: &host,
        alias: "netpath:test:veth:x",
        inner: Inner::Namespace {
            netns: &ns.path(),
            ifname: "eth0",
        },
        mac,
        v4: Some(Ipv4Side {
            ip: Ipv4Addr::new(10, 202, 0, 2),
            prefix_len: 24,
            gateway: gw,
        }),
        gateway_mac: br.mac,
        mtu: 1500,
        bridge: Some(br.index),
        routed: false,
        v6: None,
    };
    let link = create_veth(&nl, &plan).await.expect("create the pair");
    let host_side = LinkConfig {
        alias: Some(plan.alias),
        up: true,
        no_ipv6_link_local: true,
        ..Default::default()
    };
    nl.configure(link.index, &host_side)
        .await
        .expect("host end");
    configure_inside(NamespaceSide {
        netns: ns.path(),
        ifname: "eth0".into(),
        v4: plan.v4,
        gateway_mac: br.mac.expect("bridge MAC"),
        routed: false,
        v6: None,
    })
    .await
    .expect("namespace side");
    assert_eq!(link.name, host);
    let host_link = nl.link_by_index(link.index).await.unwrap().unwrap();
    assert_eq!(host_link.master, Some(br.index));

    let addr =
        String::from_utf8(ns.exec(&["ip", "-o", "addr", "show", "dev", "eth0"]).stdout).unwrap();
    assert!(addr.contains("10.202.0.2/24"), "{addr}");
    let link_show =
        String::from_utf8(ns.exec(&["ip", "-o", "link", "show", "eth0"]).stdout).unwrap();
    assert!(link_show.contains("02:00:00:aa:bb:cc"), "{link_show}");
    let routes = String::from_utf8(ns.exec(&["ip", "route"]).stdout).unwrap();
    assert!(
        routes.contains("default via 10.202.0.1 dev eth0"),
        "{routes}"
    );
    let neigh = String::from_utf8(ns.exec(&["ip", "neigh", "show", "10.202.0.1"]).stdout).unwrap();
    assert!(neigh.contains("PERMANENT"), "{neigh}");
    ns.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.202.0.1"]);
    // No IPv6 link-local on either end: a new endpoint sends no DAD or MLD packets for
    // the bridge to flood to every other port.
    let inside = String::from_utf8(ns.exec(&["ip", "-d", "link", "show", "eth0"]).stdout).unwrap();
    assert!(inside.contains("addrgenmode none"), "{inside}");
    let stdout = |args: &[&str]| String::from_utf8(run(args).stdout).unwrap();
    let host_detail = stdout(&["ip", "-d", "link", "show", &host]);
    assert!(host_detail.contains("addrgenmode none"), "{host_detail}");
    let host_v6 = stdout(&["ip", "-6", "addr", "show", "dev", &host]);
    assert!(!host_v6.contains("inet6"), "{host_v6}");
}

/// A netlink socket runs one dump at a time: concurrent tasks sharing one connection
/// (the daemon's address refresh beside API requests) must take turns, not get EBUSY.
/// Multi-part dumps (hundreds of links and addresses) keep each dump open long enough
/// for the others to collide.
/// Docker's Join: the container end stays in the host's namespace, down, with the MAC
/// and MTU asked for, for libnetwork to move; deleting the host end takes it along.
#[tokio::test(flavor = "current_thread")]
async fn a_container_end_left_in_the_host_namespace() {
    require_root!();
    let nl = Netlink::connect().unwrap();
    let (host, peer) = (unique("np-"), unique("npd"));
    let mac = [0x02, 0, 0, 0xaa, 0xbb, 0xcd];
    let plan = VethPlan {
        host_ifname: &host,
        alias: "netpath:test:veth:y",
        inner: Inner::Host { name: &peer },
        mac,
        v4: Some(Ipv4Side {
            ip: Ipv4Addr::new(10, 202, 1, 2),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 202, 1, 1),
        }),
        gateway_mac: None,
        mtu: 1400,
        bridge: None,
        routed: true,
        v6: None,
    };
    let link = create_veth(&nl, &plan).await.expect("create the pair");
    let seen = nl.link_by_name(&peer).await.unwrap();
    let _ = nl.delete_link(link.index).await;
    let seen = seen.expect("the container end is in the host's namespace");
    assert_eq!(seen.mac, Some(mac));
    let shown = run(&["ip", "-j", "link", "show"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        !shown.contains(&peer),
        "the container end outlived its host end"
    );
    // A name the host has is refused, naming it.
    let taken = VethPlan {
        inner: Inner::Host { name: "lo" },
        ..plan
    };
    let err = create_veth(&nl, &taken).await.expect_err("lo is taken");
    assert_eq!(
        err.to_string(),
        "the host already has an interface named lo"
    );
    assert!(nl.link_by_name(&host).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_dumps_on_one_connection_do_not_collide() {
    require_root!();
    let ns = NetNs::new("dump");
    let lines: String = (0..300)
        .map(|i| {
            format!(
                "link add d{i} type bridge\naddress add 10.{}.{}.1/24 dev d{i}\n",
                i / 250,
                i % 250
            )
        })
        .collect();
    let mut ip = std::process::Command::new("ip")
        .args(["-n", ns.name(), "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    ip.stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(ip.wait().unwrap().success());
    let nl = Netlink::connect_in(&ns.path()).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let nl = nl.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    assert_eq!(nl.links().await.expect("link dump").len(), 301);
                    let addresses = nl.all_addresses().await.expect("address dump");
                    // 300 and 127.0.0.1
                    assert_eq!(addresses.iter().filter(|a| a.is_ipv4()).count(), 301);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
