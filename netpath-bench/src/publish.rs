//! `publish`: new TCP connections per second through a published port with 0, 1,000 and
//! 10,000 other published ports, netpath against iptables DNAT (Docker's recipe) with the
//! same counts; published-port TCP throughput against a direct veth pair; and the time to
//! publish one more port with 10,000 present.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netpath::model::PortPublish;

use super::{
    Better, Ctx, Metric, Opts, RunResult, Scenario, Unit, Variant,
    connrate::{self, ConnStats},
    endpoint::iperf_via,
    plot,
    report::ScenarioResult,
    stats,
    topo::{self, HostUplink, NetpathNetwork, Ns, Router},
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
    /// Publishes other ports `from..to` (counted from [`OTHERS_FIRST`]).
    fn add_others(&mut self, ctx: &mut Ctx, from: usize, to: usize) -> Result<()>;
    /// Publishes one more port (host port `port`), returns how long it took.
    fn publish_one(&mut self, ctx: &mut Ctx, port: u16) -> Result<Duration>;
}

struct Run<'a> {
    client: &'a Ns,
    server: &'a Ns,
    server_ip: Ipv4Addr,
    /// The measured service as the client addresses it.
    conn_target: SocketAddrV4,
    iperf_target: SocketAddrV4,
}

impl PublishScenario {
    /// The most other published ports measured.
    fn top(&self) -> usize {
        self.levels.last().copied().unwrap_or(0)
    }

    fn conns(&self, ctx: &Ctx, run: &Run, total: usize, what: &str) -> Result<ConnStats> {
        ctx.check()?;
        ctx.detail(&format!("{total} connections, {what}"));
        let s = connrate::run_clients(
            &run.client.path(),
            run.conn_target,
            total,
            WORKERS,
            self.conn_budget,
        )?;
        s.check(what)?;
        Ok(s)
    }

    /// The measurement common to the variants; `p` is `None` for the direct veth pair
    /// (no published ports: level 0 only, no publish time).
    fn measure(
        &self,
        ctx: &mut Ctx,
        run: &Run,
        mut p: Option<&mut dyn Published>,
    ) -> Result<RunResult> {
        let mut r = RunResult::default();
        let _server = connrate::Server::start(
            &run.server.path(),
            SocketAddrV4::new(run.server_ip, GUEST_PORT),
            SERVER_THREADS,
        )?;
        self.conns(ctx, run, WARMUP, "warm-up (does traffic flow?)")?;
        let mut at = Vec::new();
        let mut have = 0;
        for &level in self.levels {
            if let Some(p) = p.as_deref_mut() {
                if level > have {
                    ctx.detail(&format!("publishing {} other ports", level - have));
                    let t = Instant::now();
                    p.add_others(ctx, have, level)?;
                    r.notes.push(format!(
                        "publishing other ports {have}…{level} at once took {:.2} s",
                        t.elapsed().as_secs_f64()
                    ));
                    have = level;
                }
            } else if level > 0 {
                break;
            }
            let what = format!("{level} other published ports");
            let s = self.conns(ctx, run, self.conns, &what)?;
            r.set(level_key(level), s.rate());
            r.notes.extend(s.note(&what));
            at.push(s.rate());
            if level == 0 {
                ctx.check()?;
                ctx.detail(&format!("iperf3, 1 stream, {} s", self.secs));
                let (gbps, retr) = iperf_via(
                    ctx,
                    run.server,
                    run.server_ip,
                    IPERF_GUEST,
                    run.client,
                    run.iperf_target,
                    1,
                    self.secs,
                )?;
                r.set("tcp1_gbps", gbps);
                r.set("tcp1_retransmits", retr);
            }
        }
        if at.len() == self.levels.len() && at.len() > 1 {
            r.set("flat_ratio", at[at.len() - 1] / at[0]);
        }
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
        Ok(r)
    }

