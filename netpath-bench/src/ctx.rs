//! What every scenario run gets: the options, unique names under the run's prefix, free
//! subnets, a tokio runtime for the API client, the progress bar, and the shared daemon.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, Result, bail};
use indicatif::ProgressBar;
use ipnet::{Ipv4Net, Ipv6Net};
use netpath::client::Client;

use super::{Opts, daemon::BenchDaemon, proc};

/// Everything the bench creates on the host is named `nb<pid in base 36>-…`: the prefix
/// of this run. The final sweep removes every name with it.
pub fn run_prefix(pid: u32) -> String {
    format!("nb{}-", base36(pid))
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII")
}

/// The pid a run prefix (or a name starting with one) belongs to.
pub fn prefix_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("nb")?;
    let (digits, _) = rest.split_once('-')?;
    if digits.is_empty() || digits.len() > 6 {
        return None;
    }
    u32::from_str_radix(digits, 36).ok()
}

/// Subnets no host route uses, one per purpose, picked at start.
#[derive(Clone, Debug)]
pub struct Subnets {
    /// /16s for the `setup` scenario: netpath, `ip` commands, CNI.
    pub setup_netpath: Ipv4Net,
    pub setup_ip: Ipv4Net,
    pub setup_cni: Ipv4Net,
    /// /16 for the netpath network of the `endpoint` scenario.
    pub endpoint_netpath: Ipv4Net,
    /// /16s for the netpath networks of the `publish`, `masq` and `footprint` scenarios.
    pub publish_netpath: Ipv4Net,
    pub masq_netpath: Ipv4Net,
    pub footprint_netpath: Ipv4Net,
    /// /16 of the `soak` scenario's netpath network.
    pub soak_netpath: Ipv4Net,
    /// /16 of the `cni` scenario: netpath-cni's network on its first /24
    /// ([`Subnets::cni_netpath`]), the `bridge` plugin's on its second
    /// ([`Subnets::cni_bridge`]).
    pub cni: Ipv4Net,
    /// /16 whose /24s address namespace-only topologies (direct veth, plain bridge) and
    /// the host ends of uplink veths.
    pub in_netns: Ipv4Net,
    /// The run's IPv6 /48 (`fd5b:6e62:N::/48`, no host route in it): its /64s are the
    /// IPv6 halves of the dual-stack topologies ([`Subnets::v6_64`]).
    pub v6: Ipv6Net,
}

/// Which /64 of [`Subnets::v6`] a purpose gets: the netpath networks' first, then
/// namespace-only topologies and uplinks from [`V6_IN_NETNS`] on (the IPv4 /24 index
/// added, so the two halves of a topology share their number).
pub const V6_ENDPOINT: u16 = 1;
pub const V6_PUBLISH: u16 = 2;
pub const V6_MASQ: u16 = 3;
pub const V6_IN_NETNS: u16 = 0x100;

/// The first `fd5b:6e62:N::/48` (N from `start` on, wrapping) that overlaps none of
/// `used`.
pub fn free_v6_48(start: u16, used: &[Ipv6Net]) -> Option<Ipv6Net> {
    (0..=u16::MAX)
        .map(|i| start.wrapping_add(i))
        .map(|n| Ipv6Net::new(Ipv6Addr::new(0xfd5b, 0x6e62, n, 0, 0, 0, 0, 0), 48).expect("valid"))
        .find(|c| !used.iter().any(|u| u.contains(c) || c.contains(u)))
}

