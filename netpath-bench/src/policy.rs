//! `policy`: what network policy's egress rules cost the endpoint program per packet.
//! The same two-endpoint network with no rule, with 10 and with 1,000 egress CIDRs
//! (half of each family, none matching the destination), and BPF_PROG_TEST_RUN of the
//! program with a TCP segment from an endpoint to an address outside the network, which
//! is what the rules are looked up for (an LPM trie: its cost grows with the prefix
//! length walked, not with the number of rules).

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use netpath_tests::frames;

use super::{
    Better, Ctx, Family, Metric, Opts, RunResult, Scenario, Unit, Variant, proc, progcost, topo,
};

/// BPF_PROG_TEST_RUN calls the repeats are split into (the least mean is kept).
const BATCHES: u32 = 5;
/// `TC_ACT_UNSPEC` (-1): the verdict for a packet to the outside the rules let through
/// (the kernel routes it).
const TC_ACT_UNSPEC: u32 = u32::MAX;
/// The destinations of the crafted segments: documentation addresses no rule covers.
const OUT4: [u8; 4] = [203, 0, 113, 77];
const OUT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];

pub struct PolicyScenario {
    repeat: u32,
}

impl PolicyScenario {
    pub fn new(opts: &Opts) -> Self {
        PolicyScenario {
            repeat: if opts.quick { 200_000 } else { 1_000_000 },
        }
    }
}

/// `n` egress CIDRs, half IPv4 (/24s of 100.64.0.0/10), half IPv6 (/48s of fd00::/8).
fn rules(n: usize) -> Vec<String> {
    let v4 = (0..n / 2).map(|i| format!("100.{}.{}.0/24", 64 + i / 256, i % 256));
    let v6 = (0..n - n / 2).map(|i| format!("fd00:{:x}::/48", i + 1));
    v4.chain(v6).collect()
}

/// How many rules variant `variant` has.
fn rule_count(variant: &str) -> Result<usize> {
    Ok(match variant {
        "none" => 0,
        "egress10" => 10,
        "egress1000" => 1000,
        other => bail!("unknown variant {other}"),
    })
}

impl Scenario for PolicyScenario {
    fn name(&self) -> &'static str {
        "policy"
    }

    fn title(&self) -> String {
        "Per-packet cost of egress rules in the endpoint program".into()
    }

    fn method(&self) -> String {
        format!(
            "Each run: a fresh dual-stack bridge network of the bench's daemon with one \
             container endpoint in each of two namespaces; for the egress variants \
             `netpath network update NET --egress-deny CIDR…` with 10 or 1,000 CIDRs (half \
             IPv4 /24s, half IPv6 /48s, none matching). Then per family: \
             BPF_PROG_TEST_RUN of the program on the first endpoint's host device with a \
             TCP segment from it to an address outside the network (203.0.113.77, \
             2001:db8:77::1), repeated {repeat} times in {BATCHES} calls: the least of the \
             calls' mean ns per run; the verdict must be the kernel's path (nothing \
             denied). Ratios are against no rule.",
            repeat = self.repeat,
        )
    }

    fn variants(&self) -> Vec<Variant> {
        vec![
            Variant {
                key: "none",
                label: "no policy",
                how: "the network without egress rules: no lookup.".into(),
            },
            Variant {
                key: "egress10",
                label: "10 egress CIDRs",
                how: "`--egress-deny` with 10 CIDRs.".into(),
            },
            Variant {
                key: "egress1000",
                label: "1,000 egress CIDRs",
                how: "`--egress-deny` with 1,000 CIDRs.".into(),
            },
        ]
    }

    fn reference(&self) -> &'static str {
        "none"
    }

    fn metrics(&self) -> Vec<Metric> {
        let m = Metric::new(
            "testrun_ns",
            "endpoint program, BPF_PROG_TEST_RUN of a segment to the outside, per run",
            Unit::Nanos,
            Better::Lower,
        )
        .target_vs("egress1000", 1.1, "none");
        let v6 = Metric {
            v4_of: None,
            ..m.v6()
        };
        vec![m, v6]
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        let n = rule_count(variant)?;
        ctx.detail("building the topology");
        let (pair, eps) = topo::netpath_pair_endpoints(ctx)?;
        if n > 0 {
            ctx.detail(&format!("{n} egress rules"));
            let socket = ctx.daemon()?.paths.socket.clone();
            let mut cmd = Command::new(&ctx.opts.netpath_bin);
            cmd.args(["network", "update", &eps[0].network])
                .arg("--socket")
                .arg(socket);
            for r in rules(n) {
                cmd.args(["--egress-deny", &r]);
            }
            proc::run_ok(&mut cmd, None, proc::CMD_TIMEOUT).context("netpath network update")?;
        }
        let prog = progcost::ingress_program(&eps[0].host_ifname)?;
        let ifindex = super::cost::ifindex_of(&eps[0].host_ifname)?;
        let mut r = RunResult::default();
        for family in Family::BOTH {
            let frame = match (family, eps[0].ip, eps[0].ip6) {
                (Family::V4, Some(a), _) => frames::tcp4(a.octets(), 40000, OUT4, 80, b"x"),
                (Family::V6, _, Some(a)) => frames::tcp6(a.octets(), 40000, OUT6, 80, b"x"),
                _ => bail!("the endpoint has no {} address", family.label()),
            };
            let mut frame = frame;
            frame[6..12].copy_from_slice(&eps[0].mac.0);
            ctx.detail(&format!(
                "{}: BPF_PROG_TEST_RUN × {}",
                family.label(),
                self.repeat
            ));
            let mut least = f64::INFINITY;
            for _ in 0..BATCHES {
                let (verdict, ns) =
                    progcost::test_run(&prog, ifindex, &frame, self.repeat / BATCHES)?;
                if verdict != TC_ACT_UNSPEC {
                    bail!(
                        "{}: verdict {verdict}, not the kernel's path",
                        family.label()
                    );
                }
                least = least.min(ns);
            }
            r.set(&family.key("testrun_ns"), least);
        }
        ctx.detail("removing the topology");
        drop(pair);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_are_distinct_network_addresses_of_both_families() {
        let r = rules(1000);
        assert_eq!(r.len(), 1000);
        let nets: Vec<ipnet::IpNet> = r.iter().map(|c| c.parse().unwrap()).collect();
        assert!(nets.iter().all(|n| n.trunc() == *n), "network addresses");
        let mut unique = nets.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 1000);
        assert_eq!(nets.iter().filter(|n| n.addr().is_ipv4()).count(), 500);
        // None covers the crafted segments' destinations.
        let out4: std::net::IpAddr = OUT4.into();
        let out6: std::net::IpAddr = OUT6.into();
        assert!(
            nets.iter()
                .all(|n| !n.contains(&out4) && !n.contains(&out6))
        );
        assert_eq!(rules(10).len(), 10);
    }
}
