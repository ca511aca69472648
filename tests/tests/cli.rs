//! The CLI a Docker user expects, end to end against a daemon: id prefixes, several ids
//! per `rm`, `-q`, `--filter`, `tap ls`, `inspect`, `stats` through the API of
//! `--socket` (endpoints by id), aligned tables with a STATE column, `--version` with the
//! commit, completions and the manual page; and the refusals of the robustness issue
//! (`tap rm` of a container endpoint, a second daemon on a served socket, a namespace
//! that is the host's or no namespace at all, a name taken inside the namespace, a MAC
//! already in the network, a loopback uplink, a malformed container id).

use std::collections::BTreeSet;

use netpath_tests::{Daemon, DaemonPaths, NetNs, host_links, raw_http, require_root, unique};

/// The tests here compare the host's whole link list around refused commands, so they
/// run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn refused(d: &Daemon, args: &[&str], expect: &str) {
    d.refused(args, expect);
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

#[test]
fn listings_inspect_prefixes_and_stats() {
    require_root!();
    let _serial = serial();
    let d = Daemon::start();
    let (web, vms) = (unique("cw"), unique("cv"));
    d.ok(&["network", "create", &web, "--subnet", "10.218.0.0/24"]);
    d.ok(&[
        "network",
        "create",
        &vms,
        "--subnet",
        "10.219.0.0/24",
        "--mode",
        "routed",
    ]);
    let nss: Vec<NetNs> = (0..2).map(|_| NetNs::new("cl")).collect();
    let veths: Vec<serde_json::Value> = nss
        .iter()
        .map(|ns| {
            json(&d.ok(&[
                "endpoint",
                "add",
                &web,
                "--netns",
                &ns.path().display().to_string(),
                "--json",
            ]))
        })
        .collect();
    let tap_name = unique("ct");
    let tap = json(&d.ok(&["tap", "add", &vms, "--name", &tap_name, "--json"]));
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_owned();
    let (v0, v1, t) = (id(&veths[0]), id(&veths[1]), id(&tap));

    // -q: ids only; --filter narrows; tap ls lists TAPs only.
    let all: BTreeSet<String> = lines(&d.ok(&["ls", "-q"])).into_iter().collect();
    assert_eq!(all, BTreeSet::from([v0.clone(), v1.clone(), t.clone()]));
    let mut webs = lines(&d.ok(&[
        "endpoint",
        "ls",
        "-q",
        "--filter",
        &format!("network={web}"),
    ]));
    webs.sort();
    let mut want = vec![v0.clone(), v1.clone()];
    want.sort();
    assert_eq!(webs, want);
    assert_eq!(lines(&d.ok(&["tap", "ls", "-q"])), std::slice::from_ref(&t));
    assert_eq!(
        lines(&d.ok(&[
            "ls",
            "-q",
            "--filter",
            "kind=tap",
            "--filter",
            &format!("network={vms}")
        ])),
        std::slice::from_ref(&t)
    );
    assert!(d.ok(&["ls", "-q", "--filter", "state=creating"]).is_empty());
    let mut nets = lines(&d.ok(&["network", "ls", "-q"]));
    nets.sort();
    let mut want_nets = vec![web.clone(), vms.clone()];
    want_nets.sort();
    assert_eq!(nets, want_nets);
    refused(
        &d,
        &["ls", "--filter", "color=red"],
        "unknown filter key \"color\"",
    );
    refused(&d, &["ls", "--filter", "kind=vm"], "use veth or tap");

    // The table: aligned columns, a STATE column, every row as wide as the header says.
    let table = d.ok(&["endpoint", "ls"]);
    let rows = lines(&table);
    assert!(rows[0].starts_with("ID "), "{table}");
    let state_at = rows[0].find("STATE").expect("STATE column");
    let ip_at = rows[0].find("IP ").expect("IP column");
    for r in &rows[1..] {
        assert_eq!(&r[state_at..state_at + 5], "ready", "{table}");
        assert!(r[ip_at..].starts_with("10.21"), "{table}");
    }

    // Id prefixes: a unique one names its endpoint; a prefix of several is refused.
    let short = &v0[..6];
    let shown = json(&d.ok(&["inspect", short]));
    assert_eq!(shown[0]["id"], v0.as_str());

    // inspect: a network by name, an endpoint by id, a lease by its id; one JSON array.
    d.ok(&["port", "publish", &v0, "-p", "18500:80"]);
    let shown = json(&d.ok(&["inspect", &web, &t, "tcp/0.0.0.0:18500"]));
    assert_eq!(shown[0]["name"], web.as_str());
    assert_eq!(shown[1]["host_ifname"], tap_name.as_str());
    assert_eq!(shown[2]["endpoint"], v0.as_str());
    let out = d.cli(&["inspect", &web, "nosuchthing"]);
    assert!(!out.status.success());
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))[0]["name"],
        web.as_str()
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no network, endpoint or published port nosuchthing")
    );
    // port ls filters and -q.
    assert_eq!(
        lines(&d.ok(&["port", "ls", "-q", "--filter", &format!("endpoint={short}")])),
        ["tcp/0.0.0.0:18500"]
    );
    assert!(
        d.ok(&["port", "ls", "-q", "--filter", "proto=udp"])
            .is_empty()
    );

    // stats through the API on --socket: endpoints under their ids and networks.
    let stats = json(&d.ok(&["stats", "--json"]));
    let by_id: BTreeSet<String> = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().expect("endpoint id in stats").to_owned())
        .collect();
    assert_eq!(by_id, BTreeSet::from([v0.clone(), v1.clone(), t.clone()]));
    let (status, body) = raw_http(&d.paths.socket, "GET", "/v1/stats", None, b"");
    assert_eq!(status, 200);
    assert!(json(&body)["forwards"].is_array());
    let text = d.ok(&["stats"]);
    assert!(text.contains(&v0) && text.contains(&web), "{text}");

    // tap rm refuses a container endpoint (nothing removed); rm takes several ids.
    refused(
        &d,
        &["tap", "rm", &t, &v1],
        "is a container endpoint (veth), not a microVM TAP",
    );
    let gone = d.ok(&["endpoint", "rm", &v1[..8], &t]);
    assert_eq!(gone.lines().count(), 2, "{gone}");
    assert_eq!(lines(&d.ok(&["ls", "-q"])), std::slice::from_ref(&v0));
    // One of several failing: the others are still removed, and the command fails.
    let out = d.cli(&["endpoint", "rm", "0123456789ab", &v0]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 endpoints not removed"));
    assert!(d.ok(&["ls", "-q"]).is_empty());
    d.ok(&["network", "rm", &web, &vms]);
    assert!(d.ok(&["network", "ls", "-q"]).is_empty());
}

