//! Real Docker (Debian's docker.io 20.10, a private dockerd with its default
//! `iptables: true` and the `FORWARD` policy at DROP) with netpath as its network and
//! IPAM driver, served by a netpath daemon on a plugin socket of the test's own name:
//!
//! * `docker network create -d PLUGIN --ipam-driver PLUGIN --ipv6 …` makes a dual-stack
//!   netpath network; a bad `-o` is refused with netpath's message and makes nothing;
//! * `docker run` gets a netpath endpoint (its veth's container end moved in by
//!   libnetwork): containers reach each other over both families on the fast path,
//!   reach a server outside through netpath's masquerade, and serve `-p 18191:80` to the
//!   outside, to the host (`127.0.0.1`) and to each other through the host's address
//!   (hairpin) — with no docker-proxy and no DNAT rule of Docker's;
//! * a routed network (`-o mode=routed`) carries both families between its containers;
//! * an internal network (`--internal`) is a netpath internal network: its containers
//!   reach each other, and nothing outside (the drop counted as `internal_network`);
//! * `docker rm` and `docker network rm` leave no netpath endpoint, lease, device or
//!   network.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use netpath_tests::{
    Daemon, NetNs, OutsideLink,
    engine::{Dockerd, IMAGE},
    host_links,
    outside::first_peer,
    pinned_map_len, require_root, run, unique, wait_until,
};
use serde_json::Value;

const SUBNET: &str = "10.251.0.0/24";
const SUBNET6: &str = "fd71::/64";
const ROUTED: &str = "10.252.0.0/24";
const ROUTED6: &str = "fd72::/64";
const INTERNAL: &str = "10.214.0.0/24";
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 251, 1);
const UPLINK: Ipv4Addr = Ipv4Addr::new(198, 18, 251, 2);
const OUT_PORT: u16 = 9251;
const HOST_PORT: u16 = 18191;
const MARKER: &str = "served-by-busybox-httpd-in-docker-through-netpath";
const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP GET of `path` over `stream`; returns the whole answer.
fn get(mut stream: TcpStream, path: &str) -> String {
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn get_from(to: SocketAddr, path: &str) -> String {
    let stream = TcpStream::connect_timeout(&to, TIMEOUT);
    get(stream.unwrap_or_else(|e| panic!("connect {to}: {e}")), path)
}

/// `GET /` from inside container `name` to `host`:`port` (busybox nc).
fn get_in(docker: &Dockerd, name: &str, host: &str, port: u16) -> String {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port}");
    docker.ok(&["exec", name, "sh", "-c", &script])
}

/// `docker inspect` of container `name`'s addresses: (IPv4, IPv6).
fn addresses(docker: &Dockerd, name: &str) -> (String, String) {
    let f = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.GlobalIPv6Address}}{{end}}";
    let out = docker.ok(&["inspect", "-f", f, name]);
    let mut it = out.split_whitespace().map(str::to_owned);
    (it.next().unwrap_or_default(), it.next().unwrap_or_default())
}

