//! `publish`: new TCP connections per second through a published port with 0, 1,000 and
//! 10,000 other published ports, netpath against iptables DNAT (Docker's recipe) with the
//! same counts; published-port TCP throughput against a direct veth pair; and the time to
//! publish one more port with 10,000 present.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

mod variants;

use super::{
    Better, Build, Ctx, Family, Metric, Opts, RunResult, Scenario, Unit, Variant,
    connrate::{self, ConnStats},
    endpoint::iperf_via,
    plot,
    report::ScenarioResult,
    stats,
    topo::Ns,
};

/// The measured service: guest port 80 published as host port 18080; iperf3's 5201 as
/// 15201.
const GUEST_PORT: u16 = 80;
const HOST_PORT: u16 = 18080;
const IPERF_GUEST: u16 = 5201;
const IPERF_HOST: u16 = 15201;
/// The other published ports: host (and guest) ports from here on, on another endpoint
/// (outside netpath's ephemeral range 20000–29999).
const OTHERS_FIRST: u16 = 30000;
/// Levels of other published ports, measured in this order within one run.
const LEVELS: [usize; 3] = [0, 1000, 10_000];
/// Bound on one bulk publish (netpath checks host sockets port by port: ~8 ms each).
const BULK_TIMEOUT: Duration = Duration::from_secs(600);
/// Single ports published one at a time (with 10,000 others present) to time a publish.
const EXTRA_FIRST: u16 = 41000;
/// iptables chain of the published ports (Docker's DOCKER chain).
const CHAIN: &str = "PUBLISH";
/// Concurrent client workers and server threads.
const WORKERS: usize = 4;
const SERVER_THREADS: usize = 2;
/// Connections made before the first measurement (and to check that traffic flows).
const WARMUP: usize = 200;

/// Targets (issue): netpath at 10k ≥ 0.95× itself at 0 and ≥ 2.5× iptables at 10k;
/// throughput ≥ 1.00× direct veth; publish < 0.5 ms.
const TARGET_FLAT: f64 = 0.95;
const TARGET_VS_IPTABLES: f64 = 2.5;
const TARGET_VS_DIRECT: f64 = 1.0;
const TARGET_PUBLISH_MS: f64 = 0.5;

pub struct PublishScenario {
    /// Connections per level.
    conns: usize,
    /// Bound on one level's connections.
    conn_budget: Duration,
    secs: u64,
    /// Single-port publishes timed per run.
    publishes: usize,
    /// The levels of other published ports measured.
    levels: &'static [usize],
    /// A `--baseline-bin` was given: the earlier build is measured too.
    has_baseline: bool,
}

impl PublishScenario {
    pub fn new(opts: &Opts) -> Self {
        if opts.quick {
            PublishScenario {
                conns: 3000,
                conn_budget: Duration::from_secs(8),
                secs: 3,
                publishes: 10,
                levels: &LEVELS,
                has_baseline: opts.baseline_bin.is_some(),
            }
        } else {
            PublishScenario {
                // ~3 s per level here: long enough that one level is not one scheduling
                // hiccup of this noisy VM.
                conns: 30_000,
                conn_budget: Duration::from_secs(60),
                secs: 5,
                publishes: 30,
                levels: &LEVELS,
                has_baseline: opts.baseline_bin.is_some(),
            }
        }
    }
}

/// `10000` as `10,000`.
fn thousands(n: usize) -> String {
    if n >= 1000 {
        format!("{},{:03}", n / 1000, n % 1000)
    } else {
        n.to_string()
    }
}

fn level_key(n: usize) -> &'static str {
    match n {
        0 => "conn0_per_s",
        1000 => "conn1k_per_s",
        _ => "conn10k_per_s",
    }
}

/// What a variant must provide for one run: grow the other ports to a level, publish
/// one more port (timed), and where the measured service is.
trait Published {
    /// Publishes other ports `from..to` (counted from [`OTHERS_FIRST`]) over `family`.
    fn add_others(&mut self, ctx: &mut Ctx, family: Family, from: usize, to: usize) -> Result<()>;
    /// Publishes one more port (host port `port`), returns how long it took.
    fn publish_one(&mut self, ctx: &mut Ctx, port: u16) -> Result<Duration>;
}

