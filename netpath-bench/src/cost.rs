//! `cost`: what netpath's endpoint program costs per packet, as the kernel counts it,
//! for three builds in the same run: this build with nobody watching, this build with
//! forwards traced at 1 in 100 (`netpath monitor --trace-every 100` reading), and an
//! earlier commit's build (`cargo xtask bench --baseline REV`) with nobody watching.
//!
//! Two measures per family, on a fresh two-endpoint network each run:
//! - the run time per run of the programs on the path during a TCP ping-pong
//!   (`BPF_ENABLE_STATS`, [`progcost`]): real traffic, real wake-ups;
//! - BPF_PROG_TEST_RUN of the endpoint program with a crafted endpoint → endpoint TCP
//!   frame, repeated: no scheduling or other traffic in the figure, so the steadiest.
//!
//! and the program's size after the kernel's rewrites, which changes only with the code.

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use netpath::model::Endpoint;
use netpath_tests::frames;

use super::{
    Better, Ctx, Family, Metric, Opts, RunResult, Scenario, Unit, Variant,
    ctx::Build,
    pingpong,
    proc::Bg,
    progcost,
    topo::{self, Pair},
};

const PINGPONG_PORT: u16 = 11113;
/// `TC_ACT_REDIRECT`: the verdict of a frame the fast path hands to the other endpoint.
const TC_ACT_REDIRECT: u32 = 7;
/// BPF_PROG_TEST_RUN calls the repeats are split into (the least mean is kept).
const TEST_RUN_BATCHES: u32 = 5;
/// Forwards traced by the `traced` variant: one in this many.
const TRACE_EVERY: u32 = 100;

pub struct CostScenario {
    secs: u64,
    repeat: u32,
    has_baseline: bool,
}

impl CostScenario {
    pub fn new(opts: &Opts) -> Self {
        CostScenario {
            secs: if opts.quick { 3 } else { 6 },
            repeat: if opts.quick { 200_000 } else { 1_000_000 },
            has_baseline: opts.baseline_bin.is_some(),
        }
    }

    /// Both families' figures over `pair`, whose endpoints are `eps`.
    fn measure(&self, ctx: &mut Ctx, pair: &Pair, eps: &[Endpoint; 2]) -> Result<RunResult> {
        let mut r = RunResult::default();
        let prog = progcost::ingress_program(&eps[0].host_ifname)?;
        r.set("insns", f64::from(progcost::xlated_insns(&prog)?));
        let ifindex = ifindex_of(&eps[0].host_ifname)?;
        for family in Family::BOTH {
            let key = |base: &str| family.key(base);
            let Some(b) = pair.b_addr(family) else {
                r.unavailable(&key("pp_prog_ns"), format!("no {} address", family.label()));
                r.unavailable(&key("testrun_ns"), format!("no {} address", family.label()));
                continue;
            };
            if family == Family::V6 {
                pair.a.wait_dad()?;
                pair.b.wait_dad()?;
            }
            topo::ping(pair.a.name(), b).with_context(|| {
                format!(
                    "the endpoints cannot reach each other over {}",
                    family.label()
                )
            })?;
            ctx.check()?;
            ctx.detail(&format!("{}: ping-pong, {} s", family.label(), self.secs));
            let progs = progcost::attached(&pair.prog_devs)?;
            let stats = progcost::enable();
            let before = progcost::snapshot(&progs);
            pingpong::run(
                &pair.b.path(),
                &pair.a.path(),
                SocketAddr::new(b, PINGPONG_PORT),
                self.secs,
            )?;
            let Some((runs, ns)) = progcost::per_run(&before, &progcost::snapshot(&progs)) else {
                bail!("the kernel counted no run of the programs on the path (bpf_stats off?)");
            };
            r.set(&key("pp_prog_ns"), ns);
            r.set(&key("pp_prog_runs"), runs as f64);
            drop(stats);
            ctx.detail(&format!(
                "{}: BPF_PROG_TEST_RUN × {}",
                family.label(),
                self.repeat
            ));
            let frame = endpoint_frame(
                mac_and_addr(&eps[0], family)?,
                mac_and_addr(&eps[1], family)?,
            )?;
            // The least of a few batches' means: the run least disturbed by the rest of
            // the machine (a vCPU's steal, interrupts) is the closest to the program's cost.
            let mut least = f64::INFINITY;
            for _ in 0..TEST_RUN_BATCHES {
                let (verdict, ns) =
                    progcost::test_run(&prog, ifindex, &frame, self.repeat / TEST_RUN_BATCHES)?;
                if verdict != TC_ACT_REDIRECT {
                    bail!(
                        "{}: the crafted frame got verdict {verdict}, not the fast path's redirect",
                        family.label()
                    );
                }
                least = least.min(ns);
            }
            r.set(&key("testrun_ns"), least);
        }
        Ok(r)
    }
}

