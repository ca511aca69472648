//! `docker`: netpath as a Docker network driver (its libnetwork plugin, served by the
//! bench's daemon) against Docker's own `bridge` driver with its default userland proxy,
//! both on one private dockerd ([`Dockerd`]) in the same run: the time from `docker run -d`
//! to a container answering on its port, new connections per second through a published
//! port (from another namespace through the uplink, and from the host to 127.0.0.1, which
//! docker-proxy carries for the bridge driver), and the memory kept per published port.

mod net;

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ipnet::Ipv4Net;
use netpath_tests::engine::Dockerd;

use self::net::{
    DockerNet, PROBE_CONNECT, PROBE_PAUSE, READY_TIMEOUT, docker_ok, docker_proxies,
    publish_entries,
};
use super::{
    Better, Ctx, Metric, Opts, RunResult, Scenario, Unit, Variant, cleanup,
    cni::{SERVER_THREADS, WARMUP_CONNS, WORKERS, ms},
    connrate::{self, ConnStats},
    ctx::host,
    footprint::rss_kib,
    plot, proc,
    report::ScenarioResult,
    router::HostUplink,
    stats,
    topo::Ns,
};

/// The port the containers serve.
const GUEST_PORT: u16 = 80;
/// Ports published to measure the memory kept per port.
const MEMORY_PORTS: u16 = 20;
/// Host ports: a block of 2 × (1 + [`MEMORY_PORTS`]) per run from here on, chosen by the
/// bench's pid, clear of the other scenarios' (18080–18999) and of netpath's ephemeral
/// range (20000–29999).
const HOST_PORTS_FROM: u16 = 17000;
const HOST_PORT_SLOTS: u32 = 23;
/// One run must have started its containers within this.
const RUN_BUDGET: Duration = Duration::from_secs(300);
/// Timed containers are removed (untimed) this many at a time.
const RM_BATCH: usize = 10;
/// Time for docker-proxy processes and the daemon to settle after a container started.
const SETTLE: Duration = Duration::from_secs(1);
const SLEEP: [&str; 2] = ["sleep", "3600"];

/// This run's host ports for a variant: the connection-rate port, then the
/// [`MEMORY_PORTS`] ports (netpath's block first, the bridge's after it, so that one
/// variant's rules could never serve the other's traffic).
fn host_ports(pid: u32, netpath: bool) -> (u16, Vec<u16>) {
    let per_variant = 1 + MEMORY_PORTS;
    let base = HOST_PORTS_FROM + 2 * per_variant * (pid % HOST_PORT_SLOTS) as u16;
    let first = base + if netpath { 0 } else { per_variant };
    (first, (first + 1..=first + MEMORY_PORTS).collect())
}

/// A variant's /24: `10.255.N.0` for netpath, `10.254.N.0` for the bridge (N from the
/// pid, so that a concurrent or killed run's network does not overlap).
fn subnet(pid: u32, netpath: bool) -> Ipv4Net {
    let second = if netpath { 255 } else { 254 };
    Ipv4Net::new(Ipv4Addr::new(10, second, (pid % 250) as u8, 0), 24).expect("valid")
}

pub struct DockerScenario {
    /// Containers started (and timed) per run.
    n: usize,
    quick: bool,
    /// Connections measured per path and run, and their time bound.
    conns: usize,
    conn_budget: Duration,
    /// The private dockerd, started by the first run, stopped by `finish`, and its
    /// processes.
    dockerd: Option<Dockerd>,
    dockerd_pids: Vec<u32>,
    /// The plugin's name (its socket is `/run/docker/plugins/<name>.sock`).
    plugin: Option<String>,
    /// Whether `br_netfilter` was loaded before dockerd first started.
    br_netfilter_before: Option<bool>,
}

const BR_NETFILTER: &str = "/sys/module/br_netfilter";

impl DockerScenario {
    pub fn new(opts: &Opts) -> Self {
        let (n, conns, budget) = if opts.quick {
            (25, 3000, 8)
        } else {
            (60, 10_000, 20)
        };
        DockerScenario {
            n,
            quick: opts.quick,
            conns,
            conn_budget: Duration::from_secs(budget),
            dockerd: None,
            dockerd_pids: Vec::new(),
            plugin: None,
            br_netfilter_before: None,
        }
    }

    fn socket(plugin: &str) -> PathBuf {
        PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"))
    }

