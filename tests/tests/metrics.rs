//! `GET /metrics` of a real daemon: known traffic between two endpoints, a spoofed
//! datagram and a published-port connection show as exactly those increments; the
//! output passes `promtool check metrics`; a private Prometheus server scrapes
//! `--metrics-addr` (which serves nothing else); a non-loopback `--metrics-addr` without
//! `--metrics-public` is refused before anything is made.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use netpath_tests::{
    Daemon, DaemonPaths, NetNs,
    echo::{tcp_echo, tcp_server},
    netpath_bin,
    prom::{Prometheus, Sample, has, http_get, parse, promtool_check, value},
    raw_http, require_root,
};

/// Datagrams endpoint A sends endpoint B, and their UDP payload.
const N: u64 = 20;
const PAYLOAD: usize = 100;
/// Datagrams A sends with a source address that is not its own.
const SPOOFED: u64 = 3;
/// A's forged source (in the network's subnet, no endpoint's).
const FORGED: &str = "10.199.200.250";
const UDP_PORT: u16 = 7100;

/// A daemon with `--metrics-addr 127.0.0.1:0`, and the `host:port` it says it took.
fn with_metrics_addr() -> (Daemon, String) {
    let d = Daemon::start_args(&["--metrics-addr", "127.0.0.1:0"], &[]);
    let url = (d.started.iter())
        .find_map(|l| l.trim().strip_prefix("metrics   http://"))
        .unwrap_or_else(|| panic!("no metrics line in {:?}", d.started));
    let addr = url.trim_end_matches("/metrics").to_owned();
    (d, addr)
}

/// A scrape of `/metrics` on the daemon's API socket.
fn scrape(d: &Daemon) -> (String, Vec<Sample>) {
    let (status, text) = raw_http(&d.paths.socket, "GET", "/metrics", None, b"");
    assert_eq!(status, 200, "{text}");
    let samples = parse(&text);
    (text, samples)
}

/// An endpoint's id, address and MAC from `endpoint add --json`.
fn endpoint(d: &Daemon, net: &str, ns: &NetNs) -> (String, Ipv4Addr, String) {
    let v = d.add_endpoint(net, ns);
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    (s("id"), s("ip").parse().unwrap(), s("mac"))
}

/// The labels of endpoint `id`'s counters in direction `dir`.
fn of<'a>(id: &'a str, dir: &'a str) -> [(&'a str, &'a str); 2] {
    [("endpoint", id), ("direction", dir)]
}

/// `count` datagrams of `PAYLOAD` bytes from `from` (bound inside `ns`) to `to`.
fn send(ns: &NetNs, from: Ipv4Addr, to: SocketAddr, count: u64) {
    ns.spawn(move || {
        let u = UdpSocket::bind((from, 0)).unwrap();
        for _ in 0..count {
            u.send_to(&[7u8; PAYLOAD], to).unwrap();
        }
    })
    .join()
    .unwrap();
}

