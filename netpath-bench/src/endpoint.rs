//! `endpoint`: endpoint ↔ endpoint TCP throughput (iperf3, 1 and 4 streams) and TCP
//! ping-pong latency (sockperf) between two network namespaces over a direct veth pair
//! (the limit and the reference), a Linux bridge, the floor of any tc fast path (a
//! 4-instruction redirect program, [`floor`]), and netpath.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    Better, Build, Ctx, Family, Metric, Opts, RunResult, Scenario, Unit, Variant, floor, pingpong,
    plot,
    proc::{self, Bg},
    progcost,
    report::ScenarioResult,
    topo::{self, Ns, Pair},
};

const IPERF_PORT: u16 = 5201;
const SOCKPERF_PORT: u16 = 11111;
const PINGPONG_PORT: u16 = 11112;
/// How long a server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

pub struct EndpointScenario {
    secs: u64,
    /// A `--baseline-bin` was given: the earlier build is measured too.
    has_baseline: bool,
}

impl EndpointScenario {
    pub fn new(opts: &Opts) -> Self {
        EndpointScenario {
            secs: if opts.quick { 3 } else { 8 },
            has_baseline: opts.baseline_bin.is_some(),
        }
    }

    fn measure(&self, ctx: &mut Ctx, pair: &Pair) -> Result<RunResult> {
        let mut r = RunResult::default();
        for family in Family::BOTH {
            let Some(b) = pair.b_addr(family) else {
                for m in self.metrics().iter().filter(|m| is_of(m, family)) {
                    r.unavailable(&m.key, format!("no {} address", family.label()));
                }
                continue;
            };
            self.measure_family(ctx, pair, family, b, &mut r)?;
        }
        Ok(r)
    }

    /// Throughput and ping-pong over `family`, `b` being the server's address; the
    /// figures go into `r` under the family's keys. sockperf (IPv4 only) runs for
    /// IPv4 beside the bench's own ping-pong, which runs for both.
    fn measure_family(
        &self,
        ctx: &mut Ctx,
        pair: &Pair,
        family: Family,
        b: IpAddr,
        r: &mut RunResult,
    ) -> Result<()> {
        let fam = family.label();
        let key = |base: &str| family.key(base);
        if family == Family::V6 {
            pair.a.wait_dad()?;
            pair.b.wait_dad()?;
        }
        // Traffic must flow at all before it is measured.
        topo::ping(pair.a.name(), b)
            .with_context(|| format!("the two endpoints cannot reach each other over {fam}"))?;
        for (base, streams) in [("tcp1_gbps", 1), ("tcp4_gbps", 4)] {
            ctx.check()?;
            ctx.detail(&format!(
                "{fam}: iperf3, {streams} stream(s), {} s",
                self.secs
            ));
            let (gbps, retransmits) = iperf_via(
                ctx,
                &pair.b,
                b,
                IPERF_PORT,
                &pair.a,
                SocketAddr::new(b, IPERF_PORT),
                streams,
                self.secs,
            )?;
            r.set(&key(base), gbps);
            r.set(&key(&format!("{base}_retransmits")), retransmits);
        }
        // The programs on this topology's path, looked up now: nothing else's count.
        let progs = progcost::attached(&pair.prog_devs)?;
        if progs.is_empty() {
            let none = "no tc program on this path";
            if family == Family::V4 {
                r.unavailable("rr_prog_ns", none);
            }
            r.unavailable(&key("pp_prog_ns"), none);
        }
        let awake = cpus_awake();
        r.set("rr_cpus_awake", if awake.is_some() { 1.0 } else { 0.0 });
        if let IpAddr::V4(b4) = b {
            ctx.check()?;
            ctx.detail(&format!("{fam}: sockperf ping-pong, {} s", self.secs));
            let stats = progcost::enable();
            let before = progcost::snapshot(&progs);
            let s = sockperf(ctx, pair, b4, self.secs)?;
            if let Some((runs, ns)) = progcost::per_run(&before, &progcost::snapshot(&progs)) {
                r.set("rr_prog_ns", ns);
                r.set("rr_prog_runs", runs as f64);
            }
            drop(stats);
            r.set("rr_mean_us", s.mean_us);
            r.set("rr_p99_us", s.p99_us);
            r.set("rr_round_trips", s.received as f64);
        }
        ctx.check()?;
        ctx.detail(&format!("{fam}: ping-pong (bench's own), {} s", self.secs));
        let stats = progcost::enable();
        let before = progcost::snapshot(&progs);
        let p = pingpong::run(
            &pair.b.path(),
            &pair.a.path(),
            SocketAddr::new(b, PINGPONG_PORT),
            self.secs,
        )?;
        if let Some((runs, ns)) = progcost::per_run(&before, &progcost::snapshot(&progs)) {
            r.set(&key("pp_prog_ns"), ns);
            r.set(&key("pp_prog_runs"), runs as f64);
        }
        drop(stats);
        drop(awake);
        r.set(&key("pp_mean_us"), p.mean_us);
        r.set(&key("pp_p99_us"), p.p99_us);
        r.set(&key("pp_round_trips"), p.round_trips as f64);
        Ok(())
    }
}