/// The host links of every endpoint of `np`: its own end and the name its container end
/// was left (or leaves) under on the host.
fn links_of(np: &Daemon) -> std::collections::BTreeSet<String> {
    let all: Value = serde_json::from_str(&np.ok(&["ls", "--json"])).unwrap();
    (all["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter())
    .flat_map(|e| [e["peer"].as_str(), e["host_ifname"].as_str()])
    .flatten()
    .map(str::to_owned)
    .collect()
}

/// The netpath endpoints of network `net`.
fn endpoints(np: &Daemon, net: &str) -> Vec<Value> {
    let all: Value = serde_json::from_str(&np.ok(&["ls", "--json"])).unwrap();
    (all["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter())
    .filter(|e| e["network"] == net)
    .collect()
}

#[test]
fn docker_runs_containers_on_netpath() {
    require_root!();
    let plugin = unique("npdk");
    let socket = format!("/run/docker/plugins/{plugin}.sock");
    let outside = NetNs::new("dkout");
    let up = OutsideLink::new(&outside, UPLINK, OUTSIDE);
    let np = Daemon::start_args(&["--docker-plugin-socket", &socket], &[]);
    let docker = Dockerd::start(MARKER);
    // What Docker does when it has to turn forwarding on; netpath carries nothing through
    // netfilter's FORWARD. (The Dockerd guard restores the policy it found.)
    run(&["iptables", "-P", "FORWARD", "DROP"]);

    // A refused create makes nothing.
    let err = docker.refused(&[
        "network", "create", "-d", &plugin, "--subnet", SUBNET, "-o", "mode=nat", "bad",
    ]);
    assert!(
        err.contains("-o mode=nat: the mode is bridge or routed"),
        "{err}"
    );
    let nets: Value = serde_json::from_str(&np.ok(&["network", "ls", "--json"])).unwrap();
    assert_eq!(nets.as_array().map(Vec::len), Some(0), "{nets}");

    let uplink = format!("uplink={}", up.name);
    let id = docker.ok(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--ipam-driver",
        &plugin,
        "--ipv6",
        "--subnet",
        SUBNET,
        "--subnet",
        SUBNET6,
        "-o",
        &uplink,
        "web",
    ]);
    let web = format!("d-{}", &id[..10]);
    let nets: Value = serde_json::from_str(&np.ok(&["network", "ls", "--json"])).unwrap();
    let net = (nets
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == web.as_str()))
    .unwrap_or_else(|| panic!("no netpath network {web}: {nets}"));
    assert_eq!(
        (net["subnet"].as_str(), net["subnet6"].as_str()),
        (Some(SUBNET), Some(SUBNET6))
    );

    let publish = format!("{HOST_PORT}:80");
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "web",
        "-p",
        &publish,
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "cli",
        "--network",
        "web",
        IMAGE,
        "sleep",
        "600",
    ]);
    let (srv4, srv6) = addresses(&docker, "srv");
    let eps = endpoints(&np, &web);
    assert_eq!(eps.len(), 2, "{eps:?}");
    let srv_ep = (eps.iter().find(|e| e["ip"] == srv4.as_str()))
        .unwrap_or_else(|| panic!("no netpath endpoint at {srv4}: {eps:?}"));
    assert_eq!(srv_ep["ip6"], srv6.as_str(), "{srv_ep}");
    assert!(
        srv_ep["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("npd")),
        "{srv_ep}"
    );

    // Container to container, both families, past the bridge.
    let before = np.forwarded("endpoint_to_endpoint");
    assert!(get_in(&docker, "cli", &srv4, 80).contains(MARKER));
    assert!(get_in(&docker, "cli", &srv6, 80).contains(MARKER));
    docker.ok(&["exec", "cli", "ping", "-c", "1", "-W", "3", &srv6]);
    let forwarded = np.forwarded("endpoint_to_endpoint") - before;
    assert!(forwarded >= 10, "{forwarded} packets on the fast path");

    // Out through the masquerade: the server sees the uplink's address.
    let at = SocketAddr::from((OUTSIDE, OUT_PORT));
    let peer = first_peer(&outside, at, TIMEOUT, || {
        let to = format!("echo out | nc -w 5 {OUTSIDE} {OUT_PORT}");
        docker.ok(&["exec", "cli", "sh", "-c", &to]);
    });
    assert_eq!(peer.ip(), UPLINK, "masqueraded source");

    // `-p`: from outside (the client's address kept), from the host, and hairpin.
    let from_outside = outside.spawn(|| get_from(SocketAddr::from((UPLINK, HOST_PORT)), "/"));
    assert!(from_outside.join().unwrap().contains(MARKER));
    assert!(get_from(SocketAddr::from((Ipv4Addr::LOCALHOST, HOST_PORT)), "/").contains(MARKER));
    assert!(get_in(&docker, "cli", &UPLINK.to_string(), HOST_PORT).contains(MARKER));
    let ports: Value = serde_json::from_str(&np.ok(&["port", "ls", "--json"])).unwrap();
    let ours = ports.as_array().unwrap().iter();
    let ours: Vec<_> = ours.filter(|l| l["endpoint"] == srv_ep["id"]).collect();
    assert!(!ours.is_empty(), "{ports}");
    // Docker published nothing itself.
    let proxies = std::process::Command::new("pgrep")
        .args(["-f", &format!("docker-proxy.*{HOST_PORT}")])
        .output()
        .unwrap();
    assert_eq!(proxies.status.code(), Some(1), "a docker-proxy runs");
    let nat = String::from_utf8(run(&["iptables-save", "-t", "nat"]).stdout).unwrap();
    assert!(!nat.contains(&HOST_PORT.to_string()), "{nat}");

    // From outside, the server sees the client's own address.
    let peer = outside.spawn(|| get_from(SocketAddr::from((UPLINK, HOST_PORT)), "/cgi-bin/peer"));
    let peer = peer.join().unwrap();
    // (httpd listens on [::], so an IPv4 client shows as ::ffff:a.b.c.d.)
    assert!(peer.contains(&format!("peer=[::ffff:{OUTSIDE}]")), "{peer}");
    // Inside, the address and gateway are netpath's.
    let cli = (endpoints(&np, &web).into_iter())
        .find(|e| e["id"] != srv_ep["id"])
        .unwrap();
    let (cli4, cli6) = (cli["ip"].as_str().unwrap(), cli["ip6"].as_str().unwrap());
    let shown = docker.ok(&["exec", "cli", "ip", "-o", "addr", "show", "eth0"]);
    assert!(
        shown.contains(&format!("{cli4}/24")) && shown.contains(&format!("{cli6}/64")),
        "{shown}"
    );
    let gateway = net["gateway"].as_str().unwrap();
    let routes = docker.ok(&["exec", "cli", "ip", "route"]);
    assert!(
        routes.contains(&format!("default via {gateway} dev eth0")),
        "{routes}"
    );

    // netpath restarts while the containers talk: not one ping is lost, and what Docker
    // made is still there.
    let mut np = np;
    let ping = docker
        .command(&[
            "exec", "cli", "ping", "-c", "30", "-i", "0.2", "-W", "1", &srv4,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    np.stop();
    std::thread::sleep(Duration::from_secs(1));
    np.restart();
    let ping = String::from_utf8(ping.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        ping.contains("30 packets transmitted, 30 packets received"),
        "{ping}"
    );
    assert!(get_from(SocketAddr::from((Ipv4Addr::LOCALHOST, HOST_PORT)), "/").contains(MARKER));

    // 20 containers started at once get 20 distinct addresses.
    let ids: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(|| docker.ok(&["run", "-d", "--network", "web", IMAGE, "sleep", "600"]))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut seen: Vec<String> = ids.iter().map(|id| addresses(&docker, id).0).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20, "{seen:?}");
    assert_eq!(endpoints(&np, &web).len(), 22);
    let mut our_links = links_of(&np);
    let mut rm = vec!["rm", "-f"];
    rm.extend(ids.iter().map(String::as_str));
    docker.ok(&rm);
    assert_eq!(endpoints(&np, &web).len(), 2);

    // A routed network carries both families between its containers.
    docker.ok(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--ipv6",
        "--subnet",
        ROUTED,
        "--subnet",
        ROUTED6,
        "-o",
        "mode=routed",
        "-o",
        &uplink,
        "routed",
    ]);
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "r1",
        "--network",
        "routed",
        IMAGE,
        "sleep",
        "600",
    ]);
    let (r4, r6) = addresses(&docker, "r1");
    our_links.extend(links_of(&np));
    let script = format!("ping -c 1 -W 3 {r4} && ping -c 1 -W 3 {r6}");
    docker.ok(&[
        "run",
        "--rm",
        "--network",
        "routed",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);

    let routed_net = format!(
        "d-{}",
        &docker.ok(&["network", "inspect", "-f", "{{.Id}}", "routed"])[..10]
    );

    // `--internal`: a netpath internal network. Its containers reach each other; a
    // server outside, listening, sees no connection from them.
    docker.ok(&[
        "network",
        "create",
        "-d",
        &plugin,
        "--internal",
        "--subnet",
        INTERNAL,
        "-o",
        &uplink,
        "closed",
    ]);
    let nets: Value = serde_json::from_str(&np.ok(&["network", "ls", "--json"])).unwrap();
    let closed = (nets.as_array().unwrap().iter())
        .find(|n| n["subnet"] == INTERNAL)
        .unwrap_or_else(|| panic!("no netpath network on {INTERNAL}: {nets}"));
    assert_eq!(closed["policy"]["internal"], true, "{closed}");
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "i1",
        "--network",
        "closed",
        IMAGE,
        "sleep",
        "600",
    ]);
    let (i4, _) = addresses(&docker, "i1");
    let refused_before = np.drops("internal_network");
    let listening = outside.spawn(|| {
        let l = std::net::TcpListener::bind((OUTSIDE, OUT_PORT + 1)).unwrap();
        l.set_nonblocking(true).unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(8);
        while std::time::Instant::now() < end {
            if l.accept().is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    let out_port = OUT_PORT + 1;
    let script = format!("ping -c 1 -W 3 {i4} && ! (echo out | nc -w 3 {OUTSIDE} {out_port})");
    docker.ok(&[
        "run",
        "--rm",
        "--network",
        "closed",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    assert!(
        !listening.join().unwrap(),
        "an internal container reached outside"
    );
    let refused = np.drops("internal_network") - refused_before;
    assert!(refused >= 1, "internal_network drops: {refused}");
    our_links.extend(links_of(&np));
    docker.ok(&["rm", "-f", "i1"]);
    docker.ok(&["network", "rm", "closed"]);

    // `docker rm -f` while netpath is down: Docker gives up on the plugin (after its
    // retries) and moves the container end back to the host as it tears the container
    // down; netpath's sweep (every 5 s) releases the endpoint once it has found it there
    // six times in a row.
    np.stop();
    docker.ok(&["rm", "-f", "r1"]);
    np.restart();
    let released = || endpoints(&np, &routed_net).is_empty();
    wait_until(Duration::from_secs(45), "r1's endpoint stays", released);

    // dockerd restarts: a `--restart always` container comes back on netpath.
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "--restart",
        "always",
        "--network",
        "web",
        IMAGE,
        "sleep",
        "600",
    ]);
    let mut docker = docker;
    docker.restart();
    let running = || docker.ok(&["inspect", "-f", "{{.State.Running}}", "keep"]) == "true";
    wait_until(Duration::from_secs(30), "keep did not come back", running);
    let (keep4, _) = addresses(&docker, "keep");
    let eps = endpoints(&np, &web);
    assert!(
        eps.iter().any(|e| e["ip"] == keep4.as_str()),
        "{keep4}: {eps:?}"
    );
    docker.ok(&["exec", "keep", "ping", "-c", "1", "-W", "3", gateway]);
    our_links.extend(links_of(&np));
    // Nothing stays.
    docker.ok(&["rm", "-f", "srv", "cli", "keep"]);
    let ls: Value = serde_json::from_str(&np.ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls["endpoints"].as_array().map(Vec::len), Some(0), "{ls}");
    let ports: Value = serde_json::from_str(&np.ok(&["port", "ls", "--json"])).unwrap();
    assert_eq!(ports.as_array().map(Vec::len), Some(0), "{ports}");
    // (Only this test's: other runs on the host may have their own links.) A pair whose
    // other end was in a container's namespace goes when the kernel's (asynchronous)
    // namespace cleanup gets to it: waited for, so no later test sees it vanish.
    let ours_left = || host_links().iter().all(|l| !our_links.contains(l));
    wait_until(Duration::from_secs(30), "this test's links stay", ours_left);
    for map in ["NETPATH_ENDPOINTS", "NETPATH_ENDPOINTS6", "NETPATH_PUBLISH"] {
        assert_eq!(pinned_map_len(&np.paths.bpffs, map), 0, "{map}");
    }
    docker.ok(&["network", "rm", "web", "routed"]);
    let nets: Value = serde_json::from_str(&np.ok(&["network", "ls", "--json"])).unwrap();
    assert_eq!(nets.as_array().map(Vec::len), Some(0), "{nets}");
}
