//! `setup`: control-plane latency of adding one container endpoint (veth pair, move into
//! the namespace, address, default route, gateway neighbor), N times in a row, with
//! netpath's API, with `ip` commands, and with the CNI `bridge` plugin.

use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ipnet::Ipv4Net;
use netpath::model::EndpointCreate;

use super::{
    Better, Ctx, Metric, Opts, RunResult, Scenario, Target, Unit, Variant,
    ctx::host,
    plot, proc,
    report::ScenarioResult,
    stats,
    topo::{GatewayBridge, NetpathNetwork, NsSet, ping},
};

/// Where Debian's containernetworking-plugins puts the plugins.
pub const CNI_PATH: &str = "/usr/lib/cni";

/// One run (one variant, N endpoints) must finish within this.
const RUN_BUDGET: Duration = Duration::from_secs(300);

/// Endpoints whose gateway reachability is checked after each run (first, middle, last).
const PING_CHECKS: usize = 3;

/// Targets for netpath (issue #3).
const TARGET_MEDIAN_MS: f64 = 5.0;
const TARGET_TOTAL_1000_S: f64 = 10.0;

pub struct SetupScenario {
    n: usize,
}

impl SetupScenario {
    pub fn new(opts: &Opts) -> Self {
        SetupScenario {
            n: if opts.quick { 200 } else { 1000 },
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Per-endpoint latencies and failures of one run, turned into a result (or a FAILED
/// reason when more than 1 % of the adds failed).
struct Tally {
    n: usize,
    latencies_ms: Vec<f64>,
    /// Indices of the endpoints that were added.
    ok: Vec<usize>,
    failures: Vec<String>,
    start: Instant,
    total: Option<Duration>,
}

impl Tally {
    fn new(n: usize) -> Tally {
        Tally {
            n,
            latencies_ms: Vec::with_capacity(n),
            ok: Vec::with_capacity(n),
            failures: Vec::new(),
            start: Instant::now(),
            total: None,
        }
    }

    /// Checks Ctrl-C and the time budget before endpoint `i`; shows progress.
    fn before(&self, ctx: &Ctx, i: usize) -> Result<()> {
        ctx.check()?;
        if self.start.elapsed() > RUN_BUDGET {
            bail!(
                "stopped after {} s with {i} of {} endpoints added (the budget of a run)",
                RUN_BUDGET.as_secs(),
                self.n
            );
        }
        if i.is_multiple_of(25) {
            ctx.detail(&format!("endpoint {i}/{}", self.n));
        }
        Ok(())
    }

    fn record(&mut self, i: usize, took: Duration, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.latencies_ms.push(ms(took));
                self.ok.push(i);
            }
            Err(e) => self.failures.push(format!("endpoint {i}: {e}")),
        }
    }

    fn done(&mut self) {
        self.total = Some(self.start.elapsed());
    }

    /// Pings the gateway from a few of the added endpoints.
    fn check_reachability(&self, names: &[String], gateway: std::net::Ipv4Addr) -> Result<()> {
        if self.ok.is_empty() {
            return Ok(());
        }
        let picks = (0..PING_CHECKS).map(|k| self.ok[k * (self.ok.len() - 1) / (PING_CHECKS - 1)]);
        for i in picks {
            ping(&names[i], gateway).context("an added endpoint cannot reach its gateway")?;
        }
        Ok(())
    }

    fn result(self) -> Result<RunResult> {
        let failed = self.failures.len();
        if failed * 100 > self.n {
            bail!(
                "{failed} of {} endpoint adds failed (> 1 %); first: {}",
                self.n,
                self.failures[0]
            );
        }
        if self.latencies_ms.is_empty() {
            bail!("no endpoint was added");
        }
        let total = self
            .total
            .unwrap_or_else(|| self.start.elapsed())
            .as_secs_f64();
        let l = &self.latencies_ms;
        let mut r = RunResult::default();
        r.set("median_ms", stats::median(l).expect("not empty"));
        r.set("p99_ms", stats::percentile(l, 99.0).expect("not empty"));
        r.set("max_ms", stats::max(l).expect("not empty"));
        r.set("total_s", total);
        if self.n != 1000 {
            r.set("total_1000_s", total * 1000.0 / self.n as f64);
        }
        if failed > 0 {
            r.notes.push(format!(
                "{failed} of {} adds failed (first: {})",
                self.n, self.failures[0]
            ));
        }
        r.samples.insert("latency_ms".into(), self.latencies_ms);
        Ok(r)
    }
}

impl SetupScenario {
    fn run_netpath(&self, ctx: &mut Ctx) -> Result<RunResult> {
        let subnet = ctx.subnets.setup_netpath;
        let network = NetpathNetwork::create(ctx, subnet)?;
        let nss = NsSet::create(ctx, "s", self.n)?;
        let client = network.client().clone();
        let mut t = Tally::new(self.n);
        for i in 0..self.n {
            t.before(ctx, i)?;
            let req = EndpointCreate {
                network: network.name.clone(),
                netns: Some(nss.path(i)),
                pid: None,
                ip: None,
                ip6: None,
                ifname: None,
                mac: None,
                container_id: None,
                peer: None,
            };
            let start = Instant::now();
            let r = ctx.block_on(client.add_endpoint(&req));
            let took = start.elapsed();
            t.record(i, took, r.map(drop).map_err(|e| e.to_string()));
        }
        t.done();
        t.check_reachability(&nss.names, network.gateway)?;
        ctx.detail("removing the network");
        network.remove()?;
        ctx.detail("deleting the namespaces");
        drop(nss);
        t.result()
    }

    fn run_ip(&self, ctx: &mut Ctx) -> Result<RunResult> {
        let nss = NsSet::create(ctx, "s", self.n)?;
        let subnet = ctx.subnets.setup_ip;
        let br = GatewayBridge::create(ctx, subnet)?;
        let gw = br.gateway.to_string();
        let mut t = Tally::new(self.n);
        for i in 0..self.n {
            t.before(ctx, i)?;
            let (h, c) = (ctx.name("h"), ctx.name("c"));
            let ns = nss.names[i].as_str();
            let addr = format!("{}/{}", host(subnet, i as u32 + 1), subnet.prefix_len());
            let steps: [&[&str]; 7] = [
                &["link", "add", &h, "type", "veth", "peer", "name", &c],
                &["link", "set", &h, "master", &br.link.0, "up"],
                &["link", "set", &c, "netns", ns, "name", "eth0"],
                &["-n", ns, "addr", "add", &addr, "dev", "eth0"],
                &["-n", ns, "link", "set", "eth0", "up"],
                &["-n", ns, "route", "add", "default", "via", &gw],
                &[
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    &gw,
                    "lladdr",
                    &br.mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            ];
            let start = Instant::now();
            let mut outcome = Ok(());
            for args in steps {
                match Command::new("ip").args(args).output() {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => {
                        outcome = Err(format!(
                            "`ip {}`: {}",
                            args.join(" "),
                            proc::first_line(&out.stderr)
                        ));
                        break;
                    }
                    Err(e) => {
                        outcome = Err(format!("cannot run ip: {e}"));
                        break;
                    }
                }
            }
            let took = start.elapsed();
            t.record(i, took, outcome);
        }
        t.done();
        t.check_reachability(&nss.names, br.gateway)?;
        ctx.detail("deleting the namespaces");
        drop(nss);
        drop(br);
        t.result()
    }

    fn run_cni(&self, ctx: &mut Ctx) -> Result<RunResult> {
        let plugin = Path::new(CNI_PATH).join("bridge");
        if !plugin.is_file() {
            bail!(
                "{} is missing: install Debian's containernetworking-plugins (`cargo xtask setup`)",
                plugin.display()
            );
        }
        let nss = NsSet::create(ctx, "s", self.n)?;
        let subnet = ctx.subnets.setup_cni;
        let br = GatewayBridge::create(ctx, subnet)?;
        let data_dir = ctx.tmp.join(format!("cni-{}", br.link.0));
        let conf = cni_config(&br.link.0, subnet, br.gateway, &data_dir);
        let mut t = Tally::new(self.n);
        let mut added = Vec::new();
        for i in 0..self.n {
            t.before(ctx, i)?;
            let mut cmd = cni_command(&plugin, "ADD", &nss.names[i]);
            let start = Instant::now();
            let out = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    let mut stdin = child.stdin.take().expect("piped stdin");
                    stdin.write_all(conf.as_bytes())?;
                    drop(stdin);
                    child.wait_with_output()
                });
            let took = start.elapsed();
            let outcome = match out {
                Ok(out) if out.status.success() => {
                    added.push(i);
                    if let Some(veth) = cni_host_veth(&out.stdout) {
                        ctx.foreign_links.push(veth);
                    }
                    Ok(())
                }
                Ok(out) => Err(cni_error(&out.stdout, &out.stderr)),
                Err(e) => Err(format!("cannot run {}: {e}", plugin.display())),
            };
            t.record(i, took, outcome);
        }
        t.done();
        let reach = t.check_reachability(&nss.names, br.gateway);
        ctx.detail("CNI DEL");
        let del_failures = cni_del_all(&plugin, &conf, &nss.names, &added);
        drop(nss);
        drop(br);
        let _ = std::fs::remove_dir_all(&data_dir);
        reach?;
        let mut r = t.result()?;
        if del_failures > 0 {
            r.notes.push(format!(
                "{del_failures} CNI DEL calls failed (namespaces deleted anyway)"
            ));
        }
        Ok(r)
    }
}

/// The CNI network configuration (spec 1.0.0): the `bridge` plugin on an existing bridge,
/// default route via the gateway, no masquerade, `host-local` IPAM with a private data dir.
fn cni_config(
    bridge: &str,
    subnet: Ipv4Net,
    gateway: std::net::Ipv4Addr,
    data_dir: &Path,
) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": bridge,
        "type": "bridge",
        "bridge": bridge,
        "isDefaultGateway": true,
        "ipMasq": false,
        "hairpinMode": false,
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": subnet.to_string(), "gateway": gateway.to_string() }]],
            "dataDir": data_dir,
        },
    })
    .to_string()
}

