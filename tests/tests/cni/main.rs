//! The `netpath-cni` plugin against the CNI spec: every command with valid and invalid
//! environment and stdin gives a result or the spec's error shape; ADD creates the
//! network on first use (also when many ADDs race), a repeated ADD returns the same
//! attachment, CHECK notices a broken attachment, DEL is idempotent (also once the
//! namespace is gone) and releases port leases, GC removes exactly the attachments
//! not listed as valid; a dual-stack network's attachments (`dual_stack`).

mod dual_stack;
mod plugin;

use std::path::Path;

use netpath_tests::{Daemon, NetNs, require_root, unique};
use serde_json::{Value, json};

use crate::plugin::*;

/// Everything that fails before reaching a daemon: the error shape and the code.
#[test]
fn invalid_input_gives_spec_errors() {
    let down = Path::new("/nonexistent/netpath-test.sock");
    let good = conf("cnispec", "10.241.0.0/24", down).to_string();
    let full = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/proc/self/ns/net"),
        ]
    };

    // VERSION, with or without a configuration.
    for stdin in ["", r#"{"cniVersion":"1.0.0"}"#] {
        let (status, v) = cni(&[("CNI_COMMAND", "VERSION")], stdin);
        assert_eq!(status, 0, "{v}");
        assert_eq!(v["cniVersion"], "1.1.0");
        let versions: Vec<&str> = v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        for want in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            assert!(versions.contains(&want), "{v}");
        }
    }

    // VERSION as libcni sends it when it validates a configuration.
    let (status, v) = cni(
        &[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
        ],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert_eq!(status, 0, "{v}");

    // The environment (code 4).
    let msg = expect_error(cni(&[], &good), 4, "no CNI_COMMAND");
    assert!(msg.contains("CNI_COMMAND"), "{msg}");
    expect_error(cni(&[("CNI_COMMAND", "FROB")], &good), 4, "unknown command");
    let msg = expect_error(
        cni(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")], &good),
        4,
        "ADD without CNI_CONTAINERID",
    );
    assert!(msg.contains("CNI_CONTAINERID"), "{msg}");
    let msg = expect_error(
        cni(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_IFNAME", "eth0"),
            ],
            &good,
        ),
        4,
        "ADD without CNI_NETNS",
    );
    assert!(msg.contains("CNI_NETNS"), "{msg}");
    let mut bad_ifname = full("ADD");
    bad_ifname[2] = ("CNI_IFNAME", "this-is-too-long-0");
    expect_error(cni(&bad_ifname, &good), 4, "ifname too long");
    let mut bad_id = full("DEL");
    bad_id[1] = ("CNI_CONTAINERID", "../etc");
    expect_error(cni(&bad_id, &good), 4, "bad container id");

    // The configuration: decode failure 6, incompatible version 1, invalid 7,
    // unsupported field 2.
    for cmd in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
        expect_error(cni(&full(cmd), "{\"cniVersion\":"), 6, cmd);
        expect_error(cni(&full(cmd), "[]"), 6, cmd);
        let msg = expect_error(
            cni(
                &full(cmd),
                r#"{"cniVersion":"9.0.0","name":"x","type":"netpath-cni"}"#,
            ),
            1,
            cmd,
        );
        assert!(msg.contains("9.0.0"), "{msg}");
        expect_error(
            cni(&full(cmd), r#"{"cniVersion":"1.1.0","type":"netpath-cni"}"#),
            7,
            cmd,
        );
    }
    let with = |k: &str, v: Value| {
        let mut c = conf("cnispec", "10.241.0.0/24", down);
        c[k] = v;
        c.to_string()
    };
    expect_error(
        cni(&full("ADD"), &with("subnet", json!("10.241.0.0"))),
        7,
        "subnet",
    );
    expect_error(cni(&full("ADD"), &with("mode", json!("mesh"))), 7, "mode");
    expect_error(cni(&full("ADD"), &with("type", json!("bridge"))), 7, "type");
    expect_error(
        cni(&full("ADD"), &with("ipam", json!({"type": "host-local"}))),
        2,
        "ipam",
    );
    // CHECK needs 0.4.0, GC and STATUS 1.1.0.
    expect_error(
        cni(&full("CHECK"), &with("cniVersion", json!("0.3.1"))),
        1,
        "CHECK 0.3.1",
    );
    expect_error(
        cni(&full("GC"), &with("cniVersion", json!("1.0.0"))),
        1,
        "GC 1.0.0",
    );

    // A namespace that does not exist: the container is unknown (3).
    let mut gone = full("ADD");
    gone[3] = ("CNI_NETNS", "/run/netns/netpath-test-does-not-exist");
    let msg = expect_error(cni(&gone, &good), 3, "ADD into a missing netns");
    assert!(msg.contains("does not exist"), "{msg}");

    // The daemon is down: try again later (11), STATUS: not available (50).
    for cmd in ["ADD", "DEL", "CHECK"] {
        let msg = expect_error(cni(&full(cmd), &good), 11, cmd);
        assert!(msg.contains("netpath daemon"), "{msg}");
    }
    let gc = with("cni.dev/valid-attachments", json!([]));
    expect_error(cni(&full("GC"), &gc), 11, "GC");
    let msg = expect_error(cni(&full("STATUS"), &good), 50, "STATUS");
    assert!(msg.contains("netpath daemon"), "{msg}");
}

