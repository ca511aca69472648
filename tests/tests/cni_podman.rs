//! Real podman (CNI backend, runc) with `netpath-cni` as its network plugin, on a busybox
//! root filesystem and a dual-stack network: the container gets an address of each
//! family from netpath (and podman reports both) and pings its IPv6 gateway, reaches a
//! server in another namespace through netpath's masquerade, serves `-p 18080:80` to a
//! client in that namespace, and `podman rm` leaves no endpoint, lease, device or map
//! entry; 20 containers started in parallel get distinct addresses of both families.
//!
//! Everything podman uses is private to the test: its --root, --runroot and --tmpdir,
//! the CNI configuration directory and the plugin directory (through `CONTAINERS_CONF`),
//! so nothing under /etc is read or written.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use netpath_tests::{
    Daemon, Ipv6ForwardingRestored, NetNs, OutsideLink, cni_bin, engine::busybox_rootfs,
    pinned_map_len, require_root, run, unique,
};
use serde_json::{Value, json};

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const UPLINK: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const SUBNET: &str = "10.246.0.0/24";
const SUBNET6: &str = "fd46::/64";
const GATEWAY6: &str = "fd46::1";
const MARKER: &str = "served-by-busybox-httpd-through-netpath";
/// Bound on one podman command.
const PODMAN_TIMEOUT: &str = "120";

