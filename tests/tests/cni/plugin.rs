//! Running the plugin as a runtime would, and what the tests read back from the daemon.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netpath_tests::{Daemon, LinkGuard, NetNs, cni_bin, run, unique};
use serde_json::{Value, json};

/// One plugin run: (exit code, stdout parsed as JSON, or Null when empty).
pub fn cni(env: &[(&str, &str)], stdin: &str) -> (i32, Value) {
    let mut child = Command::new(cni_bin())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netpath-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    // A plugin that never finishes is a hung runtime: bounded wait, then fail.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("netpath-cni did not finish within 60 s ({env:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
    };
    (out.status.code().expect("exit code"), v)
}

/// Asserts the spec's error shape with `code`; returns the message.
pub fn expect_error(out: (i32, Value), code: u64, what: &str) -> String {
    let (status, v) = out;
    assert_eq!(status, 1, "{what}: exit status, output {v}");
    assert_eq!(v["code"].as_u64(), Some(code), "{what}: {v}");
    assert!(v["cniVersion"].is_string(), "{what}: {v}");
    let msg = v["msg"].as_str().unwrap_or_default().to_owned();
    assert!(!msg.is_empty() && !msg.contains('\n'), "{what}: {v}");
    msg
}

/// One invocation for an attachment: the command, container id, interface, namespace.
pub struct Attach<'a> {
    pub cmd: &'a str,
    pub id: &'a str,
    pub ifname: &'a str,
    pub netns: Option<&'a Path>,
}

impl Attach<'_> {
    pub fn run(&self, conf: &Value) -> (i32, Value) {
        let netns = self.netns.map(|p| p.display().to_string());
        let mut env = vec![
            ("CNI_COMMAND", self.cmd),
            ("CNI_CONTAINERID", self.id),
            ("CNI_IFNAME", self.ifname),
            ("CNI_PATH", "/usr/lib/cni"),
        ];
        if let Some(n) = &netns {
            env.push(("CNI_NETNS", n));
        }
        cni(&env, &conf.to_string())
    }
}

/// ADD of `id` in `ns`, which must succeed; the result.
pub fn add(id: &str, ns: &NetNs, conf: &Value) -> Value {
    let (status, v) = Attach {
        cmd: "ADD",
        id,
        ifname: "eth0",
        netns: Some(&ns.path()),
    }
    .run(conf);
    assert_eq!(status, 0, "ADD {id}: {v}");
    v
}

/// ADD of `id` in `ns` with `CNI_ARGS` `args` (e.g. `IP=…`).
pub fn add_with_args(id: &str, ns: &NetNs, conf: &Value, args: &str) -> (i32, Value) {
    let netns = ns.path().display().to_string();
    cni(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
            ("CNI_NETNS", &netns),
            ("CNI_ARGS", args),
        ],
        &conf.to_string(),
    )
}

/// DEL of `id`, which must succeed and print nothing.
pub fn del(id: &str, netns: Option<&Path>, conf: &Value) {
    let (status, v) = Attach {
        cmd: "DEL",
        id,
        ifname: "eth0",
        netns,
    }
    .run(conf);
    assert_eq!(status, 0, "DEL {id}: {v}");
    assert_eq!(v, Value::Null, "DEL prints nothing");
}

/// CHECK of `id` in `ns`.
pub fn check(id: &str, ns: &NetNs, conf: &Value) -> (i32, Value) {
    Attach {
        cmd: "CHECK",
        id,
        ifname: "eth0",
        netns: Some(&ns.path()),
    }
    .run(conf)
}

/// The daemon's endpoints.
pub fn endpoints(d: &Daemon) -> Vec<Value> {
    d.ls()["endpoints"].as_array().cloned().unwrap_or_default()
}

/// The daemon's port leases.
pub fn ports(d: &Daemon) -> Vec<Value> {
    serde_json::from_str::<Value>(&d.ok(&["port", "ls", "--json"]))
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A veth pair without addresses as the network's uplink, so that the daemon touches
/// no host interface (an uplink without an address gets no masquerade).
pub fn private_uplink() -> LinkGuard {
    let up = unique("cu");
    run(&[
        "ip",
        "link",
        "add",
        &up,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{up}p"),
    ]);
    LinkGuard(up)
}

/// A configuration (1.1.0) of network `name` on `subnet`, with `dns`.
pub fn conf(name: &str, subnet: &str, socket: &Path) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": name,
        "type": "netpath-cni",
        "subnet": subnet,
        "socket": socket,
        "dns": {"nameservers": ["10.0.0.53"], "search": ["example.test"]},
    })
}
