//! `cni`: what a container runtime pays per container with netpath's CNI plugin against
//! podman's default CNI chain — the `bridge` plugin (`host-local` IPAM, `isGateway`,
//! `ipMasq`) followed by `portmap` — run the way libcni runs them: the ADD latency per
//! container (plugin execs included), the DEL latency, and new connections per second
//! through a port published with the `portMappings` capability.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    Better, Ctx, Metric, Opts, RunResult, Scenario, Unit, Variant, cleanup,
    connrate::{self, ConnStats},
    ctx::host,
    plot,
    report::ScenarioResult,
    router::HostUplink,
    setup::CNI_PATH,
    stats,
    topo::{Link, NetpathNetwork, Ns, NsSet, ping},
};

/// The served port in the server container.
const GUEST_PORT: u16 = 80;
/// Host ports published: three per run from here on, chosen by the bench's pid (portmap
/// DNATs a port on every local address, so another bench run's rules, or a killed one's,
/// must not catch this run's traffic), below netpath's ephemeral range 20000–29999.
const HOST_PORTS_FROM: u16 = 18100;
const HOST_PORT_SLOTS: u32 = 300;
/// Bound on one plugin exec.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// One run must have added its containers within this.
const RUN_BUDGET: Duration = Duration::from_secs(300);
/// Containers whose gateway reachability is checked (first, middle, last).
const PING_CHECKS: usize = 3;
/// Connection-rate client workers, server threads, warm-up connections.
pub(crate) const WORKERS: usize = 4;
pub(crate) const SERVER_THREADS: usize = 2;
pub(crate) const WARMUP_CONNS: usize = 200;

/// This run's host ports: netpath's, bridge + portmap's, the warm-up container's (one
/// per variant, so that one variant's leftovers could never serve the other's traffic).
fn host_ports(pid: u32) -> [u16; 3] {
    let base = HOST_PORTS_FROM + 3 * (pid % HOST_PORT_SLOTS) as u16;
    [base, base + 1, base + 2]
}

pub struct CniScenario {
    /// Containers added (and timed) per run.
    n: usize,
    /// Connections measured per run, and their time bound.
    conns: usize,
    conn_budget: Duration,
}

impl CniScenario {
    pub fn new(opts: &Opts) -> Self {
        if opts.quick {
            CniScenario {
                n: 30,
                conns: 3000,
                conn_budget: Duration::from_secs(8),
            }
        } else {
            CniScenario {
                n: 100,
                conns: 15_000,
                conn_budget: Duration::from_secs(30),
            }
        }
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One plugin exec as a runtime does it (`CNI_*` environment, the configuration on stdin,
/// its own process group), timed from spawn to exit, bounded by [`EXEC_TIMEOUT`]. Returns
/// the time and stdout when it exits 0, else the plugin's error.
fn exec(
    plugin: &Path,
    command: &str,
    cid: &str,
    netns: &Path,
    conf: &Value,
) -> Result<(Duration, Vec<u8>), String> {
    let stdin = conf.to_string();
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let name = plugin.file_name().unwrap_or_default().to_string_lossy();
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", plugin.display()))?;
    let pid = child.id();
    if let Some(mut pipe) = child.stdin.take() {
        // A configuration fits the pipe buffer.
        let _ = pipe.write_all(stdin.as_bytes());
    }
    let (tx, rx) = mpsc::channel();
    // Waits on a thread, so that the exit is seen at once (no polling) and a hung plugin
    // can be killed.
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_end(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_end(&mut err);
        }
        let status = child.wait();
        let _ = tx.send((start.elapsed(), status, out, err));
    });
    let (took, status, out, err) = match rx.recv_timeout(EXEC_TIMEOUT) {
        Ok(r) => r,
        Err(_) => {
            // Still unreaped (the thread has not returned): the pid is the plugin's.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(format!(
                "{name} {command} did not finish within {} s",
                EXEC_TIMEOUT.as_secs()
            ));
        }
    };
    match status {
        Ok(s) if s.success() => Ok((took, out)),
        Ok(s) => Err(format!(
            "{name} {command}: {} ({s})",
            plugin_error(&out, &err)
        )),
        Err(e) => Err(format!("{name} {command}: {e}")),
    }
}

