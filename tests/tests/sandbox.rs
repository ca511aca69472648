//! A container endpoint's plumbing: veth, move into the netns, address, default route,
//! static gateway neighbor; the container reaches its gateway.

use std::net::Ipv4Addr;

use netpath::{
    netlink::Netlink,
    sandbox::{SandboxError, VethPlan, create_veth_endpoint},
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
    let link = create_veth_endpoint(
        &nl,
        &VethPlan {
            host_ifname: &host,
            alias: "netpath:test:veth:x",
            netns: &ns.path(),
            ifname: "eth0",
            mac,
            ip: Ipv4Addr::new(10, 202, 0, 2),
            prefix_len: 24,
            gateway: gw,
            gateway_mac: br.mac,
            mtu: 1500,
            bridge: Some(br.index),
            routed: false,
        },
        |_| Ok::<(), SandboxError>(()),
    )
    .await
    .expect("create endpoint");
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
