//! The daemon and CLI end to end: bad input is refused with a clear error and changes
//! nothing; reset leaves zero residue.

use std::sync::{Mutex, MutexGuard};

use netpath_tests::{Daemon, LinkGuard, NetNs, host_links, raw_http, require_root, run, unique};

/// These tests compare the host's whole link list before and after each bad input, so
/// they must not run while another test of this file creates links.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn refused(d: &Daemon, args: &[&str], expect: &str) {
    d.refused(args, expect);
}

/// Sends a raw API request that must fail with `status` and a JSON error body, and
/// change nothing.
fn api_refused(
    d: &Daemon,
    method: &str,
    path: &str,
    ct: Option<&str>,
    body: &str,
    status: u16,
    expect: &str,
) {
    let (ls, links) = (d.ls(), host_links());
    let (got, resp) = raw_http(&d.paths.socket, method, path, ct, body.as_bytes());
    assert_eq!(got, status, "{method} {path} {body}: {resp}");
    let v: serde_json::Value =
        serde_json::from_str(&resp).unwrap_or_else(|e| panic!("not JSON ({e}): {resp}"));
    let err = v["error"].as_str().expect("error field");
    assert!(err.contains(expect), "expected {expect:?} in {err:?}");
    assert_eq!(d.ls(), ls);
    assert_eq!(host_links(), links);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    require_root!();
    let _serial = serial();
    let d = Daemon::start();
    let net = unique("bad");
    d.ok(&["network", "create", &net, "--subnet", "10.212.0.0/29"]);
    let ns = NetNs::new("bi");
    let netns = ns.path().display().to_string();

    // Networks.
    refused(
        &d,
        &["network", "create", "x", "--subnet", "10.0.0.0/33"],
        "invalid value '10.0.0.0/33'",
    );
    refused(
        &d,
        &["network", "create", "x", "--subnet", "banana"],
        "invalid value 'banana'",
    );
    refused(
        &d,
        &["network", "create", "x", "--subnet", "10.212.0.4/30"],
        "overlaps network",
    );
    refused(
        &d,
        &["network", "create", "x", "--subnet", "10.212.0.0/16"],
        "overlaps network",
    );
    refused(
        &d,
        &["network", "create", &net, "--subnet", "10.213.0.0/24"],
        "already exists",
    );
    refused(
        &d,
        &["network", "create", "x", "--subnet", "10.214.0.1/24"],
        "invalid subnet",
    );
    refused(
        &d,
        &["network", "create", "x/y", "--subnet", "10.214.0.0/24"],
        "invalid network name",
    );
    refused(
        &d,
        &[
            "network",
            "create",
            "x",
            "--subnet",
            "10.214.0.0/24",
            "--uplink",
            "nosuchif0",
        ],
        "does not exist",
    );
    refused(
        &d,
        &[
            "network",
            "create",
            "x",
            "--subnet",
            "10.214.0.0/24",
            "--mtu",
            "20",
        ],
        "invalid MTU",
    );
    refused(&d, &["network", "rm", "nosuch"], "does not exist");
    // A host route: a link of the test's own with 10.215.0.1/24.
    let (h, p) = (unique("hr"), unique("hq"));
    run(&["ip", "link", "add", &h, "type", "veth", "peer", "name", &p]);
    let _del = LinkGuard(h.clone());
    run(&["ip", "addr", "add", "10.215.0.1/24", "dev", &h]);
    run(&["ip", "link", "set", &h, "up"]);
    refused(
        &d,
        &["network", "create", "x", "--subnet", "10.215.0.0/16"],
        "overlaps the host route",
    );

    // Endpoints.
    refused(
        &d,
        &[
            "endpoint",
            "add",
            &net,
            "--netns",
            "/run/netns/does-not-exist",
        ],
        "does not exist",
    );
    refused(
        &d,
        &["endpoint", "add", &net, "--pid", "999999999"],
        "does not exist",
    );
    refused(
        &d,
        &[
            "endpoint",
            "add",
            &net,
            "--netns",
            &netns,
            "--ifname",
            "a-name-longer-than-15",
        ],
        "invalid interface name",
    );
    refused(
        &d,
        &[
            "endpoint", "add", &net, "--netns", &netns, "--ifname", "a/b",
        ],
        "invalid interface name",
    );
    refused(
        &d,
        &[
            "endpoint",
            "add",
            &net,
            "--netns",
            &netns,
            "--ip",
            "10.99.0.2",
        ],
        "outside",
    );
    refused(
        &d,
        &[
            "endpoint",
            "add",
            &net,
            "--netns",
            &netns,
            "--ip",
            "10.212.0.0",
        ],
        "network address",
    );
    refused(
        &d,
        &[
            "endpoint",
            "add",
            &net,
            "--netns",
            &netns,
            "--ip",
            "10.212.0.1",
        ],
        "gateway",
    );
    refused(
        &d,
        &[
            "endpoint",
            "add",
            &net,
            "--netns",
            &netns,
            "--ip",
            "10.212.0.7",
        ],
        "broadcast",
    );
    refused(
        &d,
        &[
            "endpoint",
            "add",
            &net,
            "--netns",
            &netns,
            "--mac",
            "01:00:00:00:00:01",
        ],
        "unicast",
    );
    refused(
        &d,
        &["endpoint", "add", "nosuch", "--netns", &netns],
        "does not exist",
    );
    refused(&d, &["endpoint", "add", &net], "--netns");
    refused(&d, &["endpoint", "rm", "0123456789ab"], "does not exist");

    // Exhaust the /29 (5 usable addresses), then: exhausted, already leased.
    let nss: Vec<NetNs> = (0..5).map(|_| NetNs::new("bx")).collect();
    for n in &nss {
        d.ok(&[
            "endpoint",
            "add",
            &net,
            "--netns",
            &n.path().display().to_string(),
        ]);
    }
    refused(
        &d,
        &["endpoint", "add", &net, "--netns", &netns],
        "no free address",
    );
    refused(
        &d,
        &[
            "endpoint",
            "add",
            &net,
            "--netns",
            &netns,
            "--ip",
            "10.212.0.2",
        ],
        "already",
    );
    refused(&d, &["network", "rm", &net], "still has 5 endpoints");

    // TAPs.
    let r = unique("rt");
    d.ok(&[
        "network",
        "create",
        &r,
        "--subnet",
        "10.216.0.0/24",
        "--mode",
        "routed",
    ]);
    refused(&d, &["tap", "add", &r, "--name", "tap/x"], "invalid");
    refused(
        &d,
        &["tap", "add", &r, "--name", "a-tap-name-longer-than-15"],
        "invalid",
    );
    refused(
        &d,
        &[
            "tap",
            "add",
            &r,
            "--name",
            &unique("tp"),
            "--uid",
            "4294967296",
        ],
        "invalid value '4294967296'",
    );
    refused(
        &d,
        &[
            "tap",
            "add",
            &r,
            "--name",
            &unique("tp"),
            "--uid",
            "4294967295",
        ],
        "invalid uid",
    );
    refused(
        &d,
        &["tap", "add", &r, "--name", &unique("tp"), "--gid=-1"],
        "invalid value '-1'",
    );
    refused(&d, &["tap", "add", &r, "--name", &h], "already exists");

    // The API itself.
    let json = Some("application/json");
    api_refused(
        &d,
        "POST",
        "/v1/networks",
        json,
        "{not json",
        400,
        "malformed JSON",
    );
    api_refused(
        &d,
        "POST",
        "/v1/networks",
        json,
        r#"{"name":"y","subnet":"10.217.0.0/24","colour":"red"}"#,
        400,
        "unknown field",
    );
    api_refused(
        &d,
        "POST",
        "/v1/networks",
        json,
        r#"{"name":"y","subnet":"300.1.1.0/24"}"#,
        400,
        "invalid",
    );
    api_refused(
        &d,
        "POST",
        "/v1/networks",
        None,
        r#"{"name":"y","subnet":"10.217.0.0/24"}"#,
        415,
        "",
    );
    api_refused(
        &d,
        "DELETE",
        &format!("/v1/networks/{net}"),
        None,
        "",
        409,
        "still has",
    );
    api_refused(&d, "GET", "/v1/nothing", None, "", 404, "no such API route");

    // --force removes a network with its endpoints.
    d.ok(&["network", "rm", &net, "--force"]);
    assert!(d.ls()["endpoints"].as_array().unwrap().is_empty());
}