/// A CNI error: `msg` (and `details`) of the error JSON, else stderr.
fn plugin_error(stdout: &[u8], stderr: &[u8]) -> String {
    match serde_json::from_slice::<Value>(stdout) {
        Ok(v) if v["msg"].is_string() => {
            let mut s = v["msg"].as_str().unwrap_or_default().to_owned();
            if let Some(d) = v["details"].as_str().filter(|d| !d.is_empty()) {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        _ => super::proc::first_line(stderr),
    }
}

/// The host-side interfaces of an ADD result (no `sandbox`), except `bridge`.
fn host_interfaces(result: &Value, bridge: Option<&str>) -> Vec<String> {
    result["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i.get("sandbox").is_none())
        .filter_map(|i| i["name"].as_str())
        .filter(|n| Some(*n) != bridge)
        .map(str::to_owned)
        .collect()
}

/// The container's IPv4 address in an ADD result.
fn container_ip(result: &Value) -> Option<Ipv4Addr> {
    let a = result["ips"].as_array()?.first()?["address"].as_str()?;
    a.split_once('/').map_or(a, |(ip, _)| ip).parse().ok()
}

/// The `portMappings` capability for one TCP port.
fn port_mapping(host_port: u16) -> Value {
    json!([{"hostPort": host_port, "containerPort": GUEST_PORT, "protocol": "tcp"}])
}

/// `conf` as libcni passes it to a plugin: with `runtimeConfig.portMappings` when the
/// container has published ports (the plugin declares the capability), and the previous
/// plugin's result.
fn with_runtime(conf: &Value, ports: Option<&Value>, prev: Option<&Value>) -> Value {
    let mut c = conf.clone();
    if let Some(p) = ports {
        c["runtimeConfig"] = json!({ "portMappings": p });
    }
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

/// The plugins of a variant.
enum Plugins {
    /// `netpath-cni` alone.
    Netpath { bin: PathBuf, conf: Value },
    /// `bridge`, then `portmap` with the bridge's result.
    Chain {
        bridge: PathBuf,
        portmap: PathBuf,
        bridge_conf: Value,
        portmap_conf: Value,
    },
}

/// One container's attachment: what its DEL needs.
struct Attached {
    cid: String,
    netns: PathBuf,
    ports: Option<Value>,
    /// The chain's cached result (libcni passes it to every DEL as `prevResult`).
    result: Option<Value>,
}

/// The attachments of a run; whatever is still attached is DELeted on drop.
struct Attacher {
    plugins: Plugins,
    live: Vec<Attached>,
    /// Every host-side interface an ADD reported (checked after the DELs).
    host_ifs: Vec<String>,
}

impl Attacher {
    fn new(plugins: Plugins) -> Attacher {
        Attacher {
            plugins,
            live: Vec::new(),
            host_ifs: Vec::new(),
        }
    }

    /// ADDs container `cid` in `netns` (with `ports` published); returns the time the
    /// plugin execs took and the result.
    fn add(
        &mut self,
        cid: &str,
        netns: &Path,
        ports: Option<Value>,
    ) -> Result<(Duration, Value), String> {
        let parse = |out: &[u8]| -> Result<Value, String> {
            serde_json::from_slice(out).map_err(|e| format!("the ADD result is not JSON: {e}"))
        };
        match &self.plugins {
            Plugins::Netpath { bin, conf } => {
                let conf = with_runtime(conf, ports.as_ref(), None);
                let (took, out) = exec(bin, "ADD", cid, netns, &conf)?;
                let result = parse(&out)?;
                self.host_ifs.extend(host_interfaces(&result, None));
                self.live.push(Attached {
                    cid: cid.to_owned(),
                    netns: netns.to_owned(),
                    ports,
                    result: Some(result.clone()),
                });
                Ok((took, result))
            }
            Plugins::Chain {
                bridge,
                portmap,
                bridge_conf,
                portmap_conf,
            } => {
                let bridge_name = bridge_conf["bridge"].as_str().map(str::to_owned);
                let (t1, out) = exec(bridge, "ADD", cid, netns, bridge_conf)?;
                let prev = parse(&out)?;
                self.host_ifs
                    .extend(host_interfaces(&prev, bridge_name.as_deref()));
                // From here on a DEL is due, whatever portmap does.
                self.live.push(Attached {
                    cid: cid.to_owned(),
                    netns: netns.to_owned(),
                    ports: ports.clone(),
                    result: Some(prev.clone()),
                });
                let conf = with_runtime(portmap_conf, ports.as_ref(), Some(&prev));
                let (t2, out) = exec(portmap, "ADD", cid, netns, &conf)?;
                let result = parse(&out)?;
                if let Some(a) = self.live.last_mut() {
                    a.result = Some(result.clone());
                }
                Ok((t1 + t2, result))
            }
        }
    }

    /// DELs attachment `a`; returns the time the plugin execs took.
    fn del(&self, a: &Attached) -> Result<Duration, String> {
        match &self.plugins {
            Plugins::Netpath { bin, conf } => {
                let conf = with_runtime(conf, a.ports.as_ref(), a.result.as_ref());
                exec(bin, "DEL", &a.cid, &a.netns, &conf).map(|(t, _)| t)
            }
            Plugins::Chain {
                bridge,
                portmap,
                bridge_conf,
                portmap_conf,
            } => {
                // libcni deletes in reverse order, each with the cached result.
                let conf = with_runtime(portmap_conf, a.ports.as_ref(), a.result.as_ref());
                let t1 = exec(portmap, "DEL", &a.cid, &a.netns, &conf).map(|(t, _)| t);
                let conf = with_runtime(bridge_conf, a.ports.as_ref(), a.result.as_ref());
                let t2 = exec(bridge, "DEL", &a.cid, &a.netns, &conf).map(|(t, _)| t);
                Ok(t1? + t2?)
            }
        }
    }

    /// DELs everything still attached; returns the DEL times (ms) and the failures.
    fn del_all(&mut self, ctx: Option<&Ctx>) -> (Vec<f64>, Vec<String>) {
        let live = std::mem::take(&mut self.live);
        let n = live.len();
        let (mut times, mut failures) = (Vec::new(), Vec::new());
        for (i, a) in live.into_iter().enumerate() {
            if let Some(ctx) = ctx
                && i % 25 == 0
            {
                ctx.detail(&format!("DEL {i}/{n}"));
            }
            match self.del(&a) {
                Ok(t) => times.push(ms(t)),
                Err(e) => failures.push(format!("{}: {e}", a.cid)),
            }
        }
        (times, failures)
    }
}

impl Drop for Attacher {
    fn drop(&mut self) {
        let _ = self.del_all(None);
    }
}

/// What the run built that the checks after the DELs need.
enum Net {
    Netpath(NetpathNetwork),
    Bridge {
        /// The bridge the plugin makes (it never removes it).
        _link: Link,
        data_dir: PathBuf,
        net_name: String,
    },
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Net::Bridge { data_dir, .. } = self {
            let _ = std::fs::remove_dir_all(data_dir);
        }
    }
}

impl CniScenario {
    fn run_variant(&self, ctx: &mut Ctx, variant: &str) -> Result<RunResult> {
        let netpath = variant == "netpath";
        ctx.detail("building the topology");
        let client = Ns::create(ctx, "c")?;
        let uplink = HostUplink::create(
            ctx,
            &client,
            ctx.subnets.in_netns_24(if netpath { 37 } else { 38 }),
        )?;
        // [0] warm-up, [1] server, then the N measured containers.
        let nss = NsSet::create(ctx, "k", self.n + 2)?;
        let (net, plugins, subnet, host_port) = if netpath {
            self.netpath_plugins(ctx, &uplink)?
        } else {
            self.chain_plugins(ctx)?
        };
        let gateway = host(subnet, 0);
        let mut att = Attacher::new(plugins);
        let r = self.measure(
            ctx,
            &mut att,
            &nss,
            &client,
            uplink.host_ip,
            host_port,
            gateway,
        );
        ctx.detail("DEL");
        let (del_ms, del_failures) = att.del_all(Some(ctx));
        for veth in att.host_ifs.iter().filter(|_| !netpath) {
            ctx.foreign_links.push(veth.clone());
        }
        let leftovers = self.leftovers(ctx, &att, &net);
        drop(att);
        ctx.detail("removing the topology");
        drop(net);
        drop(nss);
        drop((uplink, client));
        let mut r = r?;
        if let Some(first) = del_failures.first() {
            bail!(
                "{} of {} DELs failed; first: {first}",
                del_failures.len(),
                self.n + 1
            );
        }
        let leftovers = leftovers?;
        if !leftovers.is_empty() {
            bail!("left after every DEL: {}", leftovers.join("; "));
        }
        r.set(
            "del_median_ms",
            stats::median(&del_ms).context("no DEL timed")?,
        );
        r.samples.insert("del_ms".into(), del_ms);
        Ok(r)
    }

    /// netpath-cni on a network (created by the first ADD) whose uplink is the client's.
    fn netpath_plugins(
        &self,
        ctx: &mut Ctx,
        uplink: &HostUplink,
    ) -> Result<(Net, Plugins, ipnet::Ipv4Net, u16)> {
        let Some(bin) = ctx.cni_bin.clone() else {
            bail!(
                "no netpath-cni next to {}: build it (`cargo build --release -p netpath --bins`)",
                ctx.opts.netpath_bin.display()
            );
        };
        let subnet = ctx.subnets.cni_netpath();
        let name = ctx.name("n");
        let socket = ctx.daemon()?.paths.socket.clone();
        let network = NetpathNetwork::adopt(ctx, name.clone(), host(subnet, 0))?;
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "netpath-cni",
            "subnet": subnet.to_string(),
            "uplink": uplink.link.0,
            "socket": socket,
            "capabilities": {"portMappings": true},
        });
        Ok((
            Net::Netpath(network),
            Plugins::Netpath { bin, conf },
            subnet,
            host_ports(std::process::id())[0],
        ))
    }

    /// podman's default chain (its `87-podman-bridge.conflist`, less `firewall` and
    /// `tuning`) on a bridge of its own, with a private host-local data dir.
    fn chain_plugins(&self, ctx: &mut Ctx) -> Result<(Net, Plugins, ipnet::Ipv4Net, u16)> {
        let (bridge, portmap) = (
            Path::new(CNI_PATH).join("bridge"),
            Path::new(CNI_PATH).join("portmap"),
        );
        for p in [&bridge, &portmap] {
            if !p.is_file() {
                bail!(
                    "{} is missing: install Debian's containernetworking-plugins (`cargo xtask setup`)",
                    p.display()
                );
            }
        }
        if ctx.iptables_before.is_none() {
            let save = cleanup::iptables_save()
                .context("iptables-save does not run: the portmap plugin needs iptables")?;
            let before = cleanup::iptables_chains(&save);
            // For the sweep after a kill: it removes what this run adds.
            let listed: Vec<&str> = before.iter().map(String::as_str).collect();
            std::fs::write(ctx.tmp.join(cleanup::IPTABLES_BEFORE), listed.join("\n"))
                .context("cannot write the iptables chains")?;
            ctx.iptables_before = Some(before);
        }
        let subnet = ctx.subnets.cni_bridge();
        let name = ctx.name("br");
        let data_dir = ctx.tmp.join(format!("cni-{name}"));
        let bridge_conf = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "bridge",
            "bridge": name,
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "routes": [{"dst": "0.0.0.0/0"}],
                "ranges": [[{"subnet": subnet.to_string(), "gateway": host(subnet, 0).to_string()}]],
                "dataDir": data_dir,
            },
        });
        let portmap_conf = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "portmap",
            "capabilities": {"portMappings": true},
        });
        Ok((
            Net::Bridge {
                _link: Link(name.clone()),
                data_dir,
                net_name: name,
            },
            Plugins::Chain {
                bridge,
                portmap,
                bridge_conf,
                portmap_conf,
            },
            subnet,
            host_ports(std::process::id())[1],
        ))
    }

    /// Warm-up, the timed ADDs, reachability, the published port's connection rate.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; a struct of the same fields would only rename them"
    )]
    fn measure(
        &self,
        ctx: &mut Ctx,
        att: &mut Attacher,
        nss: &NsSet,
        client: &Ns,
        host_ip: Ipv4Addr,
        host_port: u16,
        gateway: Ipv4Addr,
    ) -> Result<RunResult> {
        let start = Instant::now();
        let cid = |i: usize| nss.names[i].clone();
        // Warm-up (untimed): the first ADD creates the network or the bridge, and the
        // first published port portmap's shared chains; then DEL it.
        ctx.detail("warm-up container (creates the network)");
        att.add(
            &cid(0),
            &nss.path(0),
            Some(port_mapping(host_ports(std::process::id())[2])),
        )
        .map_err(|e| anyhow::anyhow!("warm-up ADD: {e}"))?;
        let (_, f) = att.del_all(None);
        if let Some(e) = f.first() {
            bail!("warm-up DEL: {e}");
        }
        let mut add_ms = Vec::with_capacity(self.n);
        let mut ok = Vec::with_capacity(self.n);
        let mut failures = Vec::new();
        for i in 2..self.n + 2 {
            ctx.check()?;
            if start.elapsed() > RUN_BUDGET {
                bail!(
                    "stopped after {} s with {} of {} containers added (the budget of a run)",
                    RUN_BUDGET.as_secs(),
                    i - 2,
                    self.n
                );
            }
            if (i - 2).is_multiple_of(10) {
                ctx.detail(&format!("ADD {}/{}", i - 2, self.n));
            }
            match att.add(&cid(i), &nss.path(i), None) {
                Ok((t, _)) => {
                    add_ms.push(ms(t));
                    ok.push(i);
                }
                Err(e) => failures.push(format!("container {}: {e}", i - 2)),
            }
        }
        if failures.len() * 100 > self.n {
            bail!(
                "{} of {} ADDs failed (> 1 %); first: {}",
                failures.len(),
                self.n,
                failures[0]
            );
        }
        if ok.is_empty() {
            bail!("no container was added");
        }
        ctx.detail("ADD of the server container (one published port)");
        let (port_add, result) = att
            .add(&cid(1), &nss.path(1), Some(port_mapping(host_port)))
            .map_err(|e| anyhow::anyhow!("ADD of the server container: {e}"))?;
        let server_ip = container_ip(&result)
            .with_context(|| format!("no IPv4 address in the ADD result {result}"))?;
        ctx.detail("ping the gateway from the first, middle and last container");
        for k in 0..PING_CHECKS {
            let i = ok[k * (ok.len() - 1) / (PING_CHECKS - 1)];
            ping(&nss.names[i], gateway).context("an added container cannot reach its gateway")?;
        }
        let _server = connrate::Server::start(
            &nss.path(1),
            SocketAddrV4::new(server_ip, GUEST_PORT),
            SERVER_THREADS,
        )?;
        let target = SocketAddrV4::new(host_ip, host_port);
        let conns = |ctx: &Ctx, total: usize, what: &str| -> Result<ConnStats> {
            ctx.check()?;
            ctx.detail(&format!("{total} connections to {target}, {what}"));
            let s =
                connrate::run_clients(&client.path(), target, total, WORKERS, self.conn_budget)?;
            s.check(what)?;
            Ok(s)
        };
        conns(ctx, WARMUP_CONNS, "warm-up (does traffic flow?)")?;
        let s = conns(ctx, self.conns, "measured")?;
        let mut r = RunResult::default();
        r.set("add_median_ms", stats::median(&add_ms).expect("not empty"));
        r.set(
            "add_p99_ms",
            stats::percentile(&add_ms, 99.0).expect("not empty"),
        );
        r.set("add_port_ms", ms(port_add));
        r.set("conn_per_s", s.rate());
        r.notes.extend(s.note("published port"));
        if let Some(first) = failures.first() {
            r.notes.push(format!(
                "{} of {} ADDs failed (first: {first})",
                failures.len(),
                self.n
            ));
        }
        r.samples.insert("add_ms".into(), add_ms);
        Ok(r)
    }

    /// What is left after every DEL: host interfaces, the daemon's endpoints and port
    /// leases, host-local leases, iptables rules.
    fn leftovers(&self, ctx: &Ctx, att: &Attacher, net: &Net) -> Result<Vec<String>> {
        let mut left = Vec::new();
        // A veth's host end goes with its peer, asynchronously: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let present = || -> Vec<&String> {
            att.host_ifs
                .iter()
                .filter(|i| Path::new("/sys/class/net").join(i).exists())
                .collect()
        };
        while !present().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let ifs = present();
        if !ifs.is_empty() {
            left.push(format!(
                "host interfaces {}",
                ifs.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
            ));
        }
        match net {
            Net::Netpath(network) => {
                let c = network.client();
                let eps = ctx
                    .block_on(c.list_endpoints(None))
                    .map_err(|e| anyhow::anyhow!("netpath: list endpoints: {e}"))?;
                let ids: Vec<&str> = eps
                    .iter()
                    .filter(|e| e.network == network.name)
                    .map(|e| e.id.as_str())
                    .collect();
                if !ids.is_empty() {
                    left.push(format!("netpath endpoints {}", ids.join(" ")));
                }
                let ports = ctx
                    .block_on(c.list_ports())
                    .map_err(|e| anyhow::anyhow!("netpath: list ports: {e}"))?;
                let leases: Vec<String> = ports
                    .iter()
                    .filter(|l| eps.iter().all(|e| e.id != l.endpoint))
                    .map(|l| format!("{l:?}"))
                    .collect();
                if !leases.is_empty() {
                    left.push(format!("port leases {}", leases.join(", ")));
                }
            }
            Net::Bridge {
                data_dir, net_name, ..
            } => {
                let leases: Vec<String> = std::fs::read_dir(data_dir.join(net_name))
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|f| f.parse::<Ipv4Addr>().is_ok())
                    .collect();
                if !leases.is_empty() {
                    left.push(format!("host-local leases {}", leases.join(" ")));
                }
                let subnet = ctx.subnets.cni_bridge();
                let save = cleanup::iptables_save().context("iptables-save does not run")?;
                let rules = cleanup::iptables_rules(&save, |l| {
                    l.contains(&ctx.prefix) || cleanup::mentions_net24(l, subnet)
                });
                if !rules.is_empty() {
                    left.push(format!("iptables rules {}", rules.join("; ")));
                }
            }
        }
        Ok(left)
    }
}