impl Subnets {
    /// Picks /16s out of 10.150.0.0–10.199.0.0 that overlap no route of any table.
    pub fn pick() -> Result<Subnets> {
        let out = proc::ip(&["-j", "-4", "route", "show", "table", "all"])?;
        let routes: serde_json::Value =
            serde_json::from_str(&out).context("cannot parse `ip -j route`")?;
        let used: Vec<Ipv4Net> = routes
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["dst"].as_str())
            .filter_map(|d| {
                d.parse::<Ipv4Net>()
                    .ok()
                    .or_else(|| d.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))
            })
            .filter(|n| n.prefix_len() > 0)
            .collect();
        let mut free = (150u8..200)
            .map(|b| Ipv4Net::new(Ipv4Addr::new(10, b, 0, 0), 16).expect("valid"))
            .filter(|c| !used.iter().any(|u| u.contains(c) || c.contains(u)));
        let mut next = || {
            free.next()
                .context("no free /16 in 10.150.0.0–10.199.255.255 for the bench")
        };
        let out6 = proc::ip(&["-j", "-6", "route", "show", "table", "all"])?;
        let routes6: serde_json::Value =
            serde_json::from_str(&out6).context("cannot parse `ip -j -6 route`")?;
        let used6: Vec<Ipv6Net> = routes6
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["dst"].as_str())
            .filter_map(|d| {
                d.parse::<Ipv6Net>()
                    .ok()
                    .or_else(|| d.parse::<Ipv6Addr>().ok().map(Ipv6Net::from))
            })
            .filter(|n| n.prefix_len() > 0)
            .collect();
        let v6 = free_v6_48(std::process::id() as u16, &used6)
            .context("no free /48 in fd5b:6e62::/32 for the bench")?;
        Ok(Subnets {
            v6,
            setup_netpath: next()?,
            setup_ip: next()?,
            setup_cni: next()?,
            endpoint_netpath: next()?,
            in_netns: next()?,
            publish_netpath: next()?,
            masq_netpath: next()?,
            footprint_netpath: next()?,
            soak_netpath: next()?,
            cni: next()?,
        })
    }

    /// The `i`-th /24 of [`Subnets::cni`].
    fn cni_24(&self, i: u8) -> Ipv4Net {
        let o = self.cni.network().octets();
        Ipv4Net::new(Ipv4Addr::new(o[0], o[1], i, 0), 24).expect("valid")
    }

    /// The subnet of the `cni` scenario's netpath-cni network.
    pub fn cni_netpath(&self) -> Ipv4Net {
        self.cni_24(1)
    }

    /// The subnet of the `cni` scenario's `bridge` + `portmap` network.
    pub fn cni_bridge(&self) -> Ipv4Net {
        self.cni_24(2)
    }

    /// The `i`-th /24 of [`Subnets::in_netns`].
    pub fn in_netns_24(&self, i: u8) -> Ipv4Net {
        let o = self.in_netns.network().octets();
        Ipv4Net::new(Ipv4Addr::new(o[0], o[1], i, 0), 24).expect("valid")
    }

    /// The `i`-th /64 of [`Subnets::v6`].
    pub fn v6_64(&self, i: u16) -> Ipv6Net {
        let s = self.v6.network().segments();
        Ipv6Net::new(Ipv6Addr::new(s[0], s[1], s[2], i, 0, 0, 0, 0), 64).expect("valid")
    }

    /// The IPv6 /64 beside [`Subnets::in_netns_24`]`(i)`.
    pub fn in_netns_64(&self, i: u8) -> Ipv6Net {
        self.v6_64(V6_IN_NETNS + u16::from(i))
    }
}

/// The `n`-th host address of `net` (0 is the first host, usually the gateway).
pub fn host(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1 + n)
}

/// The `n`-th host address of an IPv6 `net` (0 is `::1`, usually the gateway).
pub fn host6(net: Ipv6Net, n: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()) + 1 + u128::from(n))
}

pub struct Ctx {
    pub opts: Opts,
    /// `nb<pid36>-`.
    pub prefix: String,
    next_name: u32,
    /// Private scratch directory (`/tmp/netpath-bench-<prefix>`): logs, CNI state, the
    /// daemon's state dir and socket.
    pub tmp: PathBuf,
    /// bpffs directory of the bench's daemon.
    pub bpffs: PathBuf,
    pub subnets: Subnets,
    pub rt: Arc<tokio::runtime::Runtime>,
    pub pb: ProgressBar,
    /// Host links created by tools that name them themselves (CNI's `veth…`), checked at
    /// the end.
    pub foreign_links: Vec<String>,
    /// `net.ipv4.ip_forward` at start (the netpath daemon and the CNI bridge plugin turn it
    /// on); restored at the end, once the daemon is stopped.
    pub ip_forward_before: Option<String>,
    /// `net.ipv6.conf.all.forwarding` at start (the daemon turns it on once a dual-stack
    /// network exists); restored at the end like `ip_forward`.
    pub ip6_forward_before: Option<String>,
    /// The `netpath-cni` plugin found next to the netpath binary, copied at start like it.
    pub cni_bin: Option<PathBuf>,
    /// The iptables chains (`table:chain`) there were before the CNI `portmap` plugin first
    /// ran (`Some` once it did): the final sweep removes the rules the run left and
    /// portmap's shared `CNI-HOSTPORT-*` chains if they were not there.
    pub iptables_before: Option<std::collections::BTreeSet<String>>,
    /// Header line of the progress bar (scenario · variant · round).
    stage: String,
    daemon: Option<BenchDaemon>,
    /// Which netpath the daemon runs (and [`Ctx::daemon`] starts).
    build: Build,
}