    fn run_netpath(&self, ctx: &mut Ctx) -> Result<RunResult> {
        ctx.detail("building the topology");
        let client = Ns::create(ctx, "c")?;
        let uplink = HostUplink::create(ctx, &client, ctx.subnets.in_netns_24(30))?;
        let subnet = ctx.subnets.publish_netpath;
        let network = NetpathNetwork::create_with_uplink(ctx, subnet, Some(&uplink.link.0))?;
        let (server, others) = (Ns::create(ctx, "e")?, Ns::create(ctx, "o")?);
        let (ep, ep_ip) = topo::netpath_endpoint(ctx, &network, &server)?;
        let (others_ep, _) = topo::netpath_endpoint(ctx, &network, &others)?;
        let client_api = network.client().clone().with_timeout(BULK_TIMEOUT);
        let publish = |ctx: &Ctx, id: &str, spec: String| -> Result<Duration> {
            let req = PortPublish {
                endpoint: id.to_owned(),
                spec: Some(spec.clone()),
                specs: Vec::new(),
            };
            let t = Instant::now();
            ctx.block_on(client_api.publish_ports(&req))
                .map_err(|e| anyhow::anyhow!("netpath port publish {id} -p {spec}: {e}"))?;
            Ok(t.elapsed())
        };
        publish(ctx, &ep, format!("{HOST_PORT}:{GUEST_PORT}"))?;
        publish(ctx, &ep, format!("{IPERF_HOST}:{IPERF_GUEST}"))?;
        struct P<'a, F: Fn(&Ctx, &str, String) -> Result<Duration>> {
            publish: &'a F,
            others: String,
        }
        impl<F: Fn(&Ctx, &str, String) -> Result<Duration>> Published for P<'_, F> {
            fn add_others(&mut self, ctx: &mut Ctx, from: usize, to: usize) -> Result<()> {
                let (a, b) = (OTHERS_FIRST + from as u16, OTHERS_FIRST + to as u16 - 1);
                (self.publish)(ctx, &self.others, format!("{a}-{b}:{a}-{b}")).map(drop)
            }
            fn publish_one(&mut self, ctx: &mut Ctx, port: u16) -> Result<Duration> {
                (self.publish)(ctx, &self.others, format!("{port}:{port}"))
            }
        }
        let mut p = P {
            publish: &publish,
            others: others_ep,
        };
        let run = Run {
            client: &client,
            server: &server,
            server_ip: ep_ip,
            conn_target: SocketAddrV4::new(uplink.host_ip, HOST_PORT),
            iperf_target: SocketAddrV4::new(uplink.host_ip, IPERF_HOST),
        };
        let r = self.measure(ctx, &run, Some(&mut p));
        ctx.detail("removing the topology");
        drop(network);
        drop((server, others, client, uplink));
        r
    }

    fn run_iptables(&self, ctx: &mut Ctx) -> Result<RunResult> {
        ctx.detail("building the topology");
        let client = Ns::create(ctx, "c")?;
        let mut router = Router::create(
            ctx,
            &client,
            ctx.subnets.in_netns_24(31),
            ctx.subnets.in_netns_24(32),
        )?;
        let server = Ns::create(ctx, "e")?;
        let ep_ip = router.add_endpoint(ctx, &server)?;
        // Docker's shape: PREROUTING to LOCAL addresses jumps to a chain of DNAT rules.
        router.iptables(&["-t", "nat", "-N", CHAIN])?;
        router.iptables(&[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            CHAIN,
        ])?;
        let rule = |port: u16, to: SocketAddrV4| {
            format!("{CHAIN} -p tcp -m tcp --dport {port} -j DNAT --to-destination {to}")
        };
        let other = Ns::create(ctx, "o")?;
        let other_ip = router.add_endpoint(ctx, &other)?;
        for (h, g) in [(HOST_PORT, GUEST_PORT), (IPERF_HOST, IPERF_GUEST)] {
            let r = rule(h, SocketAddrV4::new(ep_ip, g));
            let args: Vec<&str> = ["-t", "nat", "-A"]
                .into_iter()
                .chain(r.split_whitespace())
                .collect();
            router.iptables(&args)?;
        }
        struct P<'a> {
            router: &'a Router,
            other_ip: Ipv4Addr,
            file: std::path::PathBuf,
        }
        impl P<'_> {
            fn rule(&self, port: u16) -> String {
                format!(
                    "{CHAIN} -p tcp -m tcp --dport {port} -j DNAT --to-destination {}:{port}",
                    self.other_ip
                )
            }
        }
        impl Published for P<'_> {
            fn add_others(&mut self, _ctx: &mut Ctx, from: usize, to: usize) -> Result<()> {
                // Half of the new rules go before the measured ones, half after: the
                // measured port sits in the middle, the average position of a port.
                let mut text = String::from("*nat\n");
                for i in from..to {
                    let port = OTHERS_FIRST + i as u16;
                    let op = if (i - from) < (to - from) / 2 {
                        "-I"
                    } else {
                        "-A"
                    };
                    text.push_str(&format!("{op} {}\n", self.rule(port)));
                }
                text.push_str("COMMIT\n");
                self.router.iptables_restore(&self.file, &text)
            }
            fn publish_one(&mut self, _ctx: &mut Ctx, port: u16) -> Result<Duration> {
                let r = self.rule(port);
                let args: Vec<&str> = ["-t", "nat", "-A"]
                    .into_iter()
                    .chain(r.split_whitespace())
                    .collect();
                let mut cmd = self.router.ns.command_direct("iptables", &args)?;
                let t = Instant::now();
                let out = cmd.output().context("cannot run iptables")?;
                let took = t.elapsed();
                if !out.status.success() {
                    bail!(
                        "iptables -t nat -A {r}: {}",
                        super::proc::first_line(&out.stderr)
                    );
                }
                Ok(took)
            }
        }
        let mut p = P {
            router: &router,
            other_ip,
            file: ctx.tmp.join(format!("{}-rules", router.ns.name())),
        };
        let run = Run {
            client: &client,
            server: &server,
            server_ip: ep_ip,
            conn_target: SocketAddrV4::new(router.uplink_ip, HOST_PORT),
            iperf_target: SocketAddrV4::new(router.uplink_ip, IPERF_HOST),
        };
        let r = self.measure(ctx, &run, Some(&mut p));
        ctx.detail("removing the topology");
        drop((server, other, router, client));
        r
    }

    fn run_direct(&self, ctx: &mut Ctx) -> Result<RunResult> {
        ctx.detail("building the topology");
        let pair = topo::direct_veth(ctx)?;
        let run = Run {
            client: &pair.a,
            server: &pair.b,
            server_ip: pair.b_ip,
            conn_target: SocketAddrV4::new(pair.b_ip, GUEST_PORT),
            iperf_target: SocketAddrV4::new(pair.b_ip, IPERF_GUEST),
        };
        let r = self.measure(ctx, &run, None);
        ctx.detail("removing the topology");
        drop(pair);
        r
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
             iptables, throughput against the direct veth pair.",
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
        vec![
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
                label: "iptables DNAT",
                how: "Docker's recipe inside a router namespace the bench creates (the \
                      host's tables are never touched): uplink veth to the client namespace, a \
                      Linux bridge with the gateway, the endpoints' veths on it, \
                      `ip_forward=1`; `nat PREROUTING -m addrtype --dst-type LOCAL -j PUBLISH` \
                      and one `-A PUBLISH -p tcp --dport P -j DNAT --to-destination EP:PORT` \
                      per published port (iptables-nft); the measured port's rule is in the \
                      middle of the others (half inserted before it, half appended after). \
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
        ]
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
        m
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        match variant {
            "netpath" => self.run_netpath(ctx),
            "iptables" => self.run_iptables(ctx),
            "direct" => self.run_direct(ctx),
            other => bail!("unknown variant {other}"),
        }
    }

    fn plots(&self, result: &ScenarioResult, dir: &Path) -> Result<Vec<(String, String)>> {
        let series: Vec<(String, Vec<(f64, f64)>)> = ["netpath", "iptables"]
            .iter()
            .filter_map(|k| result.variant(k))
            .map(|v| {
                let pts = self
                    .levels
                    .iter()
                    .filter_map(|&n| Some((n as f64, *v.median.get(level_key(n))?)))
                    .collect::<Vec<_>>();
                (v.label.clone(), pts)
            })
            .filter(|(_, pts)| !pts.is_empty())
            .collect();
        if series.is_empty() {
            return Ok(Vec::new());
        }
        let file = "publish-connrate.svg".to_owned();
        plot::lines(
            &dir.join(&file),
            "New connections per second through a published port (medians)",
            "other published ports",
            "new connections per second",
            &series,
        )?;
        Ok(vec![(
            file,
            "New connections per second vs the number of other published ports (higher is \
             better; flat is the goal)"
                .into(),
        )])
    }
}