impl Scenario for CniScenario {
    fn name(&self) -> &'static str {
        "cni"
    }

    fn title(&self) -> String {
        "CNI: network setup per container and published-port connection rate, netpath-cni \
         vs bridge + portmap"
            .into()
    }

    fn method(&self) -> String {
        format!(
            "Each run execs the plugins as libcni does (`CNI_COMMAND`, `CNI_CONTAINERID`, \
             `CNI_NETNS`, `CNI_IFNAME=eth0`, `CNI_PATH={CNI_PATH}`, the network \
             configuration on stdin, spec 1.0.0), each container in its own pre-created \
             network namespace. First an untimed warm-up container with a published port \
             (ADD, DEL: it creates the network or bridge and portmap's shared chains). Then \
             N = {n} containers without published ports, one after another: ADD latency = \
             the plugin exec(s) of one container from spawn to exit, what a runtime pays \
             (median and p99 per run). Then a server container with one published port \
             (`runtimeConfig.portMappings`, a host port of 18100–18999 chosen per run → \
             {GUEST_PORT}): its ADD time, one sample per run. The gateway is pinged from \
             {PING_CHECKS} containers (first, middle, last). New connections per second \
             through the published port: a \
             client namespace behind a veth whose host end has an address (netpath: the \
             network's uplink; portmap DNATs whatever arrives for a local address) connects \
             to that address and the host port: {WORKERS} client threads make {c} \
             connections (connect, {req} bytes, {resp} bytes back, the server's close), rate \
             = completed / wall time (bounded at {b} s), after {WARMUP_CONNS} warm-up \
             connections. Then every container is DELeted (DEL latency median, all N + 1) \
             and the run checks that nothing is left: host interfaces, netpath endpoints and \
             port leases, host-local leases, iptables rules mentioning the run's names or \
             the bridge's subnet. A run with more than 1 % failed ADDs or connections, a \
             failed DEL or a leftover is FAILED. Ratios are netpath-cni ÷ bridge + portmap.",
            n = self.n,
            c = self.conns,
            req = connrate::REQUEST_LEN,
            resp = connrate::RESPONSE_LEN,
            b = self.conn_budget.as_secs(),
        )
    }

    fn variants(&self) -> Vec<Variant> {
        vec![
            Variant {
                key: "netpath",
                label: "netpath-cni",
                how: "the `netpath-cni` plugin (built next to the netpath binary, copied at \
                      start) talking to the bench's netpath daemon (`socket` in the \
                      configuration): `{\"type\": \"netpath-cni\", \"subnet\": /24, \
                      \"uplink\": the client veth's host end}`; the first ADD creates the \
                      network; published ports are DNATed in BPF on the uplink."
                    .into(),
            },
            Variant {
                key: "bridge",
                label: "bridge+portmap",
                how: format!(
                    "podman's default CNI chain (its 87-podman-bridge.conflist without \
                     `firewall` and `tuning`) from Debian's containernetworking-plugins in \
                     {CNI_PATH}: `bridge` (a bridge of its own, `isGateway`, `ipMasq`, \
                     `hairpinMode`, `host-local` IPAM on a /24 with a private `dataDir`), then \
                     `portmap` (`capabilities.portMappings`) with the bridge's result as \
                     `prevResult`; ADD time = both execs; DEL = portmap then bridge. \
                     iptables-nft in the host's namespace (the masquerade and DNAT chains); \
                     portmap's shared CNI-HOSTPORT-* chains are removed at the end if they \
                     were not there before (the empty `nat` tables iptables-nft creates, \
                     IPv4 and IPv6, stay: iptables cannot delete a table)."
                ),
            },
        ]
    }

    fn reference(&self) -> &'static str {
        "bridge"
    }

    fn metrics(&self) -> Vec<Metric> {
        vec![
            Metric::new(
                "add_median_ms",
                format!("ADD per container, median (N = {})", self.n),
                Unit::Millis,
                Better::Lower,
            ),
            Metric::new(
                "add_p99_ms",
                format!("ADD per container, p99 (N = {})", self.n),
                Unit::Millis,
                Better::Lower,
            ),
            Metric::new(
                "add_port_ms",
                "ADD of a container with one published port",
                Unit::Millis,
                Better::Lower,
            ),
            Metric::new(
                "del_median_ms",
                "DEL per container, median",
                Unit::Millis,
                Better::Lower,
            ),
            Metric::new(
                "conn_per_s",
                "new connections/s through the published port",
                Unit::ConnPerSec,
                Better::Higher,
            ),
        ]
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        match variant {
            "netpath" | "bridge" => self.run_variant(ctx, variant),
            other => bail!("unknown variant {other}"),
        }
    }

    fn finish(&mut self, ctx: &mut Ctx) {
        // portmap's DEL leaves its shared chains: remove them if the bench made them.
        if let Some(before) = &ctx.iptables_before
            && let Err(e) = cleanup::remove_hostport_chains(before)
        {
            ctx.log(format!("cni: portmap's shared iptables chains: {e:#}"));
        }
    }

    fn plots(&self, result: &ScenarioResult, dir: &Path) -> Result<Vec<(String, String)>> {
        plot::LatencyCdf {
            key: "add_ms",
            file: "cni-add-latency-cdf.svg",
            title: format!(
                "CNI ADD per container, plugin execs included: latency CDF (N = {} per run, \
                 all rounds)",
                self.n
            ),
            x_desc: "ADD latency per container (ms, log scale)",
            y_desc: "fraction of containers",
            caption: "ADD latency per container, per variant (CDF; further left is faster)",
        }
        .draw(result, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_read() {
        let r = json!({"cniVersion": "1.0.0", "interfaces": [
            {"name": "nb1-br3", "mac": "02:00:00:00:00:01"},
            {"name": "veth1a2b", "mac": "02:00:00:00:00:02"},
            {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.152.2.5/24", "gateway": "10.152.2.1", "interface": 2}]});
        assert_eq!(host_interfaces(&r, Some("nb1-br3")), vec!["veth1a2b"]);
        assert_eq!(container_ip(&r), Some(Ipv4Addr::new(10, 152, 2, 5)));
        let c = with_runtime(
            &json!({"type": "portmap"}),
            Some(&port_mapping(1)),
            Some(&r),
        );
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 1);
        assert_eq!(c["prevResult"], r);
        assert_eq!(
            plugin_error(br#"{"code":7,"msg":"bad","details":"why"}"#, b""),
            "bad: why"
        );
        assert_eq!(host_ports(1), [18103, 18104, 18105]);
        assert!(host_ports(u32::MAX)[2] < 20000);
    }
}