/// The ifindex of host device `dev`.
pub(crate) fn ifindex_of(dev: &str) -> Result<u32> {
    let path = format!("/sys/class/net/{dev}/ifindex");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{path}: {text:?}"))
}

/// A TCP segment from `a` (MAC, address) to `b`, as `a`'s interface sends it on their
/// bridge network (to `b`'s own MAC): what the ping-pong's packets look like to the
/// endpoint program.
fn endpoint_frame(a: ([u8; 6], IpAddr), b: ([u8; 6], IpAddr)) -> Result<Vec<u8>> {
    let payload = [0x5a; pingpong::MSG_LEN];
    let mut frame = match (a.1, b.1) {
        (IpAddr::V4(a4), IpAddr::V4(b4)) => {
            frames::tcp4(a4.octets(), 40000, b4.octets(), PINGPONG_PORT, &payload)
        }
        (IpAddr::V6(a6), IpAddr::V6(b6)) => {
            frames::tcp6(a6.octets(), 40000, b6.octets(), PINGPONG_PORT, &payload)
        }
        _ => bail!("{} and {} are of two families", a.1, b.1),
    };
    frame[..6].copy_from_slice(&b.0);
    frame[6..12].copy_from_slice(&a.0);
    Ok(frame)
}

/// An endpoint's MAC and address of `family`.
fn mac_and_addr(e: &Endpoint, family: Family) -> Result<([u8; 6], IpAddr)> {
    let ip = match family {
        Family::V4 => IpAddr::V4(e.ip.context("an endpoint has no IPv4 address")?),
        Family::V6 => IpAddr::V6(e.ip6.context("an endpoint has no IPv6 address")?),
    };
    Ok((e.mac.0, ip))
}

/// `netpath monitor` tracing one forward in [`TRACE_EVERY`], its events into a log, while
/// the returned process runs.
fn trace(ctx: &mut Ctx) -> Result<Bg> {
    let bin = ctx.opts.netpath_bin.clone();
    let socket = ctx.daemon()?.paths.socket.clone();
    let every = TRACE_EVERY.to_string();
    let mut monitor = Bg::spawn(
        Command::new(bin)
            .args([
                "monitor",
                "--type",
                "trace",
                "--trace-every",
                &every,
                "--json",
            ])
            .arg("--socket")
            .arg(socket),
        "netpath monitor",
        &ctx.log_path("cost-monitor"),
    )?;
    // The programs report once the daemon has a watcher: give it a moment to attach.
    std::thread::sleep(std::time::Duration::from_millis(300));
    monitor.check_alive()?;
    Ok(monitor)
}

/// Events (JSON lines) the monitor of [`trace`] wrote to its log.
fn traced_events(ctx: &Ctx) -> usize {
    std::fs::read_to_string(ctx.log_path("cost-monitor"))
        .map(|t| t.lines().filter(|l| l.starts_with('{')).count())
        .unwrap_or(0)
}