/// Whether `m` is a metric of `family` (IPv6 ones are those with an IPv4 counterpart).
fn is_of(m: &Metric, family: Family) -> bool {
    (family == Family::V6) == m.v4_of.is_some()
}

/// Keeps the CPUs out of deep idle states while the returned file is open: a PM QoS
/// request for 0 µs wake-up latency (what `tuned`'s latency-performance profile does).
/// `None` if the kernel refuses it. Only the latency runs take it: on a VM whose idle is
/// a HLT exit, waking a vCPU costs tens of µs and swamped the round-trip times (40–55 µs
/// against 8–13 µs with the request, same direct veth pair, same minute), varying from
/// run to run; but a polling vCPU slowed the throughput runs (15 → 9–14 Gbit/s).
fn cpus_awake() -> Option<std::fs::File> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/cpu_dma_latency")
        .ok()?;
    f.write_all(&0i32.to_ne_bytes()).ok()?;
    Some(f)
}

/// Waits (bounded) until something listens on TCP `port` in `ns`; fails early if
/// `server` exits.
pub fn wait_listening(ns: &Ns, port: u16, server: &mut Bg) -> Result<()> {
    let start = Instant::now();
    let filter = format!("sport = :{port}");
    loop {
        server.check_alive()?;
        proc::check_interrupt()?;
        let out = proc::run_ok(
            &mut ns.command("ss", &["-Hltn", &filter]),
            None,
            proc::CMD_TIMEOUT,
        )?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        if start.elapsed() > LISTEN_TIMEOUT {
            bail!(
                "nothing listens on port {port} in {} after {} s",
                ns.name(),
                LISTEN_TIMEOUT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// One iperf3 run: the server in `server` listens on `bind:port`, the client in `client`
/// connects to `target` (the same, or an address translated to it). Returns (receiver's
/// Gbit/s, sender's retransmits); fails when the receiver got 0 bytes.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct of the same fields would only rename them"
)]
pub fn iperf_via(
    ctx: &Ctx,
    server: &Ns,
    bind: IpAddr,
    port: u16,
    client: &Ns,
    target: SocketAddr,
    streams: u32,
    secs: u64,
) -> Result<(f64, f64)> {
    let (bind_s, port_s) = (bind.to_string(), port.to_string());
    let mut srv = Bg::spawn(
        &mut server.command("iperf3", &["-s", "-1", "-B", &bind_s, "-p", &port_s]),
        "iperf3 server",
        &ctx.log_path(&format!("iperf3-{}", server.name())),
    )?;
    wait_listening(server, port, &mut srv)?;
    let out = proc::run_interruptible(
        &mut client.command(
            "iperf3",
            &[
                "-c",
                &target.ip().to_string(),
                "-p",
                &target.port().to_string(),
                "-t",
                &secs.to_string(),
                "-O",
                "1",
                "-P",
                &streams.to_string(),
                "-J",
                "--connect-timeout",
                "3000",
            ],
        ),
        None,
        Duration::from_secs(secs + 30),
    )?;
    parse_iperf(&out.stdout).with_context(|| {
        let stderr = proc::first_line(&out.stderr);
        format!("iperf3 client ({}): {stderr}", out.status)
    })
}

fn parse_iperf(stdout: &[u8]) -> Result<(f64, f64)> {
    let v: serde_json::Value =
        serde_json::from_slice(stdout).context("iperf3 printed no JSON report")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    let received = &v["end"]["sum_received"];
    let bytes = received["bytes"].as_f64().unwrap_or(0.0);
    let bps = received["bits_per_second"].as_f64().unwrap_or(0.0);
    if bytes <= 0.0 || bps <= 0.0 {
        bail!("iperf3: the receiver got 0 bytes");
    }
    let retransmits = v["end"]["sum_sent"]["retransmits"].as_f64().unwrap_or(0.0);
    Ok((bps / 1e9, retransmits))
}

#[derive(Debug, PartialEq)]
struct Sockperf {
    mean_us: f64,
    p99_us: f64,
    sent: u64,
    received: u64,
    dropped: u64,
}

/// One sockperf TCP ping-pong run from `a` to `b` (at `b_ip`), round-trip times.
fn sockperf(ctx: &Ctx, pair: &Pair, b_ip: Ipv4Addr, secs: u64) -> Result<Sockperf> {
    let b_ip = b_ip.to_string();
    let port = SOCKPERF_PORT.to_string();
    let mut server = Bg::spawn(
        &mut pair
            .b
            .command("sockperf", &["server", "--tcp", "-i", &b_ip, "-p", &port]),
        "sockperf server",
        &ctx.log_path(&format!("sockperf-{}", pair.b.name())),
    )?;
    wait_listening(&pair.b, SOCKPERF_PORT, &mut server)?;
    let out = proc::run_interruptible(
        &mut pair.a.command(
            "sockperf",
            &[
                "ping-pong",
                "--tcp",
                "-i",
                &b_ip,
                "-p",
                &port,
                "-t",
                &secs.to_string(),
                "--full-rtt",
            ],
        ),
        None,
        Duration::from_secs(secs + 30),
    )?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let s = parse_sockperf(&text).with_context(|| {
        format!(
            "sockperf client ({}): {}",
            out.status,
            proc::first_line(&out.stderr)
        )
    })?;
    if s.received == 0 {
        bail!("sockperf: no round trip completed");
    }
    let lost = s.sent.saturating_sub(s.received).max(s.dropped);
    if lost * 100 > s.sent {
        bail!(
            "sockperf: {lost} of {} messages without an answer (> 1 %)",
            s.sent
        );
    }
    drop(server);
    Ok(s)
}

/// Removes ANSI colour sequences (sockperf colours its summary).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … final byte in @–~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The number after `key` in `line` (spaces and `=` skipped).
fn number_after(line: &str, key: &str) -> Option<f64> {
    let rest = &line[line.find(key)? + key.len()..];
    let rest = rest.trim_start_matches([' ', '=']);
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn parse_sockperf(text: &str) -> Result<Sockperf> {
    let text = strip_ansi(text);
    let (mut mean, mut p99, mut sent, mut received, mut dropped) = (None, None, None, None, 0);
    for line in text.lines() {
        if line.contains("[Valid Duration]") {
            sent = number_after(line, "SentMessages");
            received = number_after(line, "ReceivedMessages");
        } else if line.contains("avg-rtt") {
            mean = number_after(line, "avg-rtt");
        } else if line.contains("avg-lat") {
            mean = number_after(line, "avg-lat");
        } else if line.contains("percentile 99.000") {
            p99 = number_after(line, "percentile 99.000");
        } else if line.contains("# dropped messages") {
            dropped = number_after(line, "# dropped messages").unwrap_or(0.0) as u64;
        }
    }
    match (mean, p99, sent, received) {
        (Some(mean_us), Some(p99_us), Some(sent), Some(received)) => Ok(Sockperf {
            mean_us,
            p99_us,
            sent: sent as u64,
            received: received as u64,
            dropped,
        }),
        _ => bail!("sockperf printed no summary"),
    }
}

impl Scenario for EndpointScenario {
    fn name(&self) -> &'static str {
        "endpoint"
    }

    fn title(&self) -> String {
        "Endpoint ↔ endpoint TCP throughput and latency".into()
    }

    fn method(&self) -> String {
        let br_nf = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
            .map(|s| format!("`net.bridge.bridge-nf-call-iptables` = {}", s.trim()))
            .unwrap_or_else(|_| "br_netfilter not loaded".into());
        format!(
            "Two network namespaces, client in the first, server in the second. Per run: \
             `iperf3 -t {s} -O 1` with 1 and with 4 streams (receiver's throughput), then \
             `sockperf ping-pong --tcp -t {s} --full-rtt` (round-trip time, mean and p99) \
             with the CPUs kept out of deep idle states (PM QoS: `/dev/cpu_dma_latency` = \
             0 held open, for the ping-pong only; `rr_cpus_awake` = 1 in the JSON when the \
             kernel granted it), so that vCPU wake-ups do not swamp the path's cost. \
             During the ping-pong the kernel's BPF statistics are on (`BPF_ENABLE_STATS`): \
             the run time per run of the tc program on the path (netpath's endpoint \
             program, the floor's redirect; `rr_prog_runs` runs counted) is a steadier \
             measure than the wall-clock figures, against the floor. \
             Each run builds its topology afresh, checks with one ping that traffic flows, \
             and removes it afterwards. A run with 0 bytes received or more than 1 % of \
             ping-pong messages unanswered is FAILED. Ratios are against the direct veth pair \
             (throughput: < 1× is slower; latency: > 1× is slower). \
             IPv6: every topology is dual-stack (netpath: a network with an IPv6 `--subnet` \
             too, each endpoint's IPv6 address from the API), and the same run measures \
             the same figures over IPv6 after IPv4 (\"(IPv6)\" rows). sockperf 3.7 takes \
             IPv4 addresses only, so both families also get the bench's own ping-pong (one \
             TCP connection, a {len}-byte message echoed, round trip after round trip for \
             {s} s after 0.4 s of warm-up, `TCP_NODELAY`, the PM QoS request held, BPF \
             statistics on); the IPv6 ÷ IPv4 table compares each variant's IPv6 ratio \
             with its IPv4 ratio of the same run. The bpf_stats rows count only the \
             programs attached (tc filter or tcx, looked up at sampling time) to the host \
             devices of the topology under test: none for the direct veth pair and the Linux \
             bridge. On this host: {br_nf}.",
            s = self.secs,
            len = pingpong::MSG_LEN,
        )
    }

    fn variants(&self) -> Vec<Variant> {
        let mut variants = vec![
            Variant {
                key: "direct",
                label: "direct veth",
                how: "a veth pair straight from one namespace into the other: the limit, and \
                      the reference for the ratios."
                    .into(),
            },
            Variant {
                key: "bridge",
                label: "Linux bridge",
                how: "each namespace's veth has its host end on one Linux bridge (the data \
                      path of Docker's bridge and the CNI bridge plugin, without NAT)."
                    .into(),
            },
            Variant {
                key: "floor",
                label: "tc redirect floor",
                how: "each namespace's veth has its host end in the host namespace with the \
                      smallest tc program that can join them: `return \
                      bpf_redirect_peer(<the other host end>, 0)`, 4 instructions, attached \
                      as netpath attaches its own (cls_bpf, direct action). No parsing, \
                      maps or checks: the least any tc fast path between two veths can cost, \
                      so netpath ÷ floor is the cost of netpath's own logic."
                    .into(),
            },
            Variant {
                key: "netpath",
                label: "netpath",
                how: "a bridge network of `netpath daemon` with one container endpoint (added \
                      through the API) in each namespace; traffic between the two endpoints."
                    .into(),
            },
        ];
        if self.has_baseline {
            variants.push(Variant::earlier_build());
        }
        variants
    }

    fn reference(&self) -> &'static str {
        "direct"
    }

    fn metrics(&self) -> Vec<Metric> {
        let prog = |key: &'static str, label: &str| {
            Metric::new(key, label, Unit::Nanos, Better::Lower).against("floor")
        };
        let v4_only = ["rr_mean_us", "rr_p99_us", "rr_prog_ns"];
        Metric::with_v6(
            vec![
                Metric::new(
                    "tcp1_gbps",
                    "TCP throughput, 1 stream",
                    Unit::Gbps,
                    Better::Higher,
                ),
                Metric::new(
                    "tcp4_gbps",
                    "TCP throughput, 4 streams",
                    Unit::Gbps,
                    Better::Higher,
                ),
                Metric::new(
                    "rr_mean_us",
                    "TCP ping-pong RTT, mean (sockperf, IPv4 only)",
                    Unit::Micros,
                    Better::Lower,
                ),
                Metric::new(
                    "rr_p99_us",
                    "TCP ping-pong RTT, p99 (sockperf, IPv4 only)",
                    Unit::Micros,
                    Better::Lower,
                ),
                Metric::new(
                    "pp_mean_us",
                    "TCP ping-pong RTT, mean (bench's own)",
                    Unit::Micros,
                    Better::Lower,
                ),
                Metric::new(
                    "pp_p99_us",
                    "TCP ping-pong RTT, p99 (bench's own)",
                    Unit::Micros,
                    Better::Lower,
                ),
                prog(
                    "rr_prog_ns",
                    "tc program run time per packet during the sockperf ping-pong (bpf_stats)",
                ),
                prog(
                    "pp_prog_ns",
                    "tc program run time per packet during the bench's ping-pong (bpf_stats)",
                ),
            ],
            |m| !v4_only.contains(&&*m.key),
        )
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        ctx.detail("building the topology");
        let pair = match variant {
            "direct" => topo::direct_veth(ctx)?,
            "bridge" => topo::linux_bridge(ctx)?,
            "netpath" => topo::netpath_pair(ctx)?,
            Variant::EARLIER => {
                return ctx.with_build(Build::Baseline, |ctx| {
                    let pair = topo::netpath_pair(ctx)?;
                    let r = self.measure(ctx, &pair);
                    ctx.detail("removing the topology");
                    drop(pair);
                    r
                });
            }
            "floor" => floor::redirect_peer_wire(ctx)?,
            other => bail!("unknown variant {other}"),
        };
        let r = self.measure(ctx, &pair);
        ctx.detail("removing the topology");
        drop(pair);
        r
    }

    fn plots(&self, result: &ScenarioResult, dir: &Path) -> Result<Vec<(String, String)>> {
        let panels: Vec<plot::Panel> = self
            .metrics()
            .iter()
            .map(|m| plot::Panel {
                title: m.label.clone(),
                unit: m.unit,
                bars: result
                    .variants
                    .iter()
                    .map(|v| (v.label.to_owned(), v.median.get(&*m.key).copied()))
                    .collect(),
            })
            .collect();
        let file = "endpoint.svg".to_owned();
        plot::bars(
            &dir.join(&file),
            "Endpoint ↔ endpoint: medians over the rounds",
            &panels,
        )?;
        let mut plots = vec![(
            file,
            "Throughput (higher is better) and round-trip time (lower is better) per variant"
                .into(),
        )];
        plots.extend(plot::family_ratios(result, dir)?);
        Ok(plots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockperf_summary_is_parsed() {
        let text = "sockperf: [Total Run] RunTime=2.000 sec; Warm up time=400 msec; SentMessages=108167; ReceivedMessages=108166\n\
sockperf: ========= Printing statistics for Server No: 0\n\
sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=83134; ReceivedMessages=83134\n\
sockperf: \u{1b}[2;35m====> avg-rtt=18.616 (std-dev=34.314)\u{1b}[0m\n\
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0\n\
sockperf: ---> percentile 99.900 =  150.431\n\
sockperf: ---> percentile 99.000 =   83.603\n\
sockperf: ---> percentile 90.000 =   20.319\n";
        assert_eq!(
            parse_sockperf(text).unwrap(),
            Sockperf {
                mean_us: 18.616,
                p99_us: 83.603,
                sent: 83134,
                received: 83134,
                dropped: 0
            }
        );
        assert!(parse_sockperf("sockperf: error").is_err());
    }

    #[test]
    fn iperf_reports_are_checked() {
        let ok = br#"{"end":{"sum_sent":{"retransmits":3},"sum_received":{"bytes":1000,"bits_per_second":2.5e10}}}"#;
        assert_eq!(parse_iperf(ok).unwrap(), (25.0, 3.0));
        let zero = br#"{"end":{"sum_received":{"bytes":0,"bits_per_second":0}}}"#;
        assert!(
            parse_iperf(zero)
                .unwrap_err()
                .to_string()
                .contains("0 bytes")
        );
        let err = br#"{"error":"unable to connect to server: Connection refused"}"#;
        assert!(
            parse_iperf(err)
                .unwrap_err()
                .to_string()
                .contains("refused")
        );
    }
}