struct Run<'a> {
    client: &'a Ns,
    server: &'a Ns,
    /// Per family measured: where the server listens and how the client reaches it.
    families: Vec<FamilyRun>,
}

/// One family's addresses of a [`Run`].
struct FamilyRun {
    family: Family,
    server_ip: IpAddr,
    /// The measured service as the client addresses it.
    conn_target: SocketAddr,
    iperf_target: SocketAddr,
}

impl FamilyRun {
    /// The server on `server_ip`, reached at `to` (ports [`HOST_PORT`] and
    /// [`IPERF_HOST`] when `published`, the guest ports otherwise).
    fn new(server_ip: IpAddr, to: IpAddr, published: bool) -> FamilyRun {
        let (conn, iperf) = if published {
            (HOST_PORT, IPERF_HOST)
        } else {
            (GUEST_PORT, IPERF_GUEST)
        };
        FamilyRun {
            family: if server_ip.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            },
            server_ip,
            conn_target: SocketAddr::new(to, conn),
            iperf_target: SocketAddr::new(to, iperf),
        }
    }
}

impl PublishScenario {
    /// The most other published ports measured.
    fn top(&self) -> usize {
        self.levels.last().copied().unwrap_or(0)
    }

    fn conns(
        &self,
        ctx: &Ctx,
        run: &Run,
        f: &FamilyRun,
        total: usize,
        what: &str,
    ) -> Result<ConnStats> {
        ctx.check()?;
        ctx.detail(&format!(
            "{}: {total} connections, {what}",
            f.family.label()
        ));
        let s = connrate::run_clients(
            &run.client.path(),
            f.conn_target,
            total,
            WORKERS,
            self.conn_budget,
        )?;
        s.check(what)?;
        Ok(s)
    }

    /// The measurement common to the variants, over each family of `run`; `p` is
    /// `None` for the direct veth pair (no published ports: level 0 only, no publish
    /// time).
    fn measure(
        &self,
        ctx: &mut Ctx,
        run: &Run,
        mut p: Option<&mut dyn Published>,
        r: &mut RunResult,
    ) -> Result<()> {
        let mut servers = Vec::new();
        for f in &run.families {
            if f.family == Family::V6 {
                run.client.wait_dad()?;
                run.server.wait_dad()?;
            }
            servers.push(connrate::Server::start(
                &run.server.path(),
                SocketAddr::new(f.server_ip, GUEST_PORT),
                SERVER_THREADS,
            )?);
            self.conns(ctx, run, f, WARMUP, "warm-up (does traffic flow?)")?;
        }
        let mut at: Vec<Vec<f64>> = vec![Vec::new(); run.families.len()];
        let mut have = 0;
        for &level in self.levels {
            if let Some(p) = p.as_deref_mut() {
                if level > have {
                    for f in &run.families {
                        let fam = f.family.label();
                        ctx.detail(&format!("{fam}: publishing {} other ports", level - have));
                        let t = Instant::now();
                        p.add_others(ctx, f.family, have, level)?;
                        r.notes.push(format!(
                            "{fam}: publishing other ports {have}…{level} at once took {:.2} s",
                            t.elapsed().as_secs_f64()
                        ));
                    }
                    have = level;
                }
            } else if level > 0 {
                break;
            }
            for (i, f) in run.families.iter().enumerate() {
                let key = |base: &str| f.family.key(base);
                let what = format!("{level} other published ports");
                let s = self.conns(ctx, run, f, self.conns, &what)?;
                r.set(&key(level_key(level)), s.rate());
                r.notes
                    .extend(s.note(&format!("{}, {what}", f.family.label())));
                at[i].push(s.rate());
                if level == 0 {
                    ctx.check()?;
                    ctx.detail(&format!(
                        "{}: iperf3, 1 stream, {} s",
                        f.family.label(),
                        self.secs
                    ));
                    let (gbps, retr) = iperf_via(
                        ctx,
                        run.server,
                        f.server_ip,
                        IPERF_GUEST,
                        run.client,
                        f.iperf_target,
                        1,
                        self.secs,
                    )?;
                    r.set(&key("tcp1_gbps"), gbps);
                    r.set(&key("tcp1_retransmits"), retr);
                }
            }
        }
        for (f, at) in run.families.iter().zip(&at) {
            if at.len() == self.levels.len() && at.len() > 1 {
                r.set(&f.family.key("flat_ratio"), at[at.len() - 1] / at[0]);
            }
        }
        drop(servers);
        if let Some(p) = p {
            let mut ms = Vec::new();
            for i in 0..self.publishes {
                ctx.check()?;
                ctx.detail(&format!(
                    "publishing one more port ({}/{})",
                    i + 1,
                    self.publishes
                ));
                let took = p.publish_one(ctx, EXTRA_FIRST + i as u16)?;
                ms.push(took.as_secs_f64() * 1e3);
            }
            r.set(
                "publish_ms",
                stats::median(&ms).context("no publish timed")?,
            );
            r.set("publish_max_ms", stats::max(&ms).unwrap_or_default());
            r.samples.insert("publish_ms".into(), ms);
        }
        Ok(())
    }
}

