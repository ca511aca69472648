//! Dual-stack networks through the daemon and its CLI: a container of a network with an
//! IPv6 subnet gets its IPv6 address (without duplicate address detection), a default
//! route via the IPv6 gateway and a permanent neighbour entry for it, and reaches its
//! gateway and the other containers over IPv6 (routed: through the host, whose IPv6
//! forwarding the daemon turns on, and this test turns back). An IPv4-only network's
//! containers get no IPv6 address at all.

use netpath_tests::{Daemon, Ipv6ForwardingRestored, NetNs, require_root, unique};
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