impl Scenario for CostScenario {
    fn name(&self) -> &'static str {
        "cost"
    }

    fn title(&self) -> String {
        "Per-packet cost of the endpoint program: this build, traced, and an earlier build".into()
    }

    fn method(&self) -> String {
        format!(
            "Each run: a fresh bridge network of the bench's daemon with one container \
             endpoint in each of two namespaces (dual-stack), then per family: (1) the \
             bench's TCP ping-pong ({len}-byte messages, {s} s) with the kernel's BPF \
             statistics on: run time per run of the tc programs attached to the two \
             endpoints' host devices; (2) BPF_PROG_TEST_RUN of the program on the first \
             endpoint's host device with a crafted TCP segment from it to the other \
             endpoint (its own MACs and addresses, the ifindex of its device), repeated \
             {repeat} times in {batches} calls: the least of the calls' mean ns per run \
             (the kernel's figure), and the verdict must be the fast path's redirect. `insns`: the program's size after the kernel's rewrites. \
             The `previous` variant runs the daemon of an earlier commit (`cargo xtask \
             bench --baseline REV` builds it in a git worktree); the daemon is stopped and \
             reset between builds. `traced` runs this build with `netpath monitor --type \
             trace --trace-every {every}` reading the events. Ratios are against \
             {reference}.",
            len = pingpong::MSG_LEN,
            s = self.secs,
            repeat = self.repeat,
            batches = TEST_RUN_BATCHES,
            every = TRACE_EVERY,
            reference = if self.has_baseline {
                "the earlier build"
            } else {
                "this build (no --baseline given)"
            },
        )
    }

    fn variants(&self) -> Vec<Variant> {
        vec![
            Variant {
                key: Variant::EARLIER,
                label: "earlier build",
                how: "the netpath of an earlier commit (`--baseline REV`), nobody watching.".into(),
            },
            Variant {
                key: "netpath",
                label: "this build",
                how: "this netpath, nobody watching: the monitor's cost is one array lookup \
                      per packet."
                    .into(),
            },
            Variant {
                key: "traced",
                label: "this build, traced 1/100",
                how: format!(
                    "this netpath with a `netpath monitor` tracing one forward in \
                     {TRACE_EVERY}."
                ),
            },
        ]
    }

    fn reference(&self) -> &'static str {
        if self.has_baseline {
            Variant::EARLIER
        } else {
            "netpath"
        }
    }

    fn metrics(&self) -> Vec<Metric> {
        let mut pp = Metric::new(
            "pp_prog_ns",
            "tc program run time per packet during a TCP ping-pong (bpf_stats)",
            Unit::Nanos,
            Better::Lower,
        );
        let mut tr = Metric::new(
            "testrun_ns",
            "endpoint program, BPF_PROG_TEST_RUN of an endpoint → endpoint segment, per run",
            Unit::Nanos,
            Better::Lower,
        );
        if self.has_baseline {
            // No regression beyond the noise of the steadier measure.
            pp = pp.target_vs("netpath", 1.1, Variant::EARLIER);
            tr = tr.target_vs("netpath", 1.1, Variant::EARLIER);
        }
        // Both families, without the IPv6 ÷ IPv4 comparison: each build is measured
        // against the other build, not one family against the other.
        let v6 = |m: &Metric| Metric {
            v4_of: None,
            ..m.v6()
        };
        let mut metrics = vec![v6(&pp), v6(&tr)];
        metrics.splice(0..0, [pp, tr]);
        metrics.push(Metric::new(
            "insns",
            "endpoint program instructions after the kernel's rewrites",
            Unit::Count,
            Better::Lower,
        ));
        metrics.push(Metric::new(
            "trace_events",
            "trace events the monitor received",
            Unit::Count,
            Better::Higher,
        ));
        metrics
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        let build = match variant {
            Variant::EARLIER if !self.has_baseline => {
                let mut r = RunResult::default();
                for m in self.metrics() {
                    r.unavailable(&m.key, "no --baseline given");
                }
                return Ok(r);
            }
            Variant::EARLIER => Build::Baseline,
            "netpath" | "traced" => Build::Current,
            other => bail!("unknown variant {other}"),
        };
        ctx.use_build(build)?;
        ctx.detail("building the topology");
        let (pair, eps) = topo::netpath_pair_endpoints(ctx)?;
        let monitor = (variant == "traced").then(|| trace(ctx)).transpose()?;
        let r = self.measure(ctx, &pair, &eps);
        if let Some(m) = monitor {
            drop(m);
        }
        let mut r = r?;
        let events = traced_events(ctx);
        if variant == "traced" && events == 0 {
            bail!("the monitor received no trace event");
        }
        r.set("trace_events", events as f64);
        if variant != "traced" {
            // Another variant's log, if any, is not this run's.
            let _ = std::fs::remove_file(ctx.log_path("cost-monitor"));
            r.set("trace_events", 0.0);
        }
        ctx.detail("removing the topology");
        drop(pair);
        // The next scenario expects this build's daemon.
        if build == Build::Baseline {
            ctx.use_build(Build::Current)?;
        }
        Ok(r)
    }

    fn finish(&mut self, ctx: &mut Ctx) {
        let _ = ctx.use_build(Build::Current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crafted_frame_goes_from_one_endpoint_to_the_other() {
        let (ma, mb) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let f = endpoint_frame((ma, ip("10.9.0.2")), (mb, ip("10.9.0.3"))).unwrap();
        assert_eq!((&f[..6], &f[6..12]), (&mb[..], &ma[..]));
        assert_eq!(u16::from_be_bytes([f[12], f[13]]), 0x0800);
        assert_eq!(
            (&f[26..30], &f[30..34]),
            (&[10, 9, 0, 2][..], &[10, 9, 0, 3][..])
        );
        let f6 = endpoint_frame((ma, ip("fd09::2")), (mb, ip("fd09::3"))).unwrap();
        assert_eq!(u16::from_be_bytes([f6[12], f6[13]]), 0x86dd);
        assert_eq!(&f6[38..54], &ip6("fd09::3")[..]);
        assert!(endpoint_frame((ma, ip("10.9.0.2")), (mb, ip("fd09::3"))).is_err());
    }

    fn ip6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }
}