impl Scenario for PublishScenario {
    fn name(&self) -> &'static str {
        "publish"
    }

    fn title(&self) -> String {
        "Published ports: new connections per second, throughput, publish latency".into()
    }

    fn method(&self) -> String {
        format!(
            "A client namespace reaches a server namespace through a published port: host \
             port {HOST_PORT} → guest port {GUEST_PORT} on the uplink's address. New \
             connections per second: {WORKERS} client threads (in the client namespace) make \
             {n} connections per level, each connect, send {req} bytes, read {resp} bytes, \
             read the server's close, close ({SERVER_THREADS} server threads accept, read, \
             answer, close); rate = completed connections / wall time (bounded at {b} s). \
             Levels, in this order within one run: {levels} OTHER published ports (host \
             ports {OTHERS_FIRST}… on a second endpoint, added with one range publish / one \
             `iptables-restore --noflush` per level){quick}. After {WARMUP} warm-up \
             connections; a level with no completed connection or more than 1 % failed \
             connections is FAILED. Throughput: `iperf3 -t {s} -O 1`, 1 stream, client to \
             the published port {IPERF_HOST} → {IPERF_GUEST}, at 0 other ports. Publish \
             time: with {top} others present, {k} single ports published one after another, \
             median and max. \"at {top} ÷ at 0\" is each run's own ratio. Ratios are against \
             iptables, throughput against the direct veth pair. IPv6 (\"(IPv6)\" rows, same \
             run, dual-stack topologies): the same levels and throughput over IPv6 after \
             IPv4 at each level — netpath with `-p [::]:HOST:GUEST` (and `[::]:A-B:A-B` for \
             the others) to the uplink's IPv6 address, against ip6tables DNAT; netpath's \
             IPv6 rows are n/a with the daemon's reason while it refuses IPv6 published \
             ports. The IPv6 ÷ IPv4 table compares each variant's IPv6 ratio with its IPv4 \
             one; publish times are IPv4 only.",
            n = self.conns,
            req = connrate::REQUEST_LEN,
            resp = connrate::RESPONSE_LEN,
            b = self.conn_budget.as_secs(),
            s = self.secs,
            k = self.publishes,
            top = thousands(self.top()),
            levels = self
                .levels
                .iter()
                .map(|&n| thousands(n))
                .collect::<Vec<_>>()
                .join(", "),
            quick = "",
        )
    }

    fn variants(&self) -> Vec<Variant> {
        let mut variants = vec![
            Variant {
                key: "netpath",
                label: "netpath",
                how: "the client namespace is behind a veth whose host end (with an address) \
                      is the `--uplink` of a netpath bridge network of the bench's daemon (host \
                      namespace); the server is a container endpoint (API), its ports \
                      published with `Client::publish_ports` (`netpath port publish ID -p \
                      HOST:GUEST`, other ports as ranges `-p A-B:A-B` on a second endpoint), \
                      DNAT in BPF on the uplink. Publish time: the API call, timed client side."
                    .into(),
            },
            Variant {
                key: "iptables",
                label: "iptables / ip6tables DNAT",
                how: "Docker's recipe inside a router namespace the bench creates (the \
                      host's tables are never touched): uplink veth to the client namespace, a \
                      Linux bridge with the gateway, the endpoints' veths on it, \
                      `ip_forward=1`; `nat PREROUTING -m addrtype --dst-type LOCAL -j PUBLISH` \
                      and one `-A PUBLISH -p tcp --dport P -j DNAT --to-destination EP:PORT` \
                      per published port (iptables-nft); the measured port's rule is in the \
                      middle of the others (half inserted before it, half appended after). \
                      IPv6: the same chain and rules in ip6tables (`--to-destination \
                      [EP6]:PORT`), to the router's IPv6 uplink address. \
                      Publish time: one `iptables -t nat -A PUBLISH …` exec (entering the \
                      namespace between fork and exec, no `ip netns exec`)."
                    .into(),
            },
            Variant {
                key: "direct",
                label: "direct veth",
                how: "a veth pair straight from the client namespace into the server's, no \
                      NAT: the limit, and the reference for throughput (no published ports: \
                      level 0 only)."
                    .into(),
            },
        ];
        if self.has_baseline {
            variants.push(Variant::earlier_build());
        }
        variants
    }

    fn reference(&self) -> &'static str {
        "iptables"
    }

    fn metrics(&self) -> Vec<Metric> {
        let top = self.top();
        let mut m: Vec<Metric> = self
            .levels
            .iter()
            .map(|&n| {
                let m = Metric::new(
                    level_key(n),
                    format!("new connections/s, {} other published ports", thousands(n)),
                    Unit::ConnPerSec,
                    Better::Higher,
                );
                if n == top {
                    m.target_vs("netpath", TARGET_VS_IPTABLES, "iptables")
                } else {
                    m
                }
            })
            .collect();
        m.extend([
            Metric::new(
                "flat_ratio",
                format!(
                    "new connections/s at {} ÷ at 0 other ports (same run)",
                    thousands(top)
                ),
                Unit::Ratio,
                Better::Higher,
            )
            .target("netpath", TARGET_FLAT),
            Metric::new(
                "tcp1_gbps",
                "TCP throughput via the published port, 1 stream",
                Unit::Gbps,
                Better::Higher,
            )
            .against("direct")
            .target_vs("netpath", TARGET_VS_DIRECT, "direct"),
            Metric::new(
                "publish_ms",
                format!(
                    "publish one more port with {} present (median)",
                    thousands(top)
                ),
                Unit::Millis,
                Better::Lower,
            )
            .target("netpath", TARGET_PUBLISH_MS),
            Metric::new(
                "publish_max_ms",
                format!(
                    "publish one more port with {} present (max)",
                    thousands(top)
                ),
                Unit::Millis,
                Better::Lower,
            ),
        ]);
        Metric::with_v6(m, |m| !m.key.starts_with("publish"))
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        match variant {
            "netpath" => self.run_netpath(ctx),
            Variant::EARLIER => ctx.with_build(Build::Baseline, |ctx| self.run_netpath(ctx)),
            "iptables" => self.run_iptables(ctx),
            "direct" => self.run_direct(ctx),
            other => bail!("unknown variant {other}"),
        }
    }

    fn plots(&self, result: &ScenarioResult, dir: &Path) -> Result<Vec<(String, String)>> {
        let series: Vec<(String, Vec<(f64, f64)>)> = ["netpath", Variant::EARLIER, "iptables"]
            .iter()
            .filter_map(|k| result.variant(k))
            .flat_map(|v| Family::BOTH.map(|f| (v, f)))
            .map(|(v, f)| {
                let pts = self
                    .levels
                    .iter()
                    .filter_map(|&n| Some((n as f64, *v.median.get(&f.key(level_key(n)))?)))
                    .collect::<Vec<_>>();
                (format!("{}, {}", v.label, f.label()), pts)
            })
            .filter(|(_, pts)| !pts.is_empty())
            .collect();
        let family = plot::family_ratios(result, dir)?;
        if series.is_empty() {
            return Ok(family.into_iter().collect());
        }
        let file = "publish-connrate.svg".to_owned();
        plot::lines(
            &dir.join(&file),
            "New connections per second through a published port (medians)",
            "other published ports",
            "new connections per second",
            &series,
        )?;
        let mut plots = vec![(
            file,
            "New connections per second vs the number of other published ports, per family \
             (higher is better; flat is the goal)"
                .into(),
        )];
        plots.extend(family);
        Ok(plots)
    }
}