#[test]
fn version_completions_and_manual() {
    // No daemon, no root: these are the binary's own.
    let d = DaemonPaths::new();
    let out = d.netpath(&["--version"]);
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    // "netpath 0.1.0 (<commit>)": a hex commit (maybe -dirty), or "unknown" outside git.
    let commit = v
        .trim()
        .rsplit_once('(')
        .and_then(|(_, c)| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no commit in {v:?}"));
    let hex = commit.trim_end_matches("-dirty");
    assert!(
        commit == "unknown" || (hex.len() >= 7 && hex.chars().all(|c| c.is_ascii_hexdigit())),
        "{v}"
    );
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef netpath"),
        ("fish", "complete -c netpath"),
    ] {
        let out = d.netpath(&["completions", shell]);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && script.contains(marker),
            "{shell}: {script:.200}"
        );
        assert!(
            script.contains("inspect"),
            "{shell} completes no subcommands"
        );
    }
    let man = d.netpath(&["man"]);
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH netpath 1"),
        "{page:.200}"
    );
    let out = d.netpath(&["completions", "tcsh"]);
    assert!(!out.status.success());
}

#[test]
fn wrong_but_plausible_input_is_refused_with_a_clear_message() {
    require_root!();
    let _serial = serial();
    let d = Daemon::start();
    let net = unique("cb");
    d.ok(&["network", "create", &net, "--subnet", "10.222.0.0/24"]);
    let ns = NetNs::new("cb");
    let nsp = ns.path().display().to_string();
    // The host's own namespace, by a host process's pid or by path. (PID 1's may not
    // even be open to the daemon here: refused either way.)
    let me = std::process::id().to_string();
    refused(
        &d,
        &["endpoint", "add", &net, "--pid", &me],
        "is the host's own network namespace",
    );
    let out = d.cli(&["endpoint", "add", &net, "--pid", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--pid 1 accepted");
    assert!(
        err.contains("host's own") || err.contains("permission denied"),
        "{err}"
    );
    for (netns, expect) in [
        ("/proc/self/ns/net", "is the host's own network namespace"),
        // A file that is no namespace; another kind of namespace; nothing.
        ("/etc/hostname", "is not a network namespace"),
        ("/proc/self/ns/mnt", "is not a network namespace"),
        ("/run/netns/nope-nope", "does not exist"),
    ] {
        refused(&d, &["endpoint", "add", &net, "--netns", netns], expect);
    }
    // A name taken inside the namespace.
    d.ok(&[
        "endpoint",
        "add",
        &net,
        "--netns",
        &nsp,
        "--mac",
        "02:aa:00:00:00:01",
    ]);
    refused(
        &d,
        &["endpoint", "add", &net, "--netns", &nsp],
        "already has an interface named eth0",
    );
    // A MAC already in the network.
    refused(
        &d,
        &[
            "endpoint",
            "add",
            &net,
            "--netns",
            &nsp,
            "--ifname",
            "eth1",
            "--mac",
            "02:aa:00:00:00:01",
        ],
        "MAC 02:aa:00:00:00:01 is already used by endpoint",
    );
    // Uplinks that cannot be: loopback, a netpath bridge.
    refused(
        &d,
        &[
            "network",
            "create",
            "x",
            "--subnet",
            "10.223.0.0/24",
            "--uplink",
            "lo",
        ],
        "is a loopback device",
    );
    refused(
        &d,
        &[
            "network",
            "create",
            "x",
            "--subnet",
            "10.223.0.0/24",
            "--uplink",
            &format!("np-{net}"),
        ],
        "is a device netpath made",
    );
    refused(
        &d,
        &[
            "network",
            "create",
            "x",
            "--subnet",
            "10.223.0.0/24",
            "--no-masquerade",
            "10.9.9.9/8",
        ],
        "invalid --no-masquerade 10.9.9.9/8: give the network address (e.g. 10.0.0.0/8)",
    );
    // A container id the CNI spec would not allow, through the API.
    let (ls, links) = (d.ls(), host_links());
    for bad in ["", "-x", "a b", "a/b", &"x".repeat(300)] {
        let body = format!(
            r#"{{"network":"{net}","netns":"{nsp}","ifname":"eth9","container_id":"{bad}"}}"#
        );
        let (status, resp) = raw_http(
            &d.paths.socket,
            "POST",
            "/v1/endpoints",
            Some("application/json"),
            body.as_bytes(),
        );
        assert_eq!(status, 400, "{bad:?}: {resp}");
        assert!(resp.contains("invalid container id"), "{resp}");
    }
    assert_eq!((d.ls(), host_links()), (ls, links));
}

/// A second daemon pointed at a socket another one serves refuses to start before it
/// touches the kernel: nothing pinned under its own --bpffs, its state untouched.
#[test]
fn a_second_daemon_on_a_served_socket_changes_nothing() {
    require_root!();
    let _serial = serial();
    let d = Daemon::start();
    let other = DaemonPaths::new();
    let mut args = vec!["--no-default-network".to_owned()];
    args.extend([
        "--state-dir".to_owned(),
        other.state_dir.display().to_string(),
        "--socket".to_owned(),
        d.paths.socket.display().to_string(),
        "--bpffs".to_owned(),
        other.bpffs.display().to_string(),
    ]);
    let out = std::process::Command::new(netpath_tests::netpath_bin())
        .arg("daemon")
        .arg("--no-docker-plugin")
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second daemon started");
    assert!(err.contains("another daemon is listening on"), "{err}");
    assert!(
        !other.bpffs.exists() || std::fs::read_dir(&other.bpffs).unwrap().next().is_none(),
        "pinned under {}",
        other.bpffs.display()
    );
    // The first one still answers.
    let (status, _) = raw_http(&d.paths.socket, "GET", "/v1/version", None, b"");
    assert_eq!(status, 200);
}

/// An endpoint added with `--pid` lives on after that process exits, as long as its
/// namespace does (here held by `ip netns`): a daemon restart keeps it.
#[test]
fn a_pid_endpoint_outlives_its_process_while_the_namespace_lives() {
    require_root!();
    let _serial = serial();
    let mut d = Daemon::start();
    let net = unique("cp");
    d.ok(&["network", "create", &net, "--subnet", "10.224.0.0/24"]);
    let ns = NetNs::new("cp");
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "sleep", "30"])
        .spawn()
        .unwrap();
    // `ip netns exec` execs sleep in the namespace: the child's pid is sleep's.
    let pid = child.id().to_string();
    let start = std::time::Instant::now();
    while std::fs::read_link(format!("/proc/{pid}/exe")).map_or(true, |p| !p.ends_with("sleep"))
        && start.elapsed() < std::time::Duration::from_secs(5)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let ep = json(&d.ok(&["endpoint", "add", &net, "--pid", &pid, "--json"]));
    let _ = child.kill();
    let _ = child.wait();
    d.kill9();
    d.restart();
    let ls = d.ls();
    assert_eq!(
        ls["endpoints"][0]["id"], ep["id"],
        "the endpoint was removed: {ls}"
    );
    d.assert_consistent_within(&[&ns], std::time::Duration::from_secs(5));
}
