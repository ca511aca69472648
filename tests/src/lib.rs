//! Helpers for netpath's integration tests: root gating, unique names, network
//! namespaces and links that clean up after themselves, temporary bpffs pin roots and
//! crafted frames.
//!
//! Test setup shells out to `ip` on purpose: it is an independent implementation to set
//! up and check against, not the code under test.

pub mod consistency;
pub mod echo;
pub mod engine;
pub mod frames;
pub mod guard6;
pub mod outside;
pub mod prom;
pub mod raw;
pub mod vm;

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};

/// True if the test may use root-only kernel features. Otherwise prints why the test is
/// skipped, or, under CI (`CI=true`), fails: in CI the root tests must run.
pub fn root_or_skip(test: &str) -> bool {
    if netpath::preflight::has_privileges() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: root tests must run in CI, but this process lacks CAP_NET_ADMIN/CAP_BPF"
    );
    eprintln!(
        "SKIP {test}: needs root (CAP_NET_ADMIN and CAP_BPF); run `sudo -E cargo xtask test`"
    );
    false
}

/// Skips the calling test (returns) unless running with root privileges.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::root_or_skip(module_path!()) {
            return;
        }
    };
}

/// A name unique to this process and call, at most 15 bytes (an interface name):
/// `prefix` (≤ 5 bytes) + pid + counter.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    assert!(prefix.len() <= 5, "prefix too long for an interface name");
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id());
    assert!(name.len() <= 15, "{name} is too long");
    name
}

