//! `footprint`: what the netpath daemon costs at scale — its resident memory (VmRSS) and
//! the memory of its BPF maps, idle, at 1,000 endpoints, and with 10,000 published ports
//! on top. Absolute figures: there is nothing to compare them with.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netpath::model::{EndpointCreate, PortPublish};

use super::{
    Better, Ctx, Metric, Opts, RunResult, Scenario, Unit, Variant, proc,
    router::HostUplink,
    topo::{NetpathNetwork, Ns, NsSet},
};

/// Published ports on top of the endpoints (host ports from 30000 on the first one)
/// (`--quick` too: publishing them takes the daemon well under a second.)
const PORTS: usize = 10_000;
const PORTS_FIRST: u16 = 30000;
/// Bound on the bulk publish.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on adding the endpoints.
const ADD_BUDGET: Duration = Duration::from_secs(300);

pub struct FootprintScenario {
    endpoints: usize,
    ports: usize,
}

impl FootprintScenario {
    pub fn new(_opts: &Opts) -> Self {
        FootprintScenario {
            endpoints: 1000,
            ports: PORTS,
        }
    }
}

/// VmRSS of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// Map id → memlock bytes of the maps the daemon holds open (its fdinfo).
fn fd_maps(pid: u32) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for e in dir.filter_map(Result::ok) {
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(mem)) = (field("map_id:"), field("memlock:")) {
            out.insert(id, mem);
        }
    }
    out
}

pub(crate) fn bpftool_json(args: &[&str]) -> Result<serde_json::Value> {
    let out = proc::run_ok(
        Command::new("bpftool").args(args),
        None,
        Duration::from_secs(60),
    )?;
    serde_json::from_str(&out).context("cannot parse bpftool's JSON")
}

