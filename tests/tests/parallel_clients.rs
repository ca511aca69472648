//! 64 container endpoints added in parallel by 64 clients (CLI processes) against one
//! daemon: 64 distinct IPs; each namespace has its interface, address, default route and
//! gateway neighbor, and reaches the gateway.

use std::collections::HashSet;

use netpath_tests::{Daemon, NetNs, require_root, unique};

#[test]
fn sixty_four_clients_add_endpoints_in_parallel() {
    require_root!();
    let d = Daemon::start();
    let net = unique("pc");
    d.ok(&["network", "create", &net, "--subnet", "10.226.0.0/16"]);
    let namespaces: Vec<NetNs> = (0..64).map(|_| NetNs::new("pc")).collect();
    let outputs: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .map(|ns| {
                let (d, net) = (&d, &net);
                s.spawn(move || {
                    let out = d.ok(&[
                        "endpoint",
                        "add",
                        net,
                        "--netns",
                        &ns.path().display().to_string(),
                        "--json",
                    ]);
                    serde_json::from_str::<serde_json::Value>(&out).unwrap()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    let ips: HashSet<&str> = outputs.iter().map(|o| o["ip"].as_str().unwrap()).collect();
    assert_eq!(ips.len(), 64, "IPs are not distinct");
    for (ns, ep) in namespaces.iter().zip(&outputs) {
        for field in ["id", "ip", "prefix_len", "mac", "gateway", "host_ifname"] {
            assert!(!ep[field].is_null(), "endpoint JSON lacks {field}: {ep}");
        }
        let ip = ep["ip"].as_str().unwrap();
        let addr = String::from_utf8(ns.exec(&["ip", "-o", "addr", "show", "dev", "eth0"]).stdout)
            .unwrap();
        assert!(addr.contains(&format!("{ip}/16")), "{addr}");
        let routes = String::from_utf8(ns.exec(&["ip", "route"]).stdout).unwrap();
        assert!(
            routes.contains("default via 10.226.0.1 dev eth0"),
            "{routes}"
        );
        let neigh =
            String::from_utf8(ns.exec(&["ip", "neigh", "show", "10.226.0.1"]).stdout).unwrap();
        assert!(neigh.contains("PERMANENT"), "{neigh}");
        ns.exec(&["ping", "-c", "1", "-W", "2", "10.226.0.1"]);
    }
    let ls = d.ls();
    assert_eq!(ls["endpoints"].as_array().unwrap().len(), 64);
}