#[test]
fn add_check_del_gc_against_the_daemon() {
    require_root!();
    let d = Daemon::start();
    let socket = d.paths.socket.clone();
    let net = unique("cn");
    let up = private_uplink();
    let mut c = conf(&net, "10.242.0.0/24", &socket);
    c["uplink"] = json!(up.0);

    // STATUS: the daemon answers.
    let (status, v) = cni(&[("CNI_COMMAND", "STATUS")], &c.to_string());
    assert_eq!((status, v), (0, Value::Null));

    // ADD creates the network and the endpoint; the result describes them.
    let ns = NetNs::new("ca");
    let r = add("c0ffee01", &ns, &c);
    assert_eq!(r["cniVersion"], "1.1.0");
    let ip = r["ips"][0]["address"].as_str().unwrap().to_owned();
    assert!(ip.starts_with("10.242.0.") && ip.ends_with("/24"), "{r}");
    assert_eq!(r["ips"][0]["gateway"], "10.242.0.1");
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(
        r["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.242.0.1"}])
    );
    assert_eq!(r["dns"], c["dns"]);
    let host = r["interfaces"][0]["name"].as_str().unwrap().to_owned();
    assert!(
        Path::new("/sys/class/net").join(&host).exists(),
        "host side {host} missing: {r}"
    );
    assert!(r["interfaces"][0]["mac"].is_string(), "{r}");
    let inner = &r["interfaces"][1];
    assert_eq!(inner["name"], "eth0");
    assert_eq!(inner["sandbox"], ns.path().display().to_string());
    let mac_inside =
        String::from_utf8(ns.exec(&["cat", "/sys/class/net/eth0/address"]).stdout).unwrap();
    assert_eq!(inner["mac"].as_str().unwrap(), mac_inside.trim());
    let addr =
        String::from_utf8(ns.exec(&["ip", "-4", "-o", "addr", "show", "eth0"]).stdout).unwrap();
    assert!(addr.contains(&ip), "{addr}");
    ns.exec(&["ping", "-c", "1", "-W", "2", "10.242.0.1"]);
    let eps = endpoints(&d);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0]["container_id"], "c0ffee01", "{eps:?}");

    // A repeated ADD answers with the same attachment and creates nothing.
    let again = add("c0ffee01", &ns, &c);
    assert_eq!(again["ips"], r["ips"]);
    assert_eq!(again["interfaces"], r["interfaces"]);
    assert_eq!(endpoints(&d).len(), 1);
    // An ADD for the same attachment asking another address or MAC is not the same ADD:
    // refused (it silently returned the old attachment), nothing changed.
    let msg = expect_error(
        add_with_args("c0ffee01", &ns, &c, "IP=10.242.0.77"),
        7,
        "repeated ADD, other IP",
    );
    assert!(
        msg.contains("is already attached with address") && msg.contains("not 10.242.0.77"),
        "{msg}"
    );
    let msg = expect_error(
        add_with_args("c0ffee01", &ns, &c, "MAC=02:00:00:00:77:77"),
        7,
        "repeated ADD, other MAC",
    );
    assert!(msg.contains("is already attached with MAC"), "{msg}");
    assert_eq!(endpoints(&d), eps);
    // A configuration whose gateway (or MTU) differs from the existing network's.
    let ns2 = NetNs::new("cg");
    for (key, value, what) in [
        ("gateway", json!("10.242.0.254"), "gateway 10.242.0.1"),
        ("mtu", json!(9000), "MTU 1500"),
    ] {
        let mut other = c.clone();
        other[key] = value;
        let out = Attach {
            cmd: "ADD",
            id: "c0ffee0g",
            ifname: "eth0",
            netns: Some(&ns2.path()),
        }
        .run(&other);
        let msg = expect_error(out, 7, key);
        assert!(msg.contains(&format!("exists with {what}")), "{msg}");
    }
    assert_eq!(endpoints(&d), eps);

    // CHECK: fine; with a matching prevResult too; then broken.
    let (status, v) = check("c0ffee01", &ns, &c);
    assert_eq!((status, &v), (0, &Value::Null), "{v}");
    let mut with_prev = c.clone();
    with_prev["prevResult"] = r.clone();
    assert_eq!(check("c0ffee01", &ns, &with_prev).0, 0);
    let mut wrong_prev = c.clone();
    wrong_prev["prevResult"] =
        json!({"cniVersion": "1.1.0", "ips": [{"address": "10.242.0.99/24"}]});
    expect_error(
        check("c0ffee01", &ns, &wrong_prev),
        101,
        "CHECK wrong prevResult",
    );
    expect_error(check("0ther", &ns, &c), 3, "CHECK unknown container");
    ns.exec(&["ip", "addr", "flush", "dev", "eth0"]);
    let msg = expect_error(check("c0ffee01", &ns, &c), 101, "CHECK after flush");
    assert!(msg.contains("does not have address"), "{msg}");

    // An existing network with another subnet: invalid configuration.
    let ns2 = NetNs::new("cb");
    let mut other = c.clone();
    other["subnet"] = json!("10.243.0.0/24");
    let msg = expect_error(
        Attach {
            cmd: "ADD",
            id: "c0ffee02",
            ifname: "eth0",
            netns: Some(&ns2.path()),
        }
        .run(&other),
        7,
        "subnet mismatch",
    );
    assert!(msg.contains("10.242.0.0/24"), "{msg}");

    // Capabilities: a fixed address and MAC, and port mappings.
    let mut caps = c.clone();
    caps["runtimeConfig"] = json!({
        "ips": ["10.242.0.77/24"],
        "mac": "02:42:0a:f2:00:4d",
        "portMappings": [
            {"hostPort": 18181, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
            {"hostPort": 18181, "containerPort": 53, "protocol": "udp"},
            {"hostPort": 18181, "containerPort": 80, "protocol": "tcp", "hostIP": "::"}
        ]
    });
    let r2 = add("c0ffee02", &ns2, &caps);
    assert_eq!(r2["ips"][0]["address"], "10.242.0.77/24", "{r2}");
    assert_eq!(r2["interfaces"][1]["mac"], "02:42:0a:f2:00:4d", "{r2}");
    let leases = ports(&d);
    assert_eq!(leases.len(), 2, "{leases:?}");
    let mut ids: Vec<&str> = leases.iter().map(|l| l["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["tcp/0.0.0.0:18181", "udp/0.0.0.0:18181"]);
    // The same host port for another container: refused, and nothing is left behind.
    let ns3 = NetNs::new("cc");
    let mut clash = c.clone();
    clash["runtimeConfig"] = json!({"portMappings": [
        {"hostPort": 18182, "containerPort": 81, "protocol": "tcp"},
        {"hostPort": 18181, "containerPort": 80, "protocol": "tcp"}
    ]});
    let (status, v) = Attach {
        cmd: "ADD",
        id: "c0ffee03",
        ifname: "eth0",
        netns: Some(&ns3.path()),
    }
    .run(&clash);
    assert_eq!(status, 1, "{v}");
    assert!(v["code"].as_u64().unwrap() >= 100, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("18181"), "{v}");
    assert_eq!(endpoints(&d).len(), 2, "a failed ADD left an endpoint");
    assert_eq!(ports(&d).len(), 2, "a failed ADD left a port lease");

    // DEL releases the endpoint and its leases; a second DEL, and a DEL of an
    // unknown container, succeed.
    del("c0ffee02", Some(&ns2.path()), &c);
    assert_eq!(ports(&d).len(), 0);
    assert_eq!(endpoints(&d).len(), 1);
    del("c0ffee02", Some(&ns2.path()), &c);
    del("never-added", None, &c);

    // DEL once the namespace is gone.
    let host = r["interfaces"][0]["name"].as_str().unwrap().to_owned();
    drop(ns);
    del("c0ffee01", None, &c);
    assert!(endpoints(&d).is_empty());
    assert!(!Path::new("/sys/class/net").join(&host).exists());

    // GC: keeps the valid attachments and non-CNI endpoints, removes the rest (and
    // their leases).
    let nss: Vec<NetNs> = (0..3).map(|_| NetNs::new("cg")).collect();
    for (i, ns) in nss.iter().enumerate() {
        let mut ci = c.clone();
        ci["runtimeConfig"] = json!({"portMappings": [
            {"hostPort": 18190 + i, "containerPort": 80, "protocol": "tcp"}
        ]});
        add(&format!("gc{i}"), ns, &ci);
    }
    let plain = NetNs::new("cp");
    d.ok(&[
        "endpoint",
        "add",
        &net,
        "--netns",
        &plain.path().display().to_string(),
    ]);
    assert_eq!((endpoints(&d).len(), ports(&d).len()), (4, 3));
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "gc1", "ifname": "eth0"},
        {"containerID": "elsewhere", "ifname": "eth0"}
    ]);
    let (status, v) = cni(&[("CNI_COMMAND", "GC")], &gc.to_string());
    assert_eq!((status, &v), (0, &Value::Null), "{v}");
    let eps = endpoints(&d);
    let mut left: Vec<String> = eps
        .iter()
        .map(|e| e["container_id"].as_str().unwrap_or("-").to_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["-", "gc1"], "{eps:?}");
    let leases = ports(&d);
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0]["host_port"], 18191);
    // GC of another network touches nothing here.
    let mut gc_other = gc.clone();
    gc_other["name"] = json!("some-other-net");
    gc_other["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(cni(&[("CNI_COMMAND", "GC")], &gc_other.to_string()).0, 0);
    assert_eq!(endpoints(&d).len(), 2);
}

/// Many first ADDs on a network that does not exist yet: all succeed, one network,
/// distinct addresses.
#[test]
fn concurrent_first_adds_share_one_network() {
    require_root!();
    let d = Daemon::start();
    let net = unique("cr");
    let up = private_uplink();
    let mut c = conf(&net, "10.244.0.0/24", &d.paths.socket);
    c["uplink"] = json!(up.0);
    let nss: Vec<NetNs> = (0..8).map(|_| NetNs::new("cr")).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = nss
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let c = &c;
                s.spawn(move || add(&format!("race{i}"), ns, c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<&str> = results
        .iter()
        .map(|r| r["ips"][0]["address"].as_str().unwrap())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8, "{ips:?}");
    let networks = d.ls()["networks"].as_array().unwrap().len();
    assert_eq!(networks, 1);
    for i in 0..8 {
        del(&format!("race{i}"), None, &c);
    }
    assert!(endpoints(&d).is_empty());
}
