//! Container engines the suite drives for real: a busybox root filesystem for their
//! containers, and a private Docker daemon (Debian's docker.io, 20.10) with netpath as a
//! plugin.
//!
//! [`Dockerd`] keeps everything of its own under a temp dir (`--data-root`,
//! `--exec-root`, its API socket, the containerd it starts), makes no `docker0`
//! (`--bridge=none`), and keeps Docker's default `iptables: true`. On drop it removes its
//! containers, stops, and takes away what it added to the host's firewall: its
//! `DOCKER*` chains, the `FORWARD` jump, and the `nat`/`filter` tables if they were not
//! there before (an empty nat table would turn conntrack on for every later flow).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

use crate::{run, unique};

/// Debian's client, which speaks 20.10's API (the machine may have a newer one first in
/// PATH).
pub const DOCKER: &str = "/usr/bin/docker";
const DOCKERD: &str = "/usr/sbin/dockerd";
/// The image every container of [`Dockerd`] runs: the busybox tree of [`busybox_rootfs`].
pub const IMAGE: &str = "netpath-busybox:1";
/// Bound on one client command.
const CLIENT_TIMEOUT: &str = "120";

/// A busybox tree at `dir`: /bin/busybox with relative applet links, `/www/index.html`
/// holding `marker` and a CGI script `/www/cgi-bin/peer` (for `httpd -h /www`).
pub fn busybox_rootfs(dir: &Path, marker: &str) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("copy /bin/busybox (busybox-static; `cargo xtask setup` installs it)");
    run(&[
        &bin.join("busybox").display().to_string(),
        "--install",
        "-s",
        &bin.display().to_string(),
    ]);
    for entry in std::fs::read_dir(&bin).unwrap() {
        let path = entry.unwrap().path();
        if path.is_symlink() {
            std::fs::remove_file(&path).unwrap();
            std::os::unix::fs::symlink("busybox", &path).unwrap();
        }
    }
    for d in ["etc", "proc", "sys", "dev", "tmp", "www"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("www/index.html"), format!("{marker}\n")).unwrap();
    // `GET /cgi-bin/peer` answers with the client's address as the server saw it.
    let cgi = dir.join("www/cgi-bin");
    std::fs::create_dir_all(&cgi).unwrap();
    let peer = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"peer=$REMOTE_ADDR\"\n";
    std::fs::write(cgi.join("peer"), peer).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(cgi.join("peer"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An engine's command-line client (`docker`, `ctr`) bound to one private daemon; every
/// command bounded in time.
pub struct Client {
    program: &'static str,
    /// The options naming the daemon (`-H unix://…`, `--address …`).
    daemon: Vec<String>,
}

impl Client {
    /// `PROGRAM ARGS` against the daemon.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args([CLIENT_TIMEOUT, self.program])
            .args(&self.daemon)
            .args(args);
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        (self.command(args).output()).unwrap_or_else(|e| panic!("run {}: {e}", self.program))
    }

    /// Runs the client; panics with its output unless it succeeds; returns stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed ({}): {}{}",
            self.program,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Runs the client, which must fail; returns its stderr.
    pub fn refused(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(!out.status.success(), "{} {args:?} succeeded", self.program);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// The chains Docker 20.10 adds to the `filter` table, in the order they can go.
const DOCKER_CHAINS: &[&str] = &[
    "DOCKER-USER",
    "DOCKER-ISOLATION-STAGE-1",
    "DOCKER-ISOLATION-STAGE-2",
    "DOCKER",
];

/// A private dockerd, with [`IMAGE`] imported; stopped and cleaned up on drop.
pub struct Dockerd {
    dir: PathBuf,
    client: Client,
    child: Option<Child>,
    /// The nftables tables (`table ip nat`, …) that existed before it started.
    tables_before: Vec<String>,
    forward_policy: String,
}

fn nft_tables() -> Vec<String> {
    let out = run(&["nft", "list", "tables"]);
    (String::from_utf8_lossy(&out.stdout).lines())
        .map(str::to_owned)
        .collect()
}

/// The policy of iptables' `FORWARD` chain (`ACCEPT`, `DROP`).
pub fn forward_policy() -> String {
    let out = run(&["iptables", "-S", "FORWARD"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (text.lines())
        .find_map(|l| l.strip_prefix("-P FORWARD "))
        .unwrap_or("ACCEPT")
        .to_owned()
}

impl Dockerd {
    /// Starts dockerd and waits (bounded) until it answers; imports [`IMAGE`] with
    /// `marker` in its `/www/index.html`.
    pub fn start(marker: &str) -> Dockerd {
        assert!(
            Path::new(DOCKERD).exists(),
            "{DOCKERD} is missing: `cargo xtask setup` installs Debian's docker.io"
        );
        let dir = std::env::temp_dir().join(format!("netpath-dockerd-{}", unique("k")));
        std::fs::create_dir_all(&dir).unwrap();
        let (tables_before, forward_policy) = (nft_tables(), forward_policy());
        let client = Client {
            program: DOCKER,
            daemon: vec![
                "-H".into(),
                format!("unix://{}", dir.join("docker.sock").display()),
            ],
        };
        let mut d = Dockerd {
            dir,
            client,
            child: None,
            tables_before,
            forward_policy,
        };
        d.spawn();
        let rootfs = d.dir.join("rootfs");
        busybox_rootfs(&rootfs, marker);
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .output()
            .expect("tar the rootfs");
        let mut import = d.command(&["import", "-", IMAGE]);
        import.stdin(std::process::Stdio::piped());
        let mut child = import
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker import");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        assert!(child.wait().unwrap().success(), "docker import failed");
        d
    }

    /// Stops dockerd (as its service would: SIGTERM, containers stopped) and starts it
    /// again on the same directories; waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts the dockerd process and waits (bounded) until it answers.
    fn spawn(&mut self) {
        let dir = &self.dir;
        let log = (std::fs::OpenOptions::new().create(true).append(true))
            .open(dir.join("dockerd.log"))
            .unwrap();
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args(["--bridge=none", "--log-level=info"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let start = Instant::now();
        while !self.output(&["version"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "dockerd did not answer within 60 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERMs dockerd and waits (bounded) for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// What dockerd has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Removes Docker's filter chains and their jump, restores `FORWARD`'s policy, and
    /// deletes the tables Docker created.
    fn clean_firewall(&self) {
        // Another dockerd (a test or the bench beside this one) uses the same chains and
        // tables: the last one to stop takes them away.
        let others = Command::new("pgrep").args(["-x", "dockerd"]).output();
        if others.is_ok_and(|o| o.status.success()) {
            return;
        }
        let iptables = |args: &[&str]| Command::new("iptables").args(args).output();
        while iptables(&["-D", "FORWARD", "-j", "DOCKER-USER"]).is_ok_and(|o| o.status.success()) {}
        for table in ["filter", "nat"] {
            for chain in DOCKER_CHAINS {
                let _ = iptables(&["-t", table, "-F", chain]);
            }
            for chain in DOCKER_CHAINS {
                let _ = iptables(&["-t", table, "-X", chain]);
            }
        }
        let _ = iptables(&["-P", "FORWARD", &self.forward_policy]);
        for table in nft_tables() {
            if !self.tables_before.contains(&table) {
                let _ = Command::new("nft")
                    .args(["delete"])
                    .args(table.split_whitespace())
                    .output();
            }
        }
    }
}

/// `docker.ok(…)` and the rest of [`Client`].
impl std::ops::Deref for Dockerd {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::Deref for Containerd {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.output(&["ps", "-aq"]);
        let ids = String::from_utf8_lossy(&ids.stdout).to_string();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.output(&args);
        }
        self.stop();
        // The containerd it started (and its shims) go with it; should one linger, it
        // is found by the private directory on its command line.
        let _ = Command::new("pkill")
            .args(["-9", "-f"])
            .arg(self.dir.display().to_string())
            .output();
        self.clean_firewall();
        // Mounts it may have left (overlay layers, netns bind mounts) before the tree.
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.join("root"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private containerd (Debian's 1.6, no CRI) for `ctr run --cni`, and what `ctr`'s CNI
/// needs on the host: `ctr` reads only the first file of `/etc/cni/net.d` and finds the
/// plugin in `/opt/cni/bin`, so the test's network configuration goes there first
/// (`00-netpath-…`) and `netpath-cni` is linked there unless it is already installed;
/// both are removed on drop, with every task and container, containerd and its tree.
pub struct Containerd {
    dir: PathBuf,
    client: Client,
    child: Option<Child>,
    conflist: PathBuf,
    linked: Option<PathBuf>,
}

impl Containerd {
    /// Starts containerd with `conflist` as the host's first CNI configuration, and
    /// waits (bounded) until it answers.
    pub fn start(conflist: &serde_json::Value) -> Containerd {
        let dir = std::env::temp_dir().join(format!("netpath-containerd-{}", unique("c")));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{0}/containerd.sock\"\n",
            dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        std::fs::create_dir_all("/etc/cni/net.d").unwrap();
        let conf = Path::new("/etc/cni/net.d").join(format!("00-netpath-{}.conflist", unique("t")));
        std::fs::write(&conf, serde_json::to_string_pretty(conflist).unwrap()).unwrap();
        std::fs::create_dir_all("/opt/cni/bin").unwrap();
        let plugin = Path::new("/opt/cni/bin/netpath-cni");
        let linked = (!plugin.exists()).then(|| {
            std::os::unix::fs::symlink(crate::cni_bin(), plugin).unwrap();
            plugin.to_owned()
        });
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let client = Client {
            program: "ctr",
            daemon: vec![
                "--address".into(),
                dir.join("containerd.sock").display().to_string(),
            ],
        };
        let c = Containerd {
            dir,
            client,
            child: Some(child),
            conflist: conf,
            linked,
        };
        let start = Instant::now();
        while !c.output(&["version"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// A busybox root filesystem of its own for `ctr run --rootfs`.
    pub fn rootfs(&self) -> PathBuf {
        let rootfs = self.dir.join("rootfs");
        if !rootfs.exists() {
            busybox_rootfs(&rootfs, "ctr");
        }
        rootfs
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let tasks = self.output(&["task", "ls", "-q"]);
        for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
            let _ = self.output(&["task", "kill", "-s", "KILL", id]);
            let _ = self.output(&["task", "rm", "-f", id]);
        }
        let containers = self.output(&["container", "ls", "-q"]);
        for id in String::from_utf8_lossy(&containers.stdout).split_whitespace() {
            let _ = self.output(&["container", "rm", id]);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("pkill")
            .args(["-9", "-f"])
            .arg(self.dir.display().to_string())
            .output();
        let _ = std::fs::remove_file(&self.conflist);
        if let Some(link) = &self.linked {
            let _ = std::fs::remove_file(link);
        }
        let _ = Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.dir.join("root"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