/// Which netpath binary the bench's daemon runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// The build under test (`--netpath-bin`).
    Current,
    /// The earlier commit's (`--baseline-bin`).
    Baseline,
}

pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
pub const IP6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

impl Ctx {
    pub fn new(opts: Opts, pb: ProgressBar) -> Result<Ctx> {
        let subnets = Subnets::pick()?;
        let prefix = run_prefix(std::process::id());
        let id = prefix.trim_end_matches('-');
        let tmp = std::env::temp_dir().join(format!("netpath-bench-{id}"));
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        // One netpath binary for the whole run, whatever builds replace in target/
        // meanwhile.
        let mut opts = opts;
        let frozen = tmp.join("netpath");
        if let Err(e) = fs::copy(&opts.netpath_bin, &frozen) {
            let _ = fs::remove_dir_all(&tmp);
            bail!(
                "cannot copy {} to {}: {e}",
                opts.netpath_bin.display(),
                frozen.display()
            );
        }
        // The CNI plugin is built next to it (`cargo build -p netpath --bins`).
        let cni_src = opts.netpath_bin.with_file_name("netpath-cni");
        let cni_bin = cni_src
            .is_file()
            .then(|| tmp.join("netpath-cni"))
            .filter(|to| fs::copy(&cni_src, to).is_ok());
        opts.netpath_bin = frozen;
        if let Some(baseline) = &opts.baseline_bin {
            let to = tmp.join("netpath-baseline");
            if let Err(e) = fs::copy(baseline, &to) {
                let _ = fs::remove_dir_all(&tmp);
                bail!(
                    "cannot copy {} to {}: {e}",
                    baseline.display(),
                    to.display()
                );
            }
            opts.baseline_bin = Some(to);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .inspect_err(|_| {
                let _ = fs::remove_dir_all(&tmp);
            })
            .context("cannot start a tokio runtime")?;
        Ok(Ctx {
            opts,
            bpffs: Path::new("/sys/fs/bpf").join(format!("netpath-bench-{id}")),
            prefix,
            next_name: 0,
            tmp,
            subnets,
            rt: Arc::new(rt),
            pb,
            foreign_links: Vec::new(),
            ip_forward_before: fs::read_to_string(IP_FORWARD)
                .ok()
                .map(|s| s.trim().to_owned()),
            ip6_forward_before: fs::read_to_string(IP6_FORWARD)
                .ok()
                .map(|s| s.trim().to_owned()),
            cni_bin,
            iptables_before: None,
            stage: String::new(),
            daemon: None,
            build: Build::Current,
        })
    }

    /// A fresh name `<prefix><role><n>` (≤ 15 bytes: fits an interface name).
    pub fn name(&mut self, role: &str) -> String {
        let name = format!("{}{role}{}", self.prefix, self.next_name);
        self.next_name += 1;
        assert!(name.len() <= 15, "{name} is too long for an interface name");
        name
    }

    /// The bench's netpath daemon, started on first use (private state dir, socket and
    /// bpffs; no default network). It lives until [`Ctx::stop_daemon`] or the end.
    pub fn daemon(&mut self) -> Result<&mut BenchDaemon> {
        if self.daemon.is_none() {
            self.start_daemon(None)?;
        }
        Ok(self.daemon.as_mut().expect("just started"))
    }

    /// The bench's daemon serving the Docker plugin on `socket` too: one running without
    /// it (or on another socket) is stopped (and reset) first. Later [`Ctx::daemon`] calls
    /// get this one until it is stopped.
    pub fn daemon_with_plugin(&mut self, socket: &Path) -> Result<&mut BenchDaemon> {
        let other = |d: &BenchDaemon| d.plugin_socket.as_deref() != Some(socket);
        if self.daemon.as_ref().is_some_and(other)
            && let Some(p) = self.stop_daemon().first()
        {
            bail!("stopping the daemon to start one with the Docker plugin: {p}");
        }
        if self.daemon.is_none() {
            self.start_daemon(Some(socket))?;
        }
        Ok(self.daemon.as_mut().expect("just started"))
    }

    /// Makes the daemon run `build` from now on: a daemon of the other build is stopped
    /// (and reset, by its own binary) first. Fails for [`Build::Baseline`] without a
    /// `--baseline-bin`.
    pub fn use_build(&mut self, build: Build) -> Result<()> {
        if build == Build::Baseline && self.opts.baseline_bin.is_none() {
            bail!("no --baseline-bin given");
        }
        if build != self.build {
            if let Some(p) = self.stop_daemon().first() {
                bail!("stopping the daemon to switch builds: {p}");
            }
            self.build = build;
        }
        Ok(())
    }

    /// Runs `f` with the daemon of `build`, and goes back to this build's daemon after
    /// (the next run expects it), whatever `f` returned.
    pub fn with_build<T>(
        &mut self,
        build: Build,
        f: impl FnOnce(&mut Ctx) -> Result<T>,
    ) -> Result<T> {
        self.use_build(build)?;
        let r = f(self);
        let back = self.use_build(Build::Current);
        let r = r?;
        back.map(|()| r)
    }

    fn start_daemon(&mut self, plugin_socket: Option<&Path>) -> Result<()> {
        let bin = match (self.build, &self.opts.baseline_bin) {
            (Build::Baseline, Some(b)) => b.clone(),
            _ => self.opts.netpath_bin.clone(),
        };
        let d = BenchDaemon::start(&bin, &self.tmp.join("daemon"), &self.bpffs, plugin_socket)?;
        self.daemon = Some(d);
        Ok(())
    }

    /// An API client of the bench's daemon (starting it if needed).
    pub fn client(&mut self) -> Result<Client> {
        let d = self.daemon()?;
        d.check_alive()?;
        Ok(Client::new(d.paths.socket.clone()))
    }

    /// Stops the daemon and resets what it created. Returns what went wrong, if anything.
    pub fn stop_daemon(&mut self) -> Vec<String> {
        match self.daemon.take() {
            Some(d) => d.shutdown(),
            None => Vec::new(),
        }
    }

    /// The daemon's paths, for the final sweep, if it was ever started.
    pub fn daemon_paths(&self) -> netpath::config::Paths {
        BenchDaemon::paths_for(&self.tmp.join("daemon"), &self.bpffs)
    }

    /// Runs a future on the bench's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Prints a line above the progress bar (or to stderr when there is no bar).
    pub fn log(&self, line: impl AsRef<str>) {
        if self.pb.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.pb.println(line.as_ref());
        }
    }