/// Bytes of BPF map memory (`memlock`) of the daemon: the maps it holds open, the maps
/// pinned under its bpffs directory, and the maps its pinned programs use; each counted
/// once. Returns (bytes, number of maps).
fn bpf_map_bytes(pid: u32, bpffs: &Path) -> Result<(u64, usize)> {
    let mut maps = fd_maps(pid);
    let under = |v: &serde_json::Value| {
        v["pinned"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .any(|p| Path::new(p).starts_with(bpffs))
    };
    let all = bpftool_json(&["-j", "-f", "map", "show"])?;
    let all = all.as_array().cloned().unwrap_or_default();
    let mut wanted: Vec<u64> = all
        .iter()
        .filter(|m| under(m))
        .filter_map(|m| m["id"].as_u64())
        .collect();
    let progs = bpftool_json(&["-j", "-f", "prog", "show"])?;
    for p in progs.as_array().into_iter().flatten().filter(|p| under(p)) {
        wanted.extend(
            p["map_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.as_u64()),
        );
    }
    for m in &all {
        if let (Some(id), Some(mem)) = (m["id"].as_u64(), m["bytes_memlock"].as_u64())
            && wanted.contains(&id)
        {
            maps.insert(id, mem);
        }
    }
    if maps.is_empty() {
        bail!(
            "found no BPF map of the daemon (pid {pid}, {})",
            bpffs.display()
        );
    }
    Ok((maps.values().sum(), maps.len()))
}

impl FootprintScenario {
    fn sample(&self, ctx: &mut Ctx, r: &mut RunResult, at: &str) -> Result<()> {
        let d = ctx.daemon()?;
        d.check_alive()?;
        let pid = d.pid().context("the daemon has no pid")?;
        let rss = rss_kib(pid)?;
        let (bytes, n) = bpf_map_bytes(pid, &ctx.bpffs)?;
        r.set(&format!("rss_{at}_mib"), rss / 1024.0);
        r.set(&format!("maps_{at}_mib"), bytes as f64 / (1024.0 * 1024.0));
        r.set(&format!("maps_{at}_count"), n as f64);
        Ok(())
    }

    fn run_netpath(&self, ctx: &mut Ctx) -> Result<RunResult> {
        let mut r = RunResult::default();
        // A fresh daemon: the figures must not depend on what earlier scenarios did.
        ctx.detail("restarting the daemon");
        let problems = ctx.stop_daemon();
        if !problems.is_empty() {
            r.notes.push(format!(
                "stopping the shared daemon first: {}",
                problems.join("; ")
            ));
        }
        ctx.client()?;
        self.sample(ctx, &mut r, "idle")?;

        ctx.detail("building the topology");
        let outside = Ns::create(ctx, "x")?;
        let uplink = HostUplink::create(ctx, &outside, ctx.subnets.in_netns_24(36))?;
        let subnet = ctx.subnets.footprint_netpath;
        let network = NetpathNetwork::create_with_uplink(ctx, subnet, Some(&uplink.link.0))?;
        let nss = NsSet::create(ctx, "f", self.endpoints)?;
        let client = network.client().clone().with_timeout(PUBLISH_TIMEOUT);
        let start = Instant::now();
        let mut first = None;
        for i in 0..self.endpoints {
            ctx.check()?;
            if start.elapsed() > ADD_BUDGET {
                bail!(
                    "stopped after {} s with {i} of {} endpoints added",
                    ADD_BUDGET.as_secs(),
                    self.endpoints
                );
            }
            if i % 50 == 0 {
                ctx.detail(&format!("endpoint {i}/{}", self.endpoints));
            }
            let ep = ctx
                .block_on(client.add_endpoint(&EndpointCreate {
                    network: network.name.clone(),
                    netns: Some(nss.path(i)),
                    pid: None,
                    ip: None,
                    ip6: None,
                    ifname: None,
                    mac: None,
                    container_id: None,
                    peer: None,
                }))
                .map_err(|e| anyhow::anyhow!("netpath: add endpoint {i}: {e}"))?;
            first.get_or_insert(ep.id);
        }
        self.sample(ctx, &mut r, "endpoints")?;

        let ports = self.ports;
        ctx.detail(&format!("publishing {ports} ports"));
        let last = PORTS_FIRST + ports as u16 - 1;
        let spec = format!("{PORTS_FIRST}-{last}:{PORTS_FIRST}-{last}");
        let id = first.context("no endpoint")?;
        let t = Instant::now();
        let leases = ctx
            .block_on(client.publish_ports(&PortPublish {
                endpoint: id.clone(),
                spec: Some(spec.clone()),
                specs: Vec::new(),
            }))
            .map_err(|e| anyhow::anyhow!("netpath port publish {id} -p {spec}: {e}"))?;
        if leases.len() != ports {
            bail!("publishing {ports} ports gave {} leases", leases.len());
        }
        r.notes.push(format!(
            "publishing {ports} ports in one call took {:.2} s",
            t.elapsed().as_secs_f64()
        ));
        self.sample(ctx, &mut r, "ports")?;
        let per_ep = (r.values["rss_endpoints_mib"] - r.values["rss_idle_mib"]) * 1024.0
            / self.endpoints as f64;
        r.set("rss_per_endpoint_kib", per_ep);
        // Last: its answers grow the daemon's heap, which the samples above must not see.
        super::observe::measure(ctx, &mut r, subnet)?;

        ctx.detail("removing the network");
        network.remove()?;
        ctx.detail("deleting the namespaces");
        drop(nss);
        drop((outside, uplink));
        Ok(r)
    }
}

impl Scenario for FootprintScenario {
    fn name(&self) -> &'static str {
        "footprint"
    }

    fn title(&self) -> String {
        format!(
            "Daemon footprint at {} endpoints and {} published ports",
            self.endpoints, self.ports
        )
    }

    fn method(&self) -> String {
        format!(
            "Each run stops the bench's daemon (and resets what it made) and starts a fresh \
             one, then samples three times: idle (no network), after adding {n} container \
             endpoints one by one (API) to one bridge network with an uplink, and after \
             publishing {p} TCP ports on one of them (`-p \
             {PORTS_FIRST}-{last}:{PORTS_FIRST}-{last}`, one call){quick}. Then observing is \
             timed (`observe`): the median of 5 `GET /metrics` (and the RSS growth over \
             them), then with \
             100,000 masqueraded connections written into the pinned NAT tables the median \
             of 5 scrapes and of 5 `GET /v1/flows` (each answer read whole), and the RSS \
             growth over them. Resident memory: `VmRSS` \
             of /proc/PID/status. BPF map memory: the `memlock` of every map the daemon \
             holds open (/proc/PID/fdinfo), pinned under its bpffs directory, or used by its \
             pinned programs (`bpftool -j -f map|prog show`), each map counted once; most \
             maps are preallocated hash maps, so this is fixed by their `max_entries`, not by \
             what is in them. The figures are absolute: no other variant does the same job, \
             so there is no reference and no ratio.",
            n = self.endpoints,
            p = self.ports,
            last = PORTS_FIRST + self.ports as u16 - 1,
            quick = "",
        )
    }

    fn variants(&self) -> Vec<Variant> {
        vec![Variant {
            key: "netpath",
            label: "netpath",
            how: "`netpath daemon --no-default-network` with private --state-dir/--socket/\
                  --bpffs (the bench's daemon, restarted at the start of each run)."
                .into(),
        }]
    }

    fn reference(&self) -> &'static str {
        "netpath"
    }

    fn metrics(&self) -> Vec<Metric> {
        let (n, p) = (self.endpoints, self.ports);
        let m = |key, label: String, unit| Metric::new(key, label, unit, Better::Lower);
        vec![
            m("rss_idle_mib", "daemon RSS, idle".into(), Unit::MiB),
            m(
                "rss_endpoints_mib",
                format!("daemon RSS, {n} endpoints"),
                Unit::MiB,
            ),
            m(
                "rss_ports_mib",
                format!("daemon RSS, {n} endpoints + {p} published ports"),
                Unit::MiB,
            ),
            m(
                "rss_per_endpoint_kib",
                "daemon RSS per endpoint ((at N − idle) / N)".into(),
                Unit::KiB,
            ),
            m(
                "scrape_endpoints_ms",
                format!("GET /metrics, {n} endpoints (target < 100 ms)"),
                Unit::Millis,
            ),
            m(
                "scrape_nat_ms",
                format!(
                    "GET /metrics, {n} endpoints + {} connections (target < 100 ms)",
                    super::observe::NAT_ENTRIES
                ),
                Unit::Millis,
            ),
            m(
                "flows_nat_ms",
                format!(
                    "GET /v1/flows, {} connections (target < 1 s)",
                    super::observe::NAT_ENTRIES
                ),
                Unit::Millis,
            ),
            m(
                "rss_scrape_growth_mib",
                format!("daemon RSS growth over 5 scrapes at {n} endpoints (target < 8 MiB)"),
                Unit::MiB,
            ),
            m(
                "rss_flows_growth_mib",
                format!(
                    "daemon RSS growth over the scrapes and listings of {} connections",
                    super::observe::NAT_ENTRIES
                ),
                Unit::MiB,
            ),
            m("maps_idle_mib", "BPF map memory, idle".into(), Unit::MiB),
            m(
                "maps_endpoints_mib",
                format!("BPF map memory, {n} endpoints"),
                Unit::MiB,
            ),
            m(
                "maps_ports_mib",
                format!("BPF map memory, {n} endpoints + {p} published ports"),
                Unit::MiB,
            ),
        ]
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        match variant {
            "netpath" => self.run_netpath(ctx),
            other => bail!("unknown variant {other}"),
        }
    }
}
