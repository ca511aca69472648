//! `GET /metrics` of a real daemon: on the API socket, and over TCP with
//! `--metrics-addr` (which serves nothing else); a non-loopback `--metrics-addr` without
//! `--metrics-public` is refused before anything is made.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use netpath_tests::{Daemon, DaemonPaths, NetNs, netpath_bin, raw_http, require_root};

/// `GET path` over TCP to `addr`; the whole answer.
fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn metrics_on_the_socket_and_over_tcp() {
    require_root!();
    let d = Daemon::start_args(&["--metrics-addr", "127.0.0.1:0"], &[]);
    let url = (d.started.iter())
        .find_map(|l| l.trim().strip_prefix("metrics   http://"))
        .unwrap_or_else(|| panic!("no metrics line in {:?}", d.started));
    let addr = url.trim_end_matches("/metrics").to_owned();
    let net = netpath_tests::unique("mt");
    d.ok(&["network", "create", &net, "--subnet", "10.199.200.0/24"]);
    let ns = NetNs::new("mt");
    d.add_endpoint(&net, &ns);

    let (status, text) = raw_http(&d.paths.socket, "GET", "/metrics", None, b"");
    assert_eq!(status, 200, "{text}");
    for line in [
        format!("netpath_endpoints{{network=\"{net}\",kind=\"veth\"}} 1"),
        format!("netpath_published_ports{{network=\"{net}\"}} 0"),
        "# EOF".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let over_tcp = get(&addr, "/metrics");
    assert!(over_tcp.starts_with("HTTP/1.1 200"), "{over_tcp}");
    assert!(
        over_tcp.contains("application/openmetrics-text"),
        "{over_tcp}"
    );
    assert!(
        over_tcp.contains("netpath_start_time_seconds"),
        "{over_tcp}"
    );
    // Nothing but the metrics over TCP.
    let api = get(&addr, "/v1/networks");
    assert!(api.starts_with("HTTP/1.1 404"), "{api}");
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
