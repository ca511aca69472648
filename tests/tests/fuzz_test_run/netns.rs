//! The fuzz's own network namespace and devices: what `bpf_fib_lookup` routes and
//! which ifindexes BPF_PROG_TEST_RUN resolves are the test's, so hairpin is predictable.

use super::*;

/// A device of namespace `ns` (a veth pair, both ends up) that exists for its ifindex:
/// BPF_PROG_TEST_RUN resolves `__sk_buff.ifindex`, and `bpf_fib_lookup` routes, in the
/// caller's namespace.
pub(super) struct Dev {
    pub(super) ifindex: u32,
}

impl Dev {
    pub(super) fn new(ns: &NetNs, name: &str) -> Dev {
        Dev {
            ifindex: ns.veth(name),
        }
    }
}

/// The namespace the fuzz runs in, so that hairpin (which asks the FIB whether a
/// destination is a host address) is predictable: the uplink's address on its device, a
/// default route through another device, forwarding on, and nothing else. Returns the namespace,
/// its devices (uplink, another device, three endpoints') and its local routes.
pub(super) fn fuzz_namespace() -> (NetNs, [Dev; 5], Vec<Route>) {
    let ns = NetNs::new("fz");
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    let devs = ["fzu", "fzo", "fz0", "fz1", "fz2"].map(|n| Dev::new(&ns, n));
    // The uplink's address alone (/32: no subnet route through the uplink), and the
    // default route through the other device — as on a host whose uplink is not the
    // default route's device, so that the fast path routes nothing out by itself.
    let up = Ipv4Addr::from(UPLINK_ADDR);
    ns.exec(&["ip", "addr", "add", &format!("{up}/32"), "dev", "fzu"]);
    ns.exec(&["ip", "addr", "add", "198.18.0.1/24", "dev", "fzo"]);
    ns.exec(&["ip", "route", "add", "default", "via", "198.18.0.254"]);
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let out = ns.exec(&["ip", "-j", "route", "show", "table", "local"]);
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j route");
    let local = routes
        .as_array()
        .expect("routes")
        .iter()
        .filter(|r| matches!(r["type"].as_str(), Some("local" | "broadcast")))
        .map(|r| {
            let dst = r["dst"].as_str().expect("dst");
            let (a, len) = dst.split_once('/').unwrap_or((dst, "32"));
            let a: Ipv4Addr = a.parse().expect("IPv4 route");
            (a.octets(), len.parse().expect("prefix"))
        })
        .collect();
    (ns, devs, local)
}
