//! Dual-stack networks through the daemon and its CLI: a container of a network with an
//! IPv6 subnet gets its IPv6 address (without duplicate address detection), a default
//! route via the IPv6 gateway and a permanent neighbour entry for it, and reaches its
//! gateway and the other containers over IPv6 (routed: through the host, whose IPv6
//! forwarding the daemon turns on, and this test turns back). An IPv4-only network's
//! containers get no IPv6 address at all, and an IPv6-only network's no IPv4: what IPv4
//! and ARP they send is dropped and counted.

use std::time::Duration;

use netpath_tests::{
    Daemon, Ipv6ForwardingRestored, NetNs, frames,
    guard6::ep_mac,
    raw::{Capture, send_raw},
    require_root, unique,
};
use serde_json::Value;

/// `ip` inside `ns`, its output as text.
fn ip(ns: &NetNs, args: &[&str]) -> String {
    let mut all = vec!["ip"];
    all.extend_from_slice(args);
    String::from_utf8(ns.exec(&all).stdout).expect("utf-8")
}

fn add(d: &Daemon, network: &str, ns: &NetNs, more: &[&str]) -> Value {
    let path = ns.path();
    let mut args = vec![
        "endpoint",
        "add",
        network,
        "--netns",
        path.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(more);
    serde_json::from_str(&d.ok(&args)).expect("endpoint JSON")
}

#[test]
fn dual_stack_containers_get_ipv6_and_reach_their_gateway_and_each_other() {
    require_root!();
    let _forwarding = Ipv6ForwardingRestored::new();
    let d = Daemon::start();
    for (mode, subnet, subnet6, prefix) in [
        ("bridge", "10.241.0.0/24", "fd41::/64", "64"),
        ("routed", "10.242.0.0/24", "fd42::/64", "128"),
    ] {
        let name = unique("ds");
        d.ok(&[
            "network", "create", &name, "--subnet", subnet6, "--subnet", subnet, "--mode", mode,
        ]);
        let (a, b) = (NetNs::with_ipv6("dsa"), NetNs::with_ipv6("dsb"));
        let ea = add(&d, &name, &a, &[]);
        let gw6 = subnet6.replace("::/64", "::1");
        let wanted = subnet6.replace("::/64", "::beef");
        let eb = add(&d, &name, &b, &["--ip", &wanted]);
        assert_eq!(ea["ip6"], subnet6.replace("::/64", "::2"), "{mode}: {ea}");
        assert_eq!(eb["ip6"], wanted.as_str(), "{mode}: {eb}");
        assert_eq!(ea["gateway6"], gw6.as_str(), "{mode}: {ea}");
        for (ns, ep) in [(&a, &ea), (&b, &eb)] {
            let ip6 = ep["ip6"].as_str().unwrap();
            let addr = ip(ns, &["-6", "-o", "addr", "show", "dev", "eth0"]);
            assert!(addr.contains(&format!("{ip6}/{prefix}")), "{mode}: {addr}");
            assert!(
                addr.contains("nodad") && !addr.contains("tentative"),
                "{mode}: {addr}"
            );
            let routes = ip(ns, &["-6", "route"]);
            assert!(
                routes.contains(&format!("default via {gw6} dev eth0")),
                "{mode}: {routes}"
            );
            let neigh = ip(ns, &["-6", "neigh", "show", &gw6]);
            assert!(neigh.contains("PERMANENT"), "{mode}: {neigh}");
            // Bounded: one echo, two seconds (exec asserts success).
            ns.exec(&["ping", "-6", "-c", "1", "-W", "2", &gw6]);
        }
        // Endpoint to endpoint: over the bridge, or routed by the host.
        let to = eb["ip6"].as_str().unwrap();
        a.exec(&["ping", "-6", "-c", "1", "-W", "2", to]);
        // The network's listing shows both families.
        let ls = d.ok(&["network", "ls"]);
        assert!(ls.contains(&format!("{subnet},{subnet6}")), "{ls}");
    }
    // A container whose namespace has IPv6 off cannot join a dual-stack network: a
    // clear error, nothing left behind.
    let name = unique("ds");
    d.ok(&[
        "network",
        "create",
        &name,
        "--subnet",
        "10.244.0.0/24",
        "--subnet",
        "fd44::/64",
    ]);
    let off = NetNs::new("dsoff");
    let path = off.path();
    d.refused(
        &["endpoint", "add", &name, "--netns", path.to_str().unwrap()],
        "IPv6 is disabled on eth0 in network namespace",
    );
    let forwarding = std::fs::read_to_string(Ipv6ForwardingRestored::SYSCTL).unwrap();
    assert_eq!(
        forwarding.trim(),
        "1",
        "a dual-stack network turns IPv6 forwarding on"
    );
    // An IPv4-only network's container has no IPv6 address, and asking for one is refused.
    let name = unique("v4");
    d.ok(&["network", "create", &name, "--subnet", "10.243.0.0/24"]);
    let c = NetNs::with_ipv6("dsc");
    let ec = add(&d, &name, &c, &[]);
    assert!(ec.get("ip6").is_none(), "{ec}");
    let addr = ip(
        &c,
        &["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"],
    );
    assert!(addr.trim().is_empty(), "{addr}");
    let path = c.path();
    d.refused(
        &[
            "endpoint",
            "add",
            &name,
            "--netns",
            path.to_str().unwrap(),
            "--ip",
            "fd43::2",
        ],
        "has no IPv6 subnet",
    );
}

#[test]
fn ipv6_only_containers_have_no_ipv4_reach_each_other_and_send_no_ipv4() {
    require_root!();
    let _forwarding = Ipv6ForwardingRestored::new();
    let d = Daemon::start();
    let name = unique("v6o");
    d.ok(&["network", "create", &name, "--subnet", "fd7e::/64"]);
    let ls = d.ok(&["network", "ls"]);
    assert!(
        ls.contains(" fd7e::/64 ") && ls.contains(" fd7e::1 "),
        "{ls}"
    );
    let (a, b) = (NetNs::with_ipv6("v6oa"), NetNs::with_ipv6("v6ob"));
    let (ea, eb) = (add(&d, &name, &a, &[]), add(&d, &name, &b, &[]));
    for (ns, ep) in [(&a, &ea), (&b, &eb)] {
        assert!(
            ep.get("ip").is_none() && ep.get("gateway").is_none(),
            "{ep}"
        );
        assert_eq!(ep["gateway6"], "fd7e::1", "{ep}");
        let v4 = ip(ns, &["-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(v4.trim().is_empty(), "IPv4 on an IPv6-only container: {v4}");
        let routes = ip(ns, &["-4", "route"]);
        assert!(routes.trim().is_empty(), "IPv4 routes: {routes}");
        // Bounded: one echo, two seconds (exec asserts success).
        ns.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd7e::1"]);
    }
    assert_eq!(ea["ip6"], "fd7e::2", "{ea}");
    // Container to container through the fast path: 3 echoes and 3 replies at least.
    let before = d.forwarded("endpoint_to_endpoint");
    let to = eb["ip6"].as_str().unwrap();
    a.exec(&["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", to]);
    let forwarded = d.forwarded("endpoint_to_endpoint") - before;
    assert!(forwarded >= 6, "{forwarded} forwards for 6 echo packets");
    // IPv4 and ARP from a: a DHCP-like broadcast from 0.0.0.0, a unicast to b's MAC,
    // and an ARP probe — none reaches b, each is counted.
    let (a_mac, b_mac) = (ep_mac(&ea), ep_mac(&eb));
    let framed = |mut f: Vec<u8>, dst: [u8; 6]| {
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&a_mac);
        f
    };
    let dhcp = framed(
        frames::udp4([0; 4], 68, [255; 4], 67, b"discover", false),
        [0xff; 6],
    );
    let unicast = framed(
        frames::udp4([10, 9, 0, 2], 7000, [10, 9, 0, 3], 7001, b"x", false),
        b_mac,
    );
    let mut probe = framed(frames::arp_request(), [0xff; 6]);
    // Sender: a's MAC, 0.0.0.0 (RFC 5227's probe).
    probe[22..28].copy_from_slice(&a_mac);
    probe[28..32].copy_from_slice(&[0; 4]);
    let (ip0, arp0) = (d.drops("spoofed_ip"), d.drops("spoofed_arp"));
    let at_b = Capture::start_in(&b, "eth0", Duration::from_millis(700));
    a.enter(|| {
        for _ in 0..3 {
            for f in [&dhcp, &unicast, &probe] {
                send_raw("eth0", f);
            }
        }
    });
    let ipv4_from_a = (at_b.join().unwrap().iter())
        .filter(|f| f[6..12] == a_mac && matches!([f[12], f[13]], [0x08, 0x00] | [0x08, 0x06]))
        .count();
    assert_eq!(
        ipv4_from_a, 0,
        "IPv4 or ARP from an IPv6-only container reached its neighbour"
    );
    assert_eq!(d.drops("spoofed_ip") - ip0, 6);
    assert_eq!(d.drops("spoofed_arp") - arp0, 3);
    // Its listing and removal.
    let ls = d.ok(&["ls"]);
    assert!(ls.contains("fd7e::2") && !ls.contains("10.9."), "{ls}");
    let id = ea["id"].as_str().unwrap();
    let removed = d.ok(&["endpoint", "rm", id]);
    assert!(removed.contains("(fd7e::2)"), "{removed}");
}