    fn run_variant(&mut self, ctx: &mut Ctx, netpath: bool) -> Result<RunResult> {
        let plugin = match &self.plugin {
            Some(p) => p.clone(),
            None => self.plugin.insert(ctx.name("dk")).clone(),
        };
        let socket = Self::socket(&plugin);
        fs::create_dir_all("/run/docker/plugins").context("cannot create /run/docker/plugins")?;
        ctx.detail("netpath daemon with the Docker plugin");
        let daemon = ctx.daemon_with_plugin(&socket)?;
        daemon.check_alive()?;
        let daemon_pid = daemon.pid().context("the daemon has no pid")?;
        if self.dockerd.is_none() {
            ctx.detail("starting a private dockerd");
            self.br_netfilter_before
                .get_or_insert_with(|| Path::new(BR_NETFILTER).exists());
            net::alone(&[])?;
            // Panics (a FAILED run) if dockerd does not come up; cleans up after itself.
            self.dockerd = Some(Dockerd::start("netpath-bench"));
            self.dockerd_pids = net::dockerds();
        }
        net::alone(&self.dockerd_pids)?;
        let restarted = !net::chains_present();
        if restarted && let Some(d) = self.dockerd.as_mut() {
            // It makes its chains again as it starts.
            ctx.detail("restarting dockerd: its iptables chains were removed");
            d.restart();
            self.dockerd_pids = net::dockerds();
        }
        let docker = self.dockerd.as_ref().expect("just started");
        ctx.detail("building the topology");
        let outside = Ns::create(ctx, "o")?;
        let uplink = HostUplink::create(
            ctx,
            &outside,
            ctx.subnets.in_netns_24(if netpath { 39 } else { 40 }),
        )?;
        let pid = std::process::id();
        let subnet = subnet(pid, netpath);
        let (driver, opts) = if netpath {
            (
                plugin.as_str(),
                vec!["-o".into(), format!("uplink={}", uplink.link.0)],
            )
        } else {
            ("bridge", Vec::new())
        };
        let mut net = DockerNet::create(docker, ctx.name("dn"), driver, subnet, &opts)?;
        // Neighbour entries of an earlier run's containers (same addresses) would delay
        // the first packets to this run's.
        let _ = proc::run_bounded(
            std::process::Command::new("ip").args(["neigh", "flush", "to", &subnet.to_string()]),
            None,
            proc::CMD_TIMEOUT,
        );
        let r = self.measure(ctx, &mut net, &outside, &uplink, netpath, daemon_pid);
        ctx.detail("removing the containers and the network");
        let removed = net.remove();
        drop(net);
        let left = self.leftovers(ctx, docker, subnet, netpath);
        drop((uplink, outside));
        let mut r = r?;
        removed?;
        if restarted {
            r.notes.push(
                "dockerd was restarted before this run: its iptables chains had been removed \
                 (by another dockerd stopping)"
                    .into(),
            );
        }
        let left = left?;
        if !left.is_empty() {
            bail!(
                "left after `docker rm` and `docker network rm`: {}",
                left.join("; ")
            );
        }
        Ok(r)
    }