#[test]
fn cli_says_when_the_daemon_is_down() {
    require_root!();
    let _serial = serial();
    let mut d = Daemon::start();
    d.stop();
    let out = d.cli(&["network", "ls"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("the netpath daemon is not running"),
        "{stderr}"
    );
    assert!(
        stderr.contains("netpath daemon"),
        "no hint on how to start it: {stderr}"
    );
}

#[test]
fn reset_leaves_zero_residue() {
    require_root!();
    let _serial = serial();
    let mut d = Daemon::start();
    let b = unique("zr");
    let r = unique("zs");
    d.ok(&["network", "create", &b, "--subnet", "10.218.0.0/24"]);
    d.ok(&[
        "network",
        "create",
        &r,
        "--subnet",
        "10.219.0.0/24",
        "--mode",
        "routed",
    ]);
    let nss: Vec<NetNs> = (0..4).map(|_| NetNs::new("zr")).collect();
    for (i, n) in nss.iter().enumerate() {
        let net = if i % 2 == 0 { &b } else { &r };
        d.ok(&[
            "endpoint",
            "add",
            net,
            "--netns",
            &n.path().display().to_string(),
        ]);
    }
    let taps: Vec<String> = (0..2).map(|_| unique("zt")).collect();
    for (t, net) in taps.iter().zip([&b, &r]) {
        d.ok(&["tap", "add", net, "--name", t, "--uid", "1000"]);
    }
    let tagged = d.tagged_links();
    assert_eq!(tagged.len(), 1 + 4 + 2, "bridge + veths + taps: {tagged:?}");
    // The bridge's tcx link is pinned (endpoint devices carry cls_bpf filters instead).
    assert!(d.paths.bpffs.join("links").read_dir().unwrap().count() >= 1);
    d.stop();

    let out = d.cli(&["reset", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        d.tagged_links().is_empty(),
        "links left: {:?}",
        d.tagged_links()
    );
    let links = host_links();
    for t in &taps {
        assert!(!links.contains(t), "TAP {t} left");
    }
    assert!(
        !links
            .iter()
            .any(|l| l.starts_with("np-") && tagged.contains(l))
    );
    assert!(!d.paths.bpffs.exists(), "pins left");
    assert!(!d.paths.state_dir.exists(), "state left");
    assert!(!d.paths.socket.exists(), "socket left");
    // The namespaces' container ends went with their pairs.
    for n in &nss {
        let out = n.exec(&["ip", "-o", "link"]);
        assert!(!String::from_utf8_lossy(&out.stdout).contains("eth0"));
    }
}