    pub fn set_stage(&mut self, stage: String) {
        self.pb.set_message(stage.clone());
        self.stage = stage;
    }

    /// Shows progress inside the current run (e.g. "endpoint 340/1000").
    pub fn detail(&self, what: &str) {
        self.pb.set_message(format!("{} · {what}", self.stage));
    }

    /// Path of a log file in the scratch directory.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.tmp.join(format!("{name}.log"))
    }

    /// Fails (for the runner's FAILED) if Ctrl-C was received.
    pub fn check(&self) -> Result<()> {
        proc::check_interrupt()
    }
}

/// Fails unless the process is root.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "root is needed: the bench creates network namespaces, links and a netpath \
             daemon (run `sudo -E cargo xtask bench`)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_round_trip_and_fit() {
        for pid in [1, 35, 36, 4_194_304] {
            let p = run_prefix(pid);
            assert_eq!(prefix_pid(&format!("{p}h12345")), Some(pid));
        }
        assert!(run_prefix(4_194_304).len() + "h99999".len() <= 15);
        assert_eq!(prefix_pid("np-abc"), None);
        assert_eq!(prefix_pid("nbx"), None);
    }

    #[test]
    fn ipv6_subnets_avoid_host_routes() {
        let used: Vec<Ipv6Net> = vec![
            "fd5b:6e62:7::/48".parse().unwrap(),
            "fd00::/64".parse().unwrap(),
        ];
        assert_eq!(
            free_v6_48(7, &used),
            Some("fd5b:6e62:8::/48".parse().unwrap())
        );
        assert_eq!(
            free_v6_48(u16::MAX, &used),
            Some("fd5b:6e62:ffff::/48".parse().unwrap())
        );
        // A route covering the whole range leaves nothing.
        assert_eq!(free_v6_48(0, &["fd00::/8".parse().unwrap()]), None);
        let n: Ipv6Net = "fd5b:6e62:8:101::/64".parse().unwrap();
        assert_eq!(
            host6(n, 0),
            "fd5b:6e62:8:101::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            host6(n, 0x1ff),
            "fd5b:6e62:8:101::200".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn hosts() {
        let n: Ipv4Net = "10.150.0.0/16".parse().unwrap();
        assert_eq!(host(n, 0), Ipv4Addr::new(10, 150, 0, 1));
        assert_eq!(host(n, 300), Ipv4Addr::new(10, 150, 1, 45));
    }
}