/// Known traffic shows as exactly those increments, on the right labels; the output
/// passes `promtool check metrics`; a real Prometheus scraping `--metrics-addr` finds the
/// target up and the same counts.
#[test]
fn known_traffic_shows_in_the_metrics_and_in_prometheus() {
    require_root!();
    let (d, addr) = with_metrics_addr();
    let net = netpath_tests::unique("mt");
    d.ok(&["network", "create", &net, "--subnet", "10.199.200.0/24"]);
    let (ns_a, ns_b) = (NetNs::new("mta"), NetNs::new("mtb"));
    let (a, a_ip, a_mac) = endpoint(&d, &net, &ns_a);
    let (b, b_ip, b_mac) = endpoint(&d, &net, &ns_b);
    // No ARP: each knows the other's MAC, so the only frames A sends are the test's (and
    // the namespaces have IPv6 off: no ICMPv6 either).
    for (ns, ip, mac) in [(&ns_a, b_ip, &b_mac), (&ns_b, a_ip, &a_mac)] {
        let ip = ip.to_string();
        ns.exec(&[
            "ip",
            "neigh",
            "replace",
            &ip,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
    }
    ns_a.exec(&["ip", "addr", "add", &format!("{FORGED}/32"), "dev", "eth0"]);
    let receiver = {
        let u = ns_b.enter(|| UdpSocket::bind((b_ip, UDP_PORT)).unwrap());
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        u
    };

    let (_, before) = scrape(&d);
    send(&ns_a, a_ip, (b_ip, UDP_PORT).into(), N);
    send(
        &ns_a,
        FORGED.parse().unwrap(),
        (b_ip, UDP_PORT).into(),
        SPOOFED,
    );
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while let Ok((_, peer)) = receiver.recv_from(&mut buf) {
        assert_eq!(peer.ip(), a_ip, "a forged datagram arrived");
        got += 1;
    }
    assert_eq!(got, N, "datagrams B received");
    let (_, after) = scrape(&d);

    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let frame = (14 + 20 + 8 + PAYLOAD) as f64;
    let n = N as f64;
    let ep = "netpath_endpoint_packets_total";
    let ep_bytes = "netpath_endpoint_bytes_total";
    let (a_s, b_s) = (a.as_str(), b.as_str());
    assert_eq!(delta(ep, &of(a_s, "tx")), n + SPOOFED as f64, "A's tx");
    assert_eq!(
        delta(ep_bytes, &of(a_s, "tx")),
        (n + SPOOFED as f64) * frame
    );
    assert_eq!(delta(ep, &of(b_s, "rx")), n, "B's rx");
    assert_eq!(delta(ep_bytes, &of(b_s, "rx")), n * frame);
    assert_eq!(delta(ep, &of(b_s, "tx")), 0.0, "B sent nothing");
    assert_eq!(delta(ep, &of(a_s, "rx")), 0.0, "A received nothing");
    let way = [("way", "endpoint_to_endpoint")];
    assert_eq!(delta("netpath_forwarded_packets_total", &way), n);
    assert_eq!(delta("netpath_forwarded_bytes_total", &way), n * frame);
    let spoofed = [("hook", "tc_ingress"), ("reason", "spoofed_ip")];
    assert_eq!(
        delta("netpath_dropped_packets_total", &spoofed),
        SPOOFED as f64
    );
    assert_eq!(
        delta("netpath_dropped_packets_total", &[]),
        SPOOFED as f64,
        "no other drop"
    );
    assert!(has(
        &after,
        ep,
        &[("endpoint", a_s), ("network", &net), ("kind", "veth")]
    ));
    // The scrape before this one was counted, exactly once.
    let scrapes = [("route", "/metrics"), ("method", "GET"), ("status", "200")];
    assert_eq!(delta("netpath_api_requests_total", &scrapes), 1.0);

    // A published port, reached from the host on 127.0.0.1 (the socket hooks translate
    // it: one host-local entry, no packet NAT).
    let port = 20000 + (std::process::id() % 10000) as u16;
    d.publish(&b, &[format!("{port}:81")]);
    let server = tcp_server(&ns_b, b_ip, 81, 1);
    tcp_echo((Ipv4Addr::LOCALHOST, port).into()).expect("host → 127.0.0.1:published");
    server.join().unwrap();
    let (text, last) = scrape(&d);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&last, name, labels) - value(&after, name, labels)
    };
    let v4 = |kind| [("kind", kind), ("family", "ipv4")];
    assert_eq!(delta("netpath_nat_entries", &v4("host_local")), 1.0);
    assert_eq!(delta("netpath_nat_entries", &v4("publish")), 0.0);
    assert_eq!(
        value(&last, "netpath_published_ports", &[("network", &net)]),
        1.0
    );
    assert_eq!(
        value(
            &last,
            "netpath_endpoints",
            &[("network", &net), ("kind", "veth")]
        ),
        2.0
    );
    assert_eq!(
        value(&last, "netpath_map_entries", &[("map", "NETPATH_SOCK_NAT")]),
        value(&last, "netpath_nat_entries", &v4("host_local"))
    );
    promtool_check(&text).unwrap();

    // A real Prometheus scraping --metrics-addr sees the target up and B's count.
    let prometheus = Prometheus::start("netpath", &addr);
    let within = Duration::from_secs(60);
    prometheus.wait_for("up{job=\"netpath\"}", 1.0, within);
    let q = format!("{ep}{{endpoint=\"{b}\",direction=\"rx\"}}");
    let b_rx = value(&last, ep, &of(b_s, "rx"));
    assert!(b_rx >= n);
    prometheus.wait_for(&q, b_rx, within);
}

#[test]
fn metrics_over_tcp_serve_nothing_else() {
    require_root!();
    let (d, addr) = with_metrics_addr();
    let net = netpath_tests::unique("mt");
    d.ok(&["network", "create", &net, "--subnet", "10.199.201.0/24"]);
    let (status, head, body) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let samples = parse(&body);
    assert!(has(&samples, "netpath_start_time_seconds", &[]), "{body}");
    assert_eq!(value(&samples, "netpath_networks", &[]), 1.0, "{body}");
    promtool_check(&body).unwrap();
    // Nothing but the metrics over TCP.
    let (status, _, api) = http_get(&addr, "/v1/networks").unwrap();
    assert_eq!(status, 404, "{api}");
    assert!(!api.contains(&net), "{api}");
}

#[test]
fn a_public_metrics_address_must_be_asked_for() {
    require_root!();
    let paths = DaemonPaths::new();
    let out = Command::new(netpath_bin())
        .args(["daemon", "--no-default-network", "--no-docker-plugin"])
        .args(["--metrics-addr", "0.0.0.0:19464"])
        .args(paths.args())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--metrics-addr 0.0.0.0:19464 is not a loopback address")
            && err.contains("--metrics-public"),
        "{err}"
    );
    assert!(!paths.socket.exists() && !paths.bpffs.exists());
}