    /// The timed starts, the connection rates, the memory per published port.
    fn measure(
        &self,
        ctx: &mut Ctx,
        net: &mut DockerNet,
        outside: &Ns,
        uplink: &HostUplink,
        netpath: bool,
        daemon_pid: u32,
    ) -> Result<RunResult> {
        let pid = std::process::id();
        let subnet = subnet(pid, netpath);
        let start = Instant::now();
        ctx.detail("warm-up container");
        net.run_until_ready("w", host(subnet, 1))
            .context("warm-up container")?;
        net.rm_all()?;
        let mut ready_ms = Vec::with_capacity(self.n);
        for i in 0..self.n {
            ctx.check()?;
            if start.elapsed() > RUN_BUDGET {
                bail!(
                    "stopped after {} s with {i} of {} containers started (the budget of a run)",
                    RUN_BUDGET.as_secs(),
                    self.n
                );
            }
            if i.is_multiple_of(10) {
                ctx.detail(&format!("docker run {i}/{}", self.n));
            }
            let t = net.run_until_ready(&format!("r{i}"), host(subnet, 2 + i as u32))?;
            ready_ms.push(ms(t));
            if net.containers.len() >= RM_BATCH {
                net.rm_all()?;
            }
        }
        net.rm_all()?;

        ctx.detail("server container with a published port");
        let (port, memory_ports) = host_ports(pid, netpath);
        let server_ip = host(subnet, 199);
        let publish = vec!["-p".to_owned(), format!("{port}:{GUEST_PORT}")];
        let server = net.run("srv", server_ip, &publish, &SLEEP)?;
        let server_pid = docker_ok(net.docker, &["inspect", "-f", "{{.State.Pid}}", &server])?;
        let _server = connrate::Server::start(
            Path::new(&format!("/proc/{server_pid}/ns/net")),
            SocketAddrV4::new(server_ip, GUEST_PORT),
            SERVER_THREADS,
        )?;
        let conns = |ctx: &Ctx, from: &Path, target: SocketAddrV4, what: &str| {
            ctx.check()?;
            ctx.detail(&format!(
                "{WARMUP_CONNS} warm-up connections to {target}, {what}"
            ));
            connrate::run_clients(from, target, WARMUP_CONNS, WORKERS, self.conn_budget)?
                .check(&format!("{what}, warm-up"))?;
            ctx.detail(&format!("{} connections to {target}, {what}", self.conns));
            let s = connrate::run_clients(from, target, self.conns, WORKERS, self.conn_budget)?;
            s.check(what)?;
            Ok::<ConnStats, anyhow::Error>(s)
        };
        let via_uplink = SocketAddrV4::new(uplink.host_ip, port);
        let up = conns(ctx, &outside.path(), via_uplink, "through the uplink")?;
        let local = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let host_ns = Path::new("/proc/self/ns/net");
        let lo = conns(ctx, host_ns, local, "from the host to 127.0.0.1")?;

        ctx.detail(&format!("a container with {MEMORY_PORTS} published ports"));
        let bpffs = ctx.bpffs.clone();
        let rss_before = rss_kib(daemon_pid)?;
        let entries_before = publish_entries(&bpffs)?;
        let memory_ip = host(subnet, 200);
        let flags: Vec<String> = (memory_ports.iter())
            .flat_map(|p| ["-p".to_owned(), format!("{p}:{GUEST_PORT}")])
            .collect();
        net.run("mem", memory_ip, &flags, &SLEEP)?;
        std::thread::sleep(SETTLE);
        let rss_after = rss_kib(daemon_pid)?;
        let entries_after = publish_entries(&bpffs)?;
        let proxies = docker_proxies(|ip| ip == memory_ip);
        let proxy_kib: f64 = proxies.iter().map(|(_, kib)| kib).sum();
        let ports = f64::from(MEMORY_PORTS);

        let mut r = RunResult::default();
        r.set(
            "ready_median_ms",
            stats::median(&ready_ms).context("no start timed")?,
        );
        r.set(
            "ready_p99_ms",
            stats::percentile(&ready_ms, 99.0).expect("not empty"),
        );
        r.set("conn_uplink_per_s", up.rate());
        r.set("conn_local_per_s", lo.rate());
        r.set("proxies_per_port", proxies.len() as f64 / ports);
        r.notes.extend(up.note("through the uplink"));
        r.notes.extend(lo.note("host to 127.0.0.1"));
        if netpath {
            let grew = rss_after - rss_before;
            r.set("rss_per_port_kib", (grew + proxy_kib) / ports);
            let entries = entries_after as f64 - entries_before as f64;
            r.set("entries_per_port", entries / ports);
            r.notes.push(format!(
                "{MEMORY_PORTS} ports: daemon VmRSS {rss_before:.0} → {rss_after:.0} KiB, \
                 {} docker-proxy, publish-map entries {entries_before} → {entries_after}",
                proxies.len()
            ));
        } else {
            r.set("rss_per_port_kib", proxy_kib / ports);
            r.unavailable(
                "entries_per_port",
                "no BPF maps: iptables DNAT and docker-proxy",
            );
            r.notes.push(format!(
                "{MEMORY_PORTS} ports: {} docker-proxy processes, {proxy_kib:.0} KiB VmRSS in all",
                proxies.len()
            ));
        }
        r.samples.insert("ready_ms".into(), ready_ms);
        Ok(r)
    }

