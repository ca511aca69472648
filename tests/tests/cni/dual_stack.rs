//! A dual-stack network through the plugin: `subnets` creates it; ADD answers with one
//! `ips` entry and one default route per family (`ips[].version` in the 0.3.x format)
//! and the container has both addresses and reaches both gateways; requested addresses
//! of both families are leased; CHECK verifies both addresses; IPv6 port mappings are
//! accepted and skipped; two addresses of one family, an IPv6 address for a network
//! without IPv6 and another IPv6 subnet for the existing network are refused with
//! nothing changed; DEL removes it all.

use netpath_tests::{Daemon, Ipv6ForwardingRestored, NetNs, require_root, unique};
use serde_json::{Value, json};

use crate::plugin::*;

/// `ip ARGS` inside `ns`, its output as text.
fn ip(ns: &NetNs, args: &[&str]) -> String {
    let mut all = vec!["ip"];
    all.extend_from_slice(args);
    String::from_utf8(ns.exec(&all).stdout).expect("utf-8")
}

/// ADD of `id` in `ns` with configuration `c`, whatever its outcome.
fn try_add(id: &str, ns: &NetNs, c: &Value) -> (i32, Value) {
    Attach {
        cmd: "ADD",
        id,
        ifname: "eth0",
        netns: Some(&ns.path()),
    }
    .run(c)
}