/// A private podman set-up in a temp dir; on drop, removes every container it ran and
/// the directory.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new(conflist: &Value) -> Podman {
        let dir = std::env::temp_dir().join(format!("netpath-podman-{}", unique("p")));
        let p = Podman { dir };
        for sub in ["cni-conf", "cni-bin", "root", "runroot", "tmp"] {
            std::fs::create_dir_all(p.dir.join(sub)).unwrap();
        }
        std::os::unix::fs::symlink(cni_bin(), p.dir.join("cni-bin/netpath-cni")).unwrap();
        std::fs::write(
            p.dir.join("cni-conf/netpath.conflist"),
            serde_json::to_string_pretty(conflist).unwrap(),
        )
        .unwrap();
        std::fs::write(
            p.dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n",
                p.dir.join("cni-bin").display(),
                p.dir.join("cni-conf").display()
            ),
        )
        .unwrap();
        busybox_rootfs(&p.rootfs(), MARKER);
        p
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// `podman <global flags> ARGS`, bounded by `timeout`.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .args([PODMAN_TIMEOUT, "podman", "--root"])
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args([
                "--events-backend",
                "none",
                "--runtime",
                "runc",
                "--cgroup-manager=cgroupfs",
                "--network-backend",
                "cni",
                "--cni-config-dir",
            ])
            .arg(self.dir.join("cni-conf"))
            .args(args);
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run podman")
    }

    /// Runs podman; panics with its output unless it succeeds; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `podman run` on the busybox root filesystem with `extra` options, then `cmd`.
    fn run_args<'a>(&'a self, rootfs: &'a str, extra: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "run",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--rootfs", rootfs]);
        a.extend_from_slice(cmd);
        a
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(&["rm", "--all", "--force", "--time", "0"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The IPv4 and the IPv6 address (with prefix) in `ip -o addr` output.
fn addresses(out: &str) -> (String, String) {
    let after = |family: &str| {
        out.split_whitespace()
            .skip_while(|w| *w != family)
            .nth(1)
            .unwrap_or_else(|| panic!("no {family} address in {out:?}"))
            .to_owned()
    };
    (after("inet"), after("inet6"))
}

/// Waits (bounded) until the daemon lists no endpoint.
fn wait_no_endpoints(d: &Daemon) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let eps = d.ls()["endpoints"].as_array().cloned().unwrap_or_default();
        if eps.is_empty() || Instant::now() > deadline {
            return eps;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn podman_containers_on_a_netpath_network() {
    require_root!();
    // Test traffic must stay between our namespaces: refuse to run where the test
    // addresses are routed by the host already.
    let routed = run(&[
        "ip",
        "-4",
        "route",
        "show",
        "table",
        "all",
        "root",
        "203.0.113.0/24",
    ]);
    let addrs = run(&["ip", "-4", "-o", "addr", "show"]);
    assert!(
        routed.stdout.is_empty() && !String::from_utf8_lossy(&addrs.stdout).contains(" 203.0.113."),
        "the host already routes 203.0.113.0/24, which this test uses for its own namespaces: {}",
        String::from_utf8_lossy(&routed.stdout)
    );
    // The outside: a namespace behind the host's veth `up`, the network's uplink.
    let outside = NetNs::new("ko");
    let uplink = OutsideLink::new(&outside, UPLINK, OUTSIDE);
    let up = uplink.name.clone();

    let _forwarding = Ipv6ForwardingRestored::new();
    let d = Daemon::start();
    let net = unique("kn");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [{
            "type": "netpath-cni",
            "subnets": [SUBNET, SUBNET6],
            "mode": "bridge",
            "uplink": up,
            "socket": d.paths.socket,
            "capabilities": {"portMappings": true, "ips": true, "mac": true}
        }]
    });
    let pm = Podman::new(&conflist);
    let rootfs = pm.rootfs().display().to_string();
    let network = format!("--network={net}");

    // 1. The container's addresses come from netpath, and it reaches its IPv6 gateway;
    //    it reaches the outside server, which sees the uplink's address (masquerade).
    let listener = outside.enter(|| TcpListener::bind((OUTSIDE, 7300)).unwrap());
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match listener.accept() {
                Ok((mut c, peer)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut line = [0u8; 5];
                    let _ = c.read_exact(&mut line);
                    let _ = c.write_all(format!("peer={}\n", peer.ip()).as_bytes());
                    return Some(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    let script = format!(
        "ip -o addr show eth0 scope global; ping -6 -c 1 -W 2 {GATEWAY6} && echo ping6-ok; echo ping | nc -w 5 {OUTSIDE} 7300"
    );
    let out = pm.ok(&pm.run_args(&rootfs, &["--rm", &network], &["/bin/sh", "-c", &script]));
    let peer = server.join().unwrap();
    assert_eq!(
        peer.map(|p| p.ip()),
        Some(std::net::IpAddr::V4(UPLINK)),
        "the outside server saw {peer:?}; container output: {out}"
    );
    assert!(out.contains(&format!("peer={UPLINK}")), "{out}");
    let (addr, addr6) = addresses(&out);
    assert!(
        addr.starts_with("10.246.0.") && addr.ends_with("/24"),
        "container address {addr} is not from {SUBNET}"
    );
    assert!(
        addr6.starts_with("fd46::") && addr6.ends_with("/64"),
        "container address {addr6} is not from {SUBNET6}"
    );
    assert!(out.contains("ping6-ok"), "no answer from {GATEWAY6}: {out}");
    let eps = wait_no_endpoints(&d);
    assert!(eps.is_empty(), "--rm left endpoints: {eps:?}");

    // 2. `-p 18080:80`: busybox httpd answers a client in the outside namespace on the
    //    uplink's address.
    let name = unique("web");
    let id = pm
        .ok(&pm.run_args(
            &rootfs,
            &["-d", "--name", &name, &network, "-p", "18080:80"],
            &["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
        ))
        .trim()
        .to_owned();
    // podman read both families from the result.
    let inspect: Value = serde_json::from_str(&pm.ok(&["inspect", &name])).unwrap();
    let seen = &inspect[0]["NetworkSettings"]["Networks"][&net];
    assert!(
        seen["IPAddress"]
            .as_str()
            .unwrap_or("")
            .starts_with("10.246.0."),
        "{seen}"
    );
    assert!(
        seen["GlobalIPv6Address"]
            .as_str()
            .unwrap_or("")
            .starts_with("fd46::"),
        "{seen}"
    );
    assert_eq!(seen["GlobalIPv6PrefixLen"], 64, "{seen}");
    assert_eq!(seen["IPv6Gateway"], GATEWAY6, "{seen}");
    let eps = d.ls()["endpoints"].as_array().cloned().unwrap_or_default();
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0]["container_id"], id.as_str(), "{eps:?}");
    let host_if = eps[0]["host_ifname"].as_str().unwrap().to_owned();
    let leases: Value = serde_json::from_str(&d.ok(&["port", "ls", "--json"])).unwrap();
    assert_eq!(leases[0]["id"], "tcp/0.0.0.0:18080", "{leases}");
    let bpffs = d.paths.bpffs.clone();
    assert_eq!(pinned_map_len(&bpffs, "NETPATH_ENDPOINTS"), 1);
    assert!(pinned_map_len(&bpffs, "NETPATH_PUBLISH") >= 1);
    let body = outside
        .spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let attempt = (|| -> std::io::Result<String> {
                    let mut c = TcpStream::connect_timeout(
                        &SocketAddr::from((UPLINK, 18080)),
                        Duration::from_secs(2),
                    )?;
                    c.set_read_timeout(Some(Duration::from_secs(5)))?;
                    c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
                    let mut s = String::new();
                    c.read_to_string(&mut s)?;
                    Ok(s)
                })();
                match attempt {
                    Ok(s) if s.contains(MARKER) => return Ok(s),
                    other if Instant::now() > deadline => return Err(format!("{other:?}")),
                    _ => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        })
        .join()
        .unwrap();
    let body = body.unwrap_or_else(|e| panic!("no answer on {UPLINK}:18080: {e}"));
    assert!(body.starts_with("HTTP/1."), "{body}");

    // 3. `podman rm` leaves nothing: no endpoint, lease, device or map entry.
    pm.ok(&["rm", "--force", "--time", "0", &name]);
    let eps = wait_no_endpoints(&d);
    assert!(eps.is_empty(), "podman rm left endpoints: {eps:?}");
    let leases: Value = serde_json::from_str(&d.ok(&["port", "ls", "--json"])).unwrap();
    assert_eq!(leases, json!([]), "podman rm left port leases");
    assert!(
        !Path::new("/sys/class/net").join(&host_if).exists(),
        "podman rm left {host_if}"
    );
    assert_eq!(pinned_map_len(&bpffs, "NETPATH_ENDPOINTS"), 0);
    assert_eq!(pinned_map_len(&bpffs, "NETPATH_PUBLISH"), 0);

    // 4. 20 containers started in parallel (and running together) get distinct
    //    addresses of both families; removing them in parallel leaves nothing.
    let started = Instant::now();
    let names: Vec<String> = (0..20).map(|_| unique("par")).collect();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let (pm, rootfs, network) = (&pm, &rootfs, &network);
                s.spawn(move || {
                    pm.ok(&pm.run_args(
                        rootfs,
                        &["-d", "--name", name, network],
                        &["/bin/sleep", "600"],
                    ))
                    .trim()
                    .to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!("20 parallel podman runs took {:?}", started.elapsed());
    let (mut addrs, mut addrs6): (Vec<String>, Vec<String>) = names
        .iter()
        .map(|name| {
            addresses(&pm.ok(&[
                "exec", name, "ip", "-o", "addr", "show", "eth0", "scope", "global",
            ]))
        })
        .unzip();
    for (all, prefix) in [(&mut addrs, "10.246.0."), (&mut addrs6, "fd46::")] {
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 20, "addresses not distinct: {all:?}");
        assert!(all.iter().all(|a| a.starts_with(prefix)), "{all:?}");
    }
    let eps = d.ls()["endpoints"].as_array().cloned().unwrap_or_default();
    let mut cids: Vec<&str> = eps
        .iter()
        .map(|e| e["container_id"].as_str().unwrap_or("-"))
        .collect();
    cids.sort();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(cids, want, "netpath's endpoints are not the 20 containers");
    let started = Instant::now();
    std::thread::scope(|s| {
        for name in &names {
            let pm = &pm;
            s.spawn(move || pm.ok(&["rm", "--force", "--time", "0", name]));
        }
    });
    eprintln!("20 parallel podman rm took {:?}", started.elapsed());
    let eps = wait_no_endpoints(&d);
    assert!(eps.is_empty(), "podman rm left endpoints: {eps:?}");
    assert_eq!(pinned_map_len(&bpffs, "NETPATH_ENDPOINTS"), 0);
    let leftover: Vec<String> = d
        .tagged_links()
        .into_iter()
        .filter(|l| *l != netpath::config::bridge_name(&net))
        .collect();
    assert!(leftover.is_empty(), "podman rm left devices: {leftover:?}");
}