/// Runs a command; panics with its output if it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawning {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A named network namespace (`ip netns add`), deleted on drop with everything in it.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace with loopback up and IPv6 off (no background ICMPv6 noise).
    pub fn new(prefix: &str) -> NetNs {
        let ns = NetNs {
            name: unique(prefix),
        };
        run(&["ip", "netns", "add", &ns.name]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    /// Creates the namespace with loopback up and IPv6 on, as a dual-stack container's.
    pub fn with_ipv6(prefix: &str) -> NetNs {
        let ns = NetNs {
            name: unique(prefix),
        };
        run(&["ip", "netns", "add", &ns.name]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace; panics if it fails.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Adds a veth pair `name`/`{name}p` inside the namespace, both ends up (gone with
    /// the namespace); returns the ifindex of `name` (e.g. for BPF_PROG_TEST_RUN, which
    /// resolves `__sk_buff.ifindex`, and `bpf_fib_lookup` routes, in the caller's
    /// namespace).
    pub fn veth(&self, name: &str) -> u32 {
        let peer = format!("{name}p");
        self.exec(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
        ]);
        self.exec(&["ip", "link", "set", name, "up"]);
        self.exec(&["ip", "link", "set", &peer, "up"]);
        let out = self.exec(&["ip", "-j", "link", "show", name]);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        links[0]["ifindex"].as_u64().expect("ifindex") as u32
    }

    /// Runs `f` on a thread that has entered this namespace (only that thread moves).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = fs::File::open(self.path()).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }

    /// Spawns a thread that enters this namespace and runs `f` there.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let file = fs::File::open(self.path()).expect("open netns");
        std::thread::spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }

    /// The ifindex of `ifname` inside this namespace.
    pub fn ifindex(&self, ifname: &str) -> u32 {
        let out = self.exec(&["cat", &format!("/sys/class/net/{ifname}/ifindex")]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("ifindex")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace would delete its veth ends (and so their peers in the
        // host) too, but asynchronously, in the kernel's namespace cleanup, a moment
        // later: a later check of the host's links would see them vanish. Deleting
        // each link first is synchronous (both ends of a veth go at once).
        let links = Command::new("ip")
            .args(["-n", &self.name, "-j", "link", "show"])
            .output();
        let links: Vec<String> = links
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .filter(|name| name != "lo")
            .collect();
        for link in links {
            let _ = Command::new("ip")
                .args(["-n", &self.name, "link", "del", &link])
                .output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins two namespaces with a veth pair: `a_if` in `a` with `a_ip`, `b_if` in `b`
/// with `b_ip` (both /24), both up. The pair dies with either namespace.
pub fn veth_between(a: &NetNs, a_if: &str, a_ip: &str, b: &NetNs, b_if: &str, b_ip: &str) {
    run(&[
        "ip",
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    a.exec(&["ip", "addr", "add", &format!("{a_ip}/24"), "dev", a_if]);
    b.exec(&["ip", "addr", "add", &format!("{b_ip}/24"), "dev", b_if]);
    a.exec(&["ip", "link", "set", a_if, "up"]);
    b.exec(&["ip", "link", "set", b_if, "up"]);
}

/// A unique bpffs pin root, removed (with every pin, so every attachment) on drop.
pub struct TempPins {
    pub path: PathBuf,
}

impl TempPins {
    pub fn new() -> TempPins {
        ensure_bpffs();
        TempPins {
            path: Path::new("/sys/fs/bpf").join(format!("netpath-test-{}", unique("p"))),
        }
    }
}

impl Default for TempPins {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempPins {
    fn drop(&mut self) {
        if let Err(e) = netpath::datapath::remove_pins(&self.path) {
            eprintln!("cleanup of {}: {e}", self.path.display());
        }
    }
}

/// Fails the test with a clear message if /sys/fs/bpf is not a bpffs mount
/// (`cargo xtask setup` mounts it).
pub fn ensure_bpffs() {
    if let Err(e) = netpath::preflight::require_bpffs(Path::new("/sys/fs/bpf/x")) {
        panic!("{e} ({})", e.hint.clone().unwrap_or_default());
    }
}

/// The `netpath` binary under test: `$NETPATH_BIN` (set by `cargo xtask test`), else the
/// newest of target/{release,debug}/netpath.
pub fn netpath_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETPATH_BIN") {
        return p.into();
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("netpath"))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .expect("no netpath binary: run the suite with `cargo xtask test` (or `cargo xtask build`)")
}

/// The `netpath-cni` plugin under test: `$NETPATH_CNI_BIN`, else the one next to
/// [`netpath_bin`] (`cargo xtask build` builds both into the same directory).
pub fn cni_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETPATH_CNI_BIN") {
        return p.into();
    }
    let bin = netpath_bin().with_file_name("netpath-cni");
    assert!(
        bin.is_file(),
        "no {} (set NETPATH_CNI_BIN, or build with `cargo xtask build`)",
        bin.display()
    );
    bin
}

/// A private set of daemon paths (state dir, socket, bpffs pins) for one test.
pub struct DaemonPaths {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
}

impl DaemonPaths {
    pub fn new() -> DaemonPaths {
        ensure_bpffs();
        let id = unique("d");
        let tmp = std::env::temp_dir().join(format!("netpath-test-{id}"));
        DaemonPaths {
            state_dir: tmp.join("state"),
            socket: tmp.join("netpath.sock"),
            bpffs: Path::new("/sys/fs/bpf").join(format!("netpath-test-{id}")),
        }
    }

    /// `--state-dir … --socket … --bpffs …` for the netpath CLI.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--state-dir".into(),
            self.state_dir.display().to_string(),
            "--socket".into(),
            self.socket.display().to_string(),
            "--bpffs".into(),
            self.bpffs.display().to_string(),
        ]
    }

    /// Runs `netpath <args> <paths>`; returns the output whatever the status.
    pub fn netpath(&self, args: &[&str]) -> Output {
        Command::new(netpath_bin())
            .args(args)
            .args(self.args())
            .output()
            .expect("run netpath")
    }
}

impl Drop for DaemonPaths {
    fn drop(&mut self) {
        // The private temp directory holding the state dir and socket.
        if let Some(tmp) = self.state_dir.parent() {
            let _ = fs::remove_dir_all(tmp);
        }
    }
}

impl Default for DaemonPaths {
    fn default() -> Self {
        Self::new()
    }
}

/// The `packets` of the row of `stats[section]` whose `key` is `name`.
fn packets(stats: &serde_json::Value, section: &str, key: &str, name: &str) -> u64 {
    stats[section]
        .as_array()
        .unwrap_or_else(|| panic!("no {section} in {stats}"))
        .iter()
        .find(|r| r[key] == name)
        .and_then(|r| r["packets"].as_u64())
        .unwrap_or_else(|| panic!("no {section} row {name}: {stats}"))
}

/// A `netpath daemon` process for one test (private paths, no default network), killed
/// and reset on drop.
pub struct Daemon {
    pub paths: DaemonPaths,
    /// Daemon options beyond the private paths (`--docker-plugin-socket …`, say).
    extra: Vec<String>,
    /// What the daemon printed as it came up, the last time it started.
    pub started: Vec<String>,
    child: Option<std::process::Child>,
}

impl Daemon {
    /// Starts a daemon on fresh private paths.
    pub fn start() -> Daemon {
        Daemon::start_with(&[])
    }

    /// [`Daemon::start`] with environment variables `env` (see [`Daemon::restart_with`]).
    pub fn start_with(env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        Daemon::start_args(&[], env)
    }

    /// [`Daemon::start_with`], the daemon also given `extra` options (on every restart).
    pub fn start_args(extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let mut d = Daemon {
            paths: DaemonPaths::new(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            started: Vec::new(),
            child: None,
        };
        d.restart_with(env);
        d
    }

    /// (Re)starts the daemon process and waits (bounded) until its API answers.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// Like [`Daemon::restart`], with environment variables `env` (e.g.
    /// `NETPATH_OBJECT`, the datapath of another build); returns the lines it printed.
    pub fn restart_with(&mut self, env: &[(&str, &std::ffi::OsStr)]) -> Vec<String> {
        assert!(self.child.is_none(), "daemon already running");
        let mut args = vec!["--no-default-network".to_owned()];
        args.extend(self.paths.args());
        args.extend(self.extra.iter().cloned());
        let (child, lines) = spawn_daemon_with(&args, env);
        self.child = Some(child);
        self.started = lines.clone();
        lines
    }

    /// SIGKILLs the daemon (no cleanup runs in it).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the daemon and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let status = c.wait().unwrap();
            assert!(status.success(), "daemon exited with {status}");
        }
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.paths.netpath(args)
    }

    /// `port publish ENDPOINT -p SPEC…`; panics unless it succeeds.
    pub fn publish(&self, endpoint: &str, specs: &[String]) {
        let mut args = vec!["port", "publish", endpoint];
        for spec in specs {
            args.extend(["-p", spec.as_str()]);
        }
        self.ok(&args);
    }

    /// Runs the CLI; panics unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "netpath {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `netpath ls --json`, parsed.
    /// Creates a bridge network named `prefix`… (unique) on `subnet` with `uplink` as its
    /// uplink (masquerade and published ports); returns its name.
    pub fn network_with_uplink(&self, prefix: &str, subnet: &str, uplink: &str) -> String {
        let name = unique(prefix);
        self.ok(&[
            "network", "create", &name, "--subnet", subnet, "--uplink", uplink,
        ]);
        name
    }

    /// [`Self::network_with_uplink`] for a dual-stack network: `subnet` and `subnet6`.
    pub fn dual_stack_network(
        &self,
        prefix: &str,
        (subnet, subnet6): (&str, &str),
        uplink: &str,
    ) -> String {
        let name = unique(prefix);
        let subnets = ["--subnet", subnet, "--subnet", subnet6];
        let args = [
            &["network", "create", &name][..],
            &subnets,
            &["--uplink", uplink],
        ];
        self.ok(&args.concat());
        name
    }

    /// `netpath stats --json`.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["stats", "--json"])).expect("stats --json")
    }

    /// Packets the fast path forwarded `way` (`endpoint_to_uplink`, …) so far.
    pub fn forwarded(&self, way: &str) -> u64 {
        packets(&self.stats(), "forwards", "way", way)
    }

    /// Packets dropped for `reason` (`router_message`, …) so far (`stats --all --json`:
    /// a reason is listed before it counts one).
    pub fn drops(&self, reason: &str) -> u64 {
        let all = serde_json::from_str(&self.ok(&["stats", "--all", "--json"])).expect("stats");
        packets(&all, "drops", "reason", reason)
    }

    /// Packets the datapath handed to each endpoint with an IPv4 address (`netpath stats
    /// --json`), by address.
    pub fn endpoint_rx(&self) -> std::collections::HashMap<Ipv4Addr, u64> {
        self.stats()["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter_map(|e| {
                let ip = e["ip"].as_str()?.parse().expect("ip");
                Some((ip, e["rx_packets"].as_u64().expect("rx_packets")))
            })
            .collect()
    }

    pub fn ls(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["ls", "--json"])).expect("ls --json")
    }

    /// The instance tag in the ifalias of every link this daemon creates.
    pub fn tag(&self) -> String {
        let p = netpath::config::Paths {
            state_dir: self.paths.state_dir.clone(),
            socket: self.paths.socket.clone(),
            bpffs: self.paths.bpffs.clone(),
        };
        format!("netpath:{}:", p.instance())
    }

    /// Names of host links carrying this daemon's tag.
    pub fn tagged_links(&self) -> Vec<String> {
        let out = run(&["ip", "-j", "-d", "link", "show"]);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let tag = self.tag();
        links
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["ifalias"].as_str().is_some_and(|a| a.starts_with(&tag)))
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Daemon {
    /// Whether the daemon process is still running (not exited, e.g. killed by SIGPIPE).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Checks that the state, the kernel and the datapath agree exactly (see
    /// [`consistency::check`]); inside each of `namespaces`, the interfaces are exactly
    /// its records'. `Err` says what differs.
    pub fn consistency(&self, namespaces: &[&NetNs]) -> Result<(), String> {
        let parse = |args: &[&str]| -> Result<serde_json::Value, String> {
            serde_json::from_str(&self.ok(args)).map_err(|e| format!("{args:?}: {e}"))
        };
        let ls = parse(&["ls", "--json"])?;
        fn from<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, String> {
            serde_json::from_value(v.clone()).map_err(|e| e.to_string())
        }
        let snap = consistency::Snapshot {
            networks: from(&ls["networks"])?,
            endpoints: from(&ls["endpoints"])?,
            ports: from(&parse(&["port", "ls", "--json"])?)?,
            stats: from(&parse(&["stats", "--json"])?)?,
        };
        let paths: Vec<PathBuf> = namespaces.iter().map(|n| n.path()).collect();
        consistency::check(&snap, &self.tag(), &paths)
    }

    /// Runs a CLI command that must fail: non-zero exit, one line on stderr containing
    /// `expect`, `netpath ls --json` unchanged, no host link created and none of this
    /// daemon's links removed. Links of other instances may vanish meanwhile (the kernel
    /// removes a veth asynchronously when an earlier test's namespace goes), so only this
    /// daemon's tagged links are compared for removal. (Tests that use it must not create
    /// links concurrently: run them one at a time.)
    pub fn refused(&self, args: &[&str], expect: &str) {
        let (ls, links, ours) = (self.ls(), host_links(), self.tagged_links());
        let out = self.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {stderr}"
        );
        assert!(
            stderr.contains(expect),
            "{args:?}: expected {expect:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(self.ls(), ls, "{args:?} changed the state");
        let created: Vec<String> = host_links()
            .into_iter()
            .filter(|l| !links.contains(l))
            .collect();
        assert!(created.is_empty(), "{args:?} created links {created:?}");
        assert_eq!(
            self.tagged_links(),
            ours,
            "{args:?} removed this daemon's links"
        );
    }

    /// `endpoint add NETWORK --netns NS --json`, parsed.
    pub fn add_endpoint(&self, network: &str, ns: &NetNs) -> serde_json::Value {
        let netns = ns.path().display().to_string();
        let out = self.ok(&["endpoint", "add", network, "--netns", &netns, "--json"]);
        serde_json::from_str(&out).expect("endpoint add --json")
    }

    /// Waits (bounded by `within`) until [`Self::consistency`] holds; panics with the
    /// last difference otherwise.
    pub fn assert_consistent_within(&self, namespaces: &[&NetNs], within: std::time::Duration) {
        let start = std::time::Instant::now();
        loop {
            match self.consistency(namespaces) {
                Ok(()) => return,
                Err(e) if start.elapsed() >= within => {
                    panic!("inconsistent after {within:?}: {e}")
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let _ = self.paths.netpath(&["reset"]);
        let _ = fs::remove_dir_all(self.paths.state_dir.parent().unwrap());
    }
}

/// Starts `netpath daemon <args>` and waits (bounded, 60 s) for its "is up" report,
/// which it prints once the API answers; returns the process and the lines printed.
pub fn spawn_daemon(args: &[String]) -> (std::process::Child, Vec<String>) {
    spawn_daemon_with(args, &[])
}

/// [`spawn_daemon`] with environment variables `env`.
pub fn spawn_daemon_with(
    args: &[String],
    env: &[(&str, &std::ffi::OsStr)],
) -> (std::process::Child, Vec<String>) {
    use std::io::BufRead;
    // Tests run concurrently: none takes dockerd's plugin socket unless it asks for one.
    let no_plugin =
        (!args.iter().any(|a| a == "--docker-plugin-socket")).then_some("--no-docker-plugin");
    let mut child = Command::new(netpath_bin())
        .arg("daemon")
        .args(no_plugin)
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let done = line.starts_with("Ctrl-C");
            lines.push(line);
            if done {
                let _ = tx.send(lines.clone());
            }
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(lines) => (child, lines),
        Err(_) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "daemon did not come up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Waits (polling, at most `within`) until `done` holds; panics naming `what` if it
/// never does.
pub fn wait_until(within: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what} (waited {within:?})");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The number of entries of the datapath map `map` pinned under `bpffs` (bpftool).
pub fn pinned_map_len(bpffs: &Path, map: &str) -> usize {
    let path = bpffs.join("maps").join(map).display().to_string();
    let out = run(&["bpftool", "-j", "map", "dump", "pinned", &path]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().map_or(0, Vec::len)
}

/// Runs `netpath reset` for `paths` when dropped — for tests that drive a
/// `control::Service` in process. Runs on a thread of its own, since drop may happen on
/// a runtime thread.
pub struct ResetOnDrop(pub netpath::config::Paths);

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        let paths = self.0.clone();
        let r = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(netpath::reset::reset(&paths)).map(drop)
        })
        .join();
        if let Ok(Err(e)) = r {
            eprintln!("reset: {}", netpath::error::chain(&e));
        }
    }
}

impl DaemonPaths {
    /// The same paths as the daemon's `config::Paths`.
    pub fn to_paths(&self) -> netpath::config::Paths {
        netpath::config::Paths {
            state_dir: self.state_dir.clone(),
            socket: self.socket.clone(),
            bpffs: self.bpffs.clone(),
        }
    }
}

/// Names of every link in the host namespace (`ip -j link`).
pub fn host_links() -> Vec<String> {
    let out = run(&["ip", "-j", "link", "show"]);
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Sends one raw HTTP/1.1 request on a unix socket; returns (status, body).
pub fn raw_http(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect API socket");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: netpath\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Deletes host link `0` on drop (its veth peer goes with it).
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// The host's IPv6 forwarding as it was when made, put back on drop: a dual-stack
/// network turns it on (and the daemon leaves it on, as IPv4's), a test turns it back.
pub struct Ipv6ForwardingRestored(String);

impl Ipv6ForwardingRestored {
    pub const SYSCTL: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

    pub fn new() -> Ipv6ForwardingRestored {
        Ipv6ForwardingRestored(fs::read_to_string(Self::SYSCTL).expect("IPv6 on the host"))
    }
}

impl Default for Ipv6ForwardingRestored {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Ipv6ForwardingRestored {
    fn drop(&mut self) {
        let _ = fs::write(Self::SYSCTL, &self.0);
    }
}

/// An "uplink": a veth from the host into a namespace standing for the outside world,
/// the host end `name` with `host_ip/24`, the outside end with `outside_ip/24`, both up.
/// The host end is deleted on drop (its peer goes with it).
pub struct OutsideLink {
    /// The host end, to pass as a network's `--uplink`.
    pub name: String,
    /// The end inside the outside namespace.
    pub peer: String,
    _guard: LinkGuard,
}

impl OutsideLink {
    pub fn new(outside: &NetNs, host_ip: Ipv4Addr, outside_ip: Ipv4Addr) -> OutsideLink {
        let (name, peer) = (unique("up"), unique("uq"));
        run(&[
            "ip",
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            outside.name(),
        ]);
        let guard = LinkGuard(name.clone());
        run(&["ip", "addr", "add", &format!("{host_ip}/24"), "dev", &name]);
        run(&["ip", "link", "set", &name, "up"]);
        outside.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{outside_ip}/24"),
            "dev",
            &peer,
        ]);
        outside.exec(&["ip", "link", "set", &peer, "up"]);
        OutsideLink {
            name,
            peer,
            _guard: guard,
        }
    }
}

impl OutsideLink {
    /// Adds IPv6 addresses too: `host_ip6/64` on the host end, `outside_ip6/64` on the
    /// outside end (without duplicate address detection, usable at once). The outside
    /// namespace must have IPv6 on ([`NetNs::with_ipv6`]).
    pub fn add_ipv6(&self, outside: &NetNs, host_ip6: Ipv6Addr, outside_ip6: Ipv6Addr) {
        let (host, out) = (format!("{host_ip6}/64"), format!("{outside_ip6}/64"));
        run(&["ip", "-6", "addr", "add", &host, "dev", &self.name, "nodad"]);
        outside.exec(&["ip", "-6", "addr", "add", &out, "dev", &self.peer, "nodad"]);
    }
}

/// A veth pair in the host namespace that exists for its ifindex (BPF_PROG_TEST_RUN
/// resolves `__sk_buff.ifindex` in the caller's namespace). Deleted on drop.
pub struct TestDev {
    pub ifindex: u32,
    _link: LinkGuard,
}

impl TestDev {
    pub fn new(prefix: &str) -> TestDev {
        let name = unique(prefix);
        run(&[
            "ip",
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}p"),
        ]);
        let ifindex = fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
            .expect("ifindex")
            .trim()
            .parse()
            .expect("ifindex");
        TestDev {
            ifindex,
            _link: LinkGuard(name),
        }
    }
}

/// Offset of `ifindex` in `struct __sk_buff` (uapi/linux/bpf.h).
const SKB_IFINDEX: usize = 40;

/// Runs `frame` through tc program `prog` as if it arrived on (or left through)
/// device `ifindex`; returns the verdict and the output frame.
pub fn tc_test_run(
    prog: &aya::programs::SchedClassifier,
    ifindex: u32,
    frame: &[u8],
) -> (u32, Vec<u8>) {
    use aya::programs::{TestRun, TestRunOptions};
    let mut ctx = [0u8; 48];
    ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 64];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        })
        .expect("test_run");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// Checks an `iperf3 -J -i 1` client's result: it succeeded, ran at least `min` one-second
/// intervals, and none carried nothing (printed as Gbit/s per second). Returns the report.
pub fn iperf3_uninterrupted(out: &Output, min: usize) -> serde_json::Value {
    assert!(
        out.status.success(),
        "iperf3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J output");
    let rates: Vec<f64> = report["intervals"]
        .as_array()
        .expect("intervals")
        .iter()
        .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap())
        .collect();
    let shown: Vec<String> = rates.iter().map(|r| format!("{:.2}", r / 1e9)).collect();
    eprintln!("Gbit/s per second: {}", shown.join(" "));
    assert!(rates.len() >= min, "only {} intervals", rates.len());
    for (i, r) in rates.iter().enumerate() {
        assert!(*r > 0.0, "interval {i} carried nothing");
    }
    report
}