    /// What is left once the network is removed: containers, docker-proxy processes and
    /// iptables rules for the subnet, and the netpath daemon's networks, endpoints and
    /// port leases.
    fn leftovers(
        &self,
        ctx: &mut Ctx,
        docker: &Dockerd,
        subnet: Ipv4Net,
        netpath: bool,
    ) -> Result<Vec<String>> {
        let mut left = Vec::new();
        let ids = docker_ok(docker, &["ps", "-aq"])?;
        if !ids.is_empty() {
            left.push(format!(
                "containers {}",
                ids.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
        let proxies: Vec<String> = docker_proxies(|ip| subnet.contains(&ip))
            .into_iter()
            .map(|(pid, _)| pid.to_string())
            .collect();
        if !proxies.is_empty() {
            left.push(format!("docker-proxy processes {}", proxies.join(" ")));
        }
        let save = cleanup::iptables_save().context("iptables-save does not run")?;
        let rules = cleanup::iptables_rules(&save, |l| cleanup::mentions_net24(l, subnet));
        if !rules.is_empty() {
            left.push(format!("iptables rules {}", rules.join("; ")));
        }
        if netpath {
            let c = ctx.client()?;
            let nets = ctx.block_on(c.list_networks());
            let nets = nets.map_err(|e| anyhow::anyhow!("netpath: list networks: {e}"))?;
            let eps = ctx.block_on(c.list_endpoints(None));
            let eps = eps.map_err(|e| anyhow::anyhow!("netpath: list endpoints: {e}"))?;
            let ports = ctx.block_on(c.list_ports());
            let ports = ports.map_err(|e| anyhow::anyhow!("netpath: list ports: {e}"))?;
            let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
            let ids: Vec<&str> = eps.iter().map(|e| e.id.as_str()).collect();
            for (what, list) in [("networks", names), ("endpoints", ids)] {
                if !list.is_empty() {
                    left.push(format!("netpath {what} {}", list.join(" ")));
                }
            }
            if !ports.is_empty() {
                left.push(format!("{} netpath port leases", ports.len()));
            }
        }
        Ok(left)
    }
}

impl Scenario for DockerScenario {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn title(&self) -> String {
        "Docker: container start to network-ready, published-port connection rate and \
         memory per port, netpath's network driver vs Docker's bridge driver"
            .into()
    }

    fn method(&self) -> String {
        let quick = if self.quick {
            " (`--quick`: 25 containers per run; without it, 60)"
        } else {
            ""
        };
        format!(
            "One private dockerd (Debian's docker.io 20.10: its own data root, exec root and \
             socket, `--bridge=none`, `iptables: true`, the default userland proxy on; a \
             busybox image made by `docker import`) serves both variants, which alternate \
             run by run; the bench's netpath daemon serves the Docker plugin on a socket of \
             the run's name in /run/docker/plugins and runs through both variants. Each run \
             makes a network with `docker network create --subnet` (a /24 of 10.255.0.0/16 \
             for netpath, of 10.254.0.0/16 for the bridge) and an uplink veth (netpath: \
             `-o uplink=`; its other end in an \"outside\" namespace). Container start to \
             network-ready: an untimed warm-up container, then N = {n}{quick} containers one \
             after another, each `docker run -d --ip A IMAGE httpd -p {GUEST_PORT}` timed \
             from the spawn of `docker run` to the first TCP connect from the host to \
             A:{GUEST_PORT} that completes (probing starts when `docker run` returns: a \
             {probe} ms connect bound, {pause} ms between tries; median and p99 per run); \
             removed {RM_BATCH} at a time, untimed. New connections per second through a \
             published port: a container started with `-p HOSTPORT:{GUEST_PORT}` (host ports \
             17000–17999, one block per run) with the bench's server in its namespace; \
             {WORKERS} client threads make {c} connections (connect, {req} bytes, {resp} \
             bytes back, the server's close; rate = completed / wall time, bounded at {b} s) \
             after {WARMUP_CONNS} warm-up ones, (a) from the outside namespace to the \
             uplink's host address and (b) from the host to 127.0.0.1:HOSTPORT (the bridge \
             driver: docker-proxy). Memory per published port: a container started with \
             {MEMORY_PORTS} `-p` ports; the bridge driver: the VmRSS of the docker-proxy \
             processes forwarding to it, summed, ÷ {MEMORY_PORTS}; netpath: how much the \
             daemon's VmRSS grew across that `docker run` (its one endpoint included) plus \
             any docker-proxy, ÷ {MEMORY_PORTS}, and the entries its publish maps gained \
             (`bpftool map dump`; the maps are preallocated, so publishing allocates no \
             kernel memory). dockerd's own growth is not counted for either. Then every \
             container and the network are removed, and the run checks that no container, \
             docker-proxy, iptables rule for the subnet, or netpath network, endpoint or \
             lease is left. A failed `docker` command, a container that does not answer \
             within {ready} s, more than 1 % failed connections or a leftover make the run \
             FAILED. Ratios are netpath ÷ bridge.",
            n = self.n,
            probe = PROBE_CONNECT.as_millis(),
            pause = PROBE_PAUSE.as_millis(),
            c = self.conns,
            req = connrate::REQUEST_LEN,
            resp = connrate::RESPONSE_LEN,
            b = self.conn_budget.as_secs(),
            ready = READY_TIMEOUT.as_secs(),
        )
    }

    fn variants(&self) -> Vec<Variant> {
        vec![
            Variant {
                key: "netpath",
                label: "netpath driver",
                how: "`docker network create -d <plugin> --subnet … -o uplink=<veth>` (Docker's \
                      default IPAM): netpath's libnetwork remote driver, served by the bench's \
                      daemon; `-p` is published in BPF (DNAT on the uplink, socket-level for \
                      the host's own connections), no docker-proxy, no iptables rule."
                    .into(),
            },
            Variant {
                key: "bridge",
                label: "Docker bridge",
                how: "`docker network create -d bridge --subnet …`: Docker's bridge driver \
                      (a Linux bridge, veths, iptables NAT and filter rules, iptables-nft), \
                      `-p` by a DNAT rule plus one docker-proxy process per port and family \
                      (the default `userland-proxy: true`), which carries connections to \
                      127.0.0.1."
                    .into(),
            },
        ]
    }

    fn reference(&self) -> &'static str {
        "bridge"
    }

    fn metrics(&self) -> Vec<Metric> {
        vec![
            Metric::new(
                "ready_median_ms",
                format!("`docker run -d` to network-ready, median (N = {})", self.n),
                Unit::Millis,
                Better::Lower,
            ),
            Metric::new(
                "ready_p99_ms",
                format!("`docker run -d` to network-ready, p99 (N = {})", self.n),
                Unit::Millis,
                Better::Lower,
            ),
            Metric::new(
                "conn_uplink_per_s",
                "new connections/s through `-p`, from another namespace via the uplink",
                Unit::ConnPerSec,
                Better::Higher,
            ),
            Metric::new(
                "conn_local_per_s",
                "new connections/s through `-p`, from the host to 127.0.0.1",
                Unit::ConnPerSec,
                Better::Higher,
            )
            .target_vs("netpath", 3.0, "bridge"),
            Metric::new(
                "rss_per_port_kib",
                "resident memory kept per published port",
                Unit::KiB,
                Better::Lower,
            ),
            Metric::new(
                "proxies_per_port",
                "docker-proxy processes per published port",
                Unit::Count,
                Better::Lower,
            ),
            Metric::new(
                "entries_per_port",
                "publish-map entries per published port",
                Unit::Count,
                Better::Lower,
            ),
        ]
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        match variant {
            "netpath" | "bridge" => self.run_variant(ctx, variant == "netpath"),
            other => bail!("unknown variant {other}"),
        }
    }

    fn finish(&mut self, ctx: &mut Ctx) {
        ctx.detail("stopping dockerd");
        // Removes its containers, stops it, and takes away its iptables chains and tables.
        drop(self.dockerd.take());
        // Later scenarios get a daemon without the plugin.
        for p in ctx.stop_daemon() {
            ctx.log(format!("docker: {p}"));
        }
        if let Some(plugin) = &self.plugin {
            let _ = fs::remove_file(Self::socket(plugin));
        }
        // Docker's bridge driver loads br_netfilter (every Linux bridge's frames through
        // iptables): unload it if it was not there before.
        if self.br_netfilter_before == Some(false) && Path::new(BR_NETFILTER).exists() {
            let out = proc::run_bounded(
                std::process::Command::new("modprobe").args(["-r", "br_netfilter"]),
                None,
                proc::CMD_TIMEOUT,
            );
            if !out.is_ok_and(|o| o.status.success()) {
                ctx.log("docker: cannot unload br_netfilter, which dockerd loaded");
            }
        }
    }

    fn plots(&self, result: &ScenarioResult, dir: &Path) -> Result<Vec<(String, String)>> {
        plot::LatencyCdf {
            key: "ready_ms",
            file: "docker-ready-latency-cdf.svg",
            title: format!(
                "docker run -d to network-ready: latency CDF (N = {} per run, all rounds)",
                self.n
            ),
            x_desc: "docker run to first TCP connect (ms, log scale)",
            y_desc: "fraction of containers",
            caption: "Container start to network-ready, per variant (CDF; further left is \
                      faster)",
        }
        .draw(result, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_subnets_are_apart() {
        let (np, np_mem) = host_ports(1, true);
        let (br, br_mem) = host_ports(1, false);
        assert_eq!((np, br), (17042, 17063));
        assert_eq!((np_mem[0], np_mem.len()), (17043, 20));
        assert_eq!(*np_mem.last().unwrap() + 1, br);
        assert_eq!(br_mem, (17064..=17083).collect::<Vec<u16>>());
        assert!(*host_ports(u32::MAX, false).1.last().unwrap() < 18000);
        assert!(*host_ports(22, false).1.last().unwrap() < 18000);
        assert_eq!(subnet(251, true).to_string(), "10.255.1.0/24");
        assert_eq!(subnet(251, false).to_string(), "10.254.1.0/24");
    }
}