/// A CNI plugin invocation for namespace `ns`, with a clean environment.
fn cni_command(plugin: &Path, command: &str, ns: &str) -> Command {
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", ns)
        .env("CNI_NETNS", format!("/run/netns/{ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH);
    cmd
}

/// The host-side veth of a CNI ADD result (the interface without a sandbox).
fn cni_host_veth(stdout: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(stdout).ok()?;
    v["interfaces"]
        .as_array()?
        .iter()
        .filter(|i| i.get("sandbox").is_none())
        .filter_map(|i| i["name"].as_str())
        .find(|name| name.starts_with("veth"))
        .map(str::to_owned)
}

/// A CNI error: `msg` (and `details`) of the error JSON, else stderr.
fn cni_error(stdout: &[u8], stderr: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(stdout) {
        Ok(v) if v["msg"].is_string() => {
            let mut s = v["msg"].as_str().unwrap_or_default().to_owned();
            if let Some(d) = v["details"].as_str().filter(|d| !d.is_empty()) {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        _ => proc::first_line(stderr),
    }
}

/// `CNI_COMMAND=DEL` for every added endpoint (4 at a time, each bounded); returns how
/// many failed.
fn cni_del_all(plugin: &Path, conf: &str, names: &[String], added: &[usize]) -> usize {
    let chunks: Vec<&[usize]> = added.chunks(added.len().div_ceil(4).max(1)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter(|&&i| {
                            let mut cmd = cni_command(plugin, "DEL", &names[i]);
                            !matches!(
                                proc::run_bounded(&mut cmd, Some(conf.as_bytes()), Duration::from_secs(30)),
                                Ok(out) if out.status.success()
                            )
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    })
}

impl Scenario for SetupScenario {
    fn name(&self) -> &'static str {
        "setup"
    }

    fn title(&self) -> String {
        "Control-plane latency of adding one container endpoint".into()
    }

    fn method(&self) -> String {
        format!(
            "Each run adds N = {n} container endpoints one after another, each into its own \
             pre-created network namespace (veth pair, move into the namespace, address, \
             default route, gateway neighbor), and times every add. Reported per run: median, \
             p99 and max latency, and the wall time for all N; then the median over the rounds. \
             After each run the gateway is pinged from {PING_CHECKS} of the new endpoints \
             (first, middle, last); a run where that fails, or where more than 1 % of the adds \
             fail, is FAILED. Ratios are against netpath (> 1× means slower than netpath). \
             Targets for netpath: median < {TARGET_MEDIAN_MS} ms, N = 1000 in < \
             {TARGET_TOTAL_1000_S} s.",
            n = self.n
        )
    }

    fn variants(&self) -> Vec<Variant> {
        vec![
            Variant {
                key: "netpath",
                label: "netpath",
                how: "`netpath daemon --no-default-network` with private --state-dir/--socket/\
                      --bpffs and one bridge network on a /16; each endpoint is one \
                      `Client::add_endpoint` call (`POST /v1/endpoints`), timed in-process from \
                      the call to the answer — the latency an engine sees. It also registers \
                      the endpoint in the datapath's maps and attaches the tc program."
                    .into(),
            },
            Variant {
                key: "ip",
                label: "ip commands",
                how: "netsetgo style, on a pre-created bridge with the gateway address: seven \
                      `ip` processes per endpoint — `ip link add H type veth peer name C`, \
                      `ip link set H master BR up`, `ip link set C netns NS name eth0`, \
                      `ip -n NS addr add`, `ip -n NS link set eth0 up`, \
                      `ip -n NS route add default via GW`, \
                      `ip -n NS neigh replace GW lladdr MAC dev eth0 nud permanent` — the whole \
                      sequence timed."
                    .into(),
            },
            Variant {
                key: "cni",
                label: "CNI bridge",
                how: format!(
                    "the CNI `bridge` plugin of Debian's containernetworking-plugins \
                     ({CNI_PATH}/bridge, which execs `host-local` IPAM) on a pre-created bridge \
                     with the gateway address: `isDefaultGateway: true`, `ipMasq: false`, spec \
                     1.0.0; one `CNI_COMMAND=ADD` exec per endpoint with the config on stdin, \
                     timed from spawn to exit (`DEL` afterwards for cleanup, not timed). It adds \
                     no permanent gateway neighbor."
                ),
            },
        ]
    }

    fn reference(&self) -> &'static str {
        "netpath"
    }

    fn metrics(&self) -> Vec<Metric> {
        let lower = |key: &'static str, label: String, unit, target: Option<f64>| Metric {
            target: target.map(|limit| Target {
                variant: "netpath",
                limit,
                relative_to: None,
            }),
            ..Metric::new(key, label, unit, Better::Lower)
        };
        let mut m = vec![
            lower(
                "median_ms",
                "median latency".into(),
                Unit::Millis,
                Some(TARGET_MEDIAN_MS),
            ),
            lower("p99_ms", "p99 latency".into(), Unit::Millis, None),
            lower("max_ms", "max latency".into(), Unit::Millis, None),
            lower(
                "total_s",
                format!("total for N = {}", self.n),
                Unit::Secs,
                (self.n == 1000).then_some(TARGET_TOTAL_1000_S),
            ),
        ];
        if self.n != 1000 {
            m.push(lower(
                "total_1000_s",
                format!("total for N = 1000 (extrapolated from N = {})", self.n),
                Unit::Secs,
                Some(TARGET_TOTAL_1000_S),
            ));
        }
        m
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        match variant {
            "netpath" => self.run_netpath(ctx),
            "ip" => self.run_ip(ctx),
            "cni" => self.run_cni(ctx),
            other => bail!("unknown variant {other}"),
        }
    }

    fn plots(&self, result: &ScenarioResult, dir: &Path) -> Result<Vec<(String, String)>> {
        plot::LatencyCdf {
            key: "latency_ms",
            file: "setup-latency-cdf.svg",
            title: format!(
                "Adding one container endpoint: latency CDF (N = {} per run, all rounds)",
                self.n
            ),
            x_desc: "latency per endpoint (ms, log scale)",
            y_desc: "fraction of endpoints",
            caption: "Latency distribution of one endpoint add, per variant (CDF; further left \
                      is faster)",
        }
        .draw(result, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_results_and_errors_are_read() {
        let ok = br#"{"cniVersion":"1.0.0","interfaces":[{"name":"nb1-br3","mac":"02:6e:62:00:00:01"},{"name":"veth1a2b3c4d","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"11:22:33:44:55:66","sandbox":"/run/netns/x"}],"ips":[]}"#;
        assert_eq!(cni_host_veth(ok).as_deref(), Some("veth1a2b3c4d"));
        let err = br#"{"code":999,"msg":"failed to set bridge addr","details":"could not add IP"}"#;
        assert_eq!(
            cni_error(err, b""),
            "failed to set bridge addr: could not add IP"
        );
        assert_eq!(cni_error(b"", b"\nboom\n"), "boom");
    }

    #[test]
    fn cni_config_is_spec_shaped() {
        let c = cni_config(
            "nb1-br0",
            "10.150.0.0/16".parse().unwrap(),
            "10.150.0.1".parse().unwrap(),
            Path::new("/tmp/x"),
        );
        let v: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(v["type"], "bridge");
        assert_eq!(v["ipam"]["ranges"][0][0]["subnet"], "10.150.0.0/16");
        assert_eq!(v["ipam"]["dataDir"], "/tmp/x");
    }
}