#[test]
fn dual_stack_add_check_del() {
    require_root!();
    let _forwarding = Ipv6ForwardingRestored::new();
    let d = Daemon::start();
    let net = unique("cd");
    let up = private_uplink();
    let mut c = conf(&net, "10.245.0.0/24", &d.paths.socket);
    c.as_object_mut().unwrap().remove("subnet");
    c["subnets"] = json!(["fd45::/64", "10.245.0.0/24"]);
    c["uplink"] = json!(up.0);

    // ADD creates the dual-stack network; the result has both families.
    let ns = NetNs::with_ipv6("cd");
    let r = add("c0ffee61", &ns, &c);
    assert_eq!(
        r["ips"],
        json!([
            {"address": "10.245.0.2/24", "gateway": "10.245.0.1", "interface": 1},
            {"address": "fd45::2/64", "gateway": "fd45::1", "interface": 1},
        ]),
        "{r}"
    );
    assert_eq!(
        r["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": "10.245.0.1"},
            {"dst": "::/0", "gw": "fd45::1"},
        ]),
        "{r}"
    );
    let networks = d.ls()["networks"].clone();
    assert_eq!(networks[0]["subnet6"], "fd45::/64", "{networks}");
    let addr = ip(&ns, &["-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("fd45::2/64"), "{addr}");
    let routes = ip(&ns, &["-6", "route"]);
    assert!(routes.contains("default via fd45::1 dev eth0"), "{routes}");
    ns.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd45::1"]);
    ns.exec(&["ping", "-c", "1", "-W", "2", "10.245.0.1"]);

    // CHECK: fine, with its prevResult too; a prevResult without the IPv6 entry is not.
    assert_eq!(check("c0ffee61", &ns, &c), (0, Value::Null));
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.clone();
    assert_eq!(check("c0ffee61", &ns, &with_prev), (0, Value::Null));
    let mut v4_only_prev = c.clone();
    v4_only_prev["prevResult"] = json!({"cniVersion": "1.1.0", "ips": [r["ips"][0]]});
    let msg = expect_error(
        check("c0ffee61", &ns, &v4_only_prev),
        101,
        "CHECK, prevResult without IPv6",
    );
    assert!(
        msg.contains("prevResult does not list the attachment's address fd45::2/64"),
        "{msg}"
    );

    // A repeated ADD is the same attachment; asking another IPv6 address is refused.
    let again = add("c0ffee61", &ns, &c);
    assert_eq!(again["ips"], r["ips"]);
    let msg = expect_error(
        add_with_args("c0ffee61", &ns, &c, "IP=fd45::77"),
        7,
        "repeated ADD, other IPv6 address",
    );
    assert!(
        msg.contains("is already attached with IPv6 address fd45::2, not fd45::77"),
        "{msg}"
    );

    // Requested addresses of both families, in the 0.3.1 format (`version` per entry);
    // an every-address port mapping publishes on both families (its `::` twin is the
    // same port).
    let ns2 = NetNs::with_ipv6("cd");
    let mut old = c.clone();
    old["cniVersion"] = json!("0.3.1");
    old["runtimeConfig"] = json!({
        "ips": ["fd45::50/64", "10.245.0.50/24"],
        "portMappings": [
            {"hostPort": 18245, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
            {"hostPort": 18245, "containerPort": 80, "protocol": "tcp", "hostIP": "::"}
        ]
    });
    let r2 = add("c0ffee62", &ns2, &old);
    assert_eq!(r2["cniVersion"], "0.3.1");
    assert_eq!(
        r2["ips"],
        json!([
            {"version": "4", "address": "10.245.0.50/24", "gateway": "10.245.0.1", "interface": 1},
            {"version": "6", "address": "fd45::50/64", "gateway": "fd45::1", "interface": 1},
        ]),
        "{r2}"
    );
    let leases: Vec<Value> = ports(&d).iter().map(|l| l["id"].clone()).collect();
    assert_eq!(
        leases,
        [json!("tcp/0.0.0.0:18245"), json!("tcp/[::]:18245")]
    );
    let addr = ip(&ns2, &["-6", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("fd45::50/64"), "{addr}");
    assert_eq!(check("c0ffee62", &ns2, &c), (0, Value::Null));
    ns2.exec(&["ping", "-6", "-c", "1", "-W", "2", "fd45::2"]);

    // Refused, nothing changed: two IPv6 addresses; an IPv6 address for a network that
    // would have no IPv6 (not created); another IPv6 subnet than the network's.
    let eps = endpoints(&d);
    let ns3 = NetNs::with_ipv6("cd");
    let mut two = c.clone();
    two["runtimeConfig"] = json!({"ips": ["fd45::60", "fd45::61"]});
    let msg = expect_error(try_add("c0ffee63", &ns3, &two), 7, "two IPv6 addresses");
    assert!(
        msg.contains("two IPv6 addresses requested (fd45::60, fd45::61)"),
        "{msg}"
    );
    let v4net = unique("c4");
    let mut v4 = conf(&v4net, "10.245.1.0/24", &d.paths.socket);
    v4["uplink"] = json!(up.0);
    v4["runtimeConfig"] = json!({"ips": ["fd45::70"]});
    let msg = expect_error(try_add("c0ffee64", &ns3, &v4), 7, "IPv6 on IPv4-only");
    assert!(
        msg.contains(&format!(
            "requested address fd45::70 is IPv6, but netpath network {v4net:?} would have no IPv6 subnet"
        )),
        "{msg}"
    );
    let mut other6 = c.clone();
    other6["subnets"] = json!(["10.245.0.0/24", "fd45:1::/64"]);
    let msg = expect_error(try_add("c0ffee65", &ns3, &other6), 7, "other IPv6 subnet");
    assert!(
        msg.contains(
            "exists with IPv6 subnet fd45::/64, but the network configuration says fd45:1::/64"
        ),
        "{msg}"
    );
    assert_eq!(endpoints(&d), eps);
    assert_eq!(d.ls()["networks"].as_array().unwrap().len(), 1);

    // CHECK notices a missing IPv6 address.
    ns.exec(&["ip", "-6", "addr", "del", "fd45::2/64", "dev", "eth0"]);
    let msg = expect_error(check("c0ffee61", &ns, &c), 101, "CHECK without IPv6");
    assert!(msg.contains("does not have address fd45::2"), "{msg}");

    // DEL removes both attachments and the lease; again, it is a no-op.
    for id in ["c0ffee61", "c0ffee62"] {
        del(id, None, &c);
        del(id, None, &c);
    }
    assert!(endpoints(&d).is_empty());
    assert!(ports(&d).is_empty());
}
