//! The `publish` scenario's three variants, each building its topology and handing it
//! to [`PublishScenario::measure`]: netpath (dual-stack network, ports published through
//! the API, `0.0.0.0:` specs for IPv4 and `[::]:` ones for IPv6, n/a if the daemon refuses them), Docker's iptables /
//! ip6tables DNAT recipe in a router namespace, and the direct veth pair.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use netpath::model::PortPublish;

use super::{
    BULK_TIMEOUT, CHAIN, FamilyRun, GUEST_PORT, HOST_PORT, IPERF_GUEST, IPERF_HOST, OTHERS_FIRST,
    PublishScenario, Published, Run, level_key,
};
use crate::{
    Ctx, Family, RunResult, Scenario as _,
    ctx::V6_PUBLISH,
    router::{HostUplink, Router, RouterNets},
    topo::{self, NetpathNetwork, Ns},
};

impl PublishScenario {
    pub(super) fn run_netpath(&self, ctx: &mut Ctx) -> Result<RunResult> {
        ctx.detail("building the topology");
        let mut r = RunResult::default();
        let client = Ns::create(ctx, "c")?;
        let mut uplink = HostUplink::create(ctx, &client, ctx.subnets.in_netns_24(30))?;
        uplink.add_v6(&client, ctx.subnets.in_netns_64(30))?;
        let subnet = ctx.subnets.publish_netpath;
        let subnet6 = ctx.subnets.v6_64(V6_PUBLISH);
        let (network, refused) =
            NetpathNetwork::create_dual_or_v4(ctx, subnet, subnet6, &uplink.link.0)?;
        if let Some(why) = refused {
            r.v6_unavailable(&self.metrics(), &why);
        }
        let (server, others) = (Ns::create(ctx, "e")?, Ns::create(ctx, "o")?);
        let ep = topo::netpath_endpoint(ctx, &network, &server)?;
        let others_ep = topo::netpath_endpoint(ctx, &network, &others)?;
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
        /// `spec` published over `family` alone (`0.0.0.0:`, `[::]:` before it): a spec
        /// without a host address would publish on both families of the dual-stack
        /// endpoint, and the IPv6 run's publish would find its port taken.
        fn on(family: Family, spec: String) -> String {
            match family {
                Family::V4 => format!("0.0.0.0:{spec}"),
                Family::V6 => format!("[::]:{spec}"),
            }
        }
        let mut families = Vec::new();
        for (family, ep_ip, host_ip) in [
            (
                Family::V4,
                ep.ip.map(IpAddr::from),
                Some(IpAddr::from(uplink.host_ip)),
            ),
            (
                Family::V6,
                ep.ip6.map(IpAddr::from),
                uplink.host_ip6.map(IpAddr::from),
            ),
        ] {
            if r.unavailable.contains_key(&family.key(level_key(0))) {
                continue;
            }
            let (Some(ep_ip), Some(host_ip)) = (ep_ip, host_ip) else {
                r.v6_unavailable(&self.metrics(), "the endpoint got no IPv6 address");
                continue;
            };
            let published = publish(ctx, &ep.id, on(family, format!("{HOST_PORT}:{GUEST_PORT}")))
                .and_then(|_| {
                    publish(
                        ctx,
                        &ep.id,
                        on(family, format!("{IPERF_HOST}:{IPERF_GUEST}")),
                    )
                });
            match published {
                Ok(_) => families.push(FamilyRun::new(ep_ip, host_ip, true)),
                // IPv6 published ports are a feature still to come: refused is n/a.
                Err(e) if family == Family::V6 => {
                    r.v6_unavailable(&self.metrics(), &format!("the daemon refused: {e:#}"));
                }
                Err(e) => return Err(e),
            }
        }
        struct P<'a, F: Fn(&Ctx, &str, String) -> Result<Duration>> {
            publish: &'a F,
            others: String,
        }
        impl<F: Fn(&Ctx, &str, String) -> Result<Duration>> Published for P<'_, F> {
            fn add_others(
                &mut self,
                ctx: &mut Ctx,
                family: Family,
                from: usize,
                to: usize,
            ) -> Result<()> {
                let (a, b) = (OTHERS_FIRST + from as u16, OTHERS_FIRST + to as u16 - 1);
                (self.publish)(ctx, &self.others, on(family, format!("{a}-{b}:{a}-{b}"))).map(drop)
            }
            fn publish_one(&mut self, ctx: &mut Ctx, port: u16) -> Result<Duration> {
                (self.publish)(ctx, &self.others, format!("{port}:{port}"))
            }
        }
        let mut p = P {
            publish: &publish,
            others: others_ep.id,
        };
        let run = Run {
            client: &client,
            server: &server,
            families,
        };
        let res = self.measure(ctx, &run, Some(&mut p), &mut r);
        ctx.detail("removing the topology");
        drop(network);
        drop((server, others, client, uplink));
        res.map(|()| r)
    }

    pub(super) fn run_iptables(&self, ctx: &mut Ctx) -> Result<RunResult> {
        ctx.detail("building the topology");
        let client = Ns::create(ctx, "c")?;
        let mut router = Router::create(ctx, &client, RouterNets::in_netns(ctx, 31, 32))?;
        let server = Ns::create(ctx, "e")?;
        let ep_ips = router.add_endpoint(ctx, &server)?;
        let other = Ns::create(ctx, "o")?;
        let other_ips = router.add_endpoint(ctx, &other)?;
        for family in Family::BOTH {
            // Docker's shape: PREROUTING to LOCAL addresses jumps to a chain of DNAT rules.
            router.iptables(family, &["-t", "nat", "-N", CHAIN])?;
            router.iptables(
                family,
                &[
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
                ],
            )?;
            let ep_ip = match family {
                Family::V4 => IpAddr::from(ep_ips.0),
                Family::V6 => IpAddr::from(ep_ips.1),
            };
            for (h, g) in [(HOST_PORT, GUEST_PORT), (IPERF_HOST, IPERF_GUEST)] {
                let r = dnat_rule(h, SocketAddr::new(ep_ip, g));
                let args: Vec<&str> = ["-t", "nat", "-A"]
                    .into_iter()
                    .chain(r.split_whitespace())
                    .collect();
                router.iptables(family, &args)?;
            }
        }
        struct P<'a> {
            router: &'a Router,
            other_ips: (Ipv4Addr, Ipv6Addr),
            file: std::path::PathBuf,
        }
        impl P<'_> {
            fn rule(&self, family: Family, port: u16) -> String {
                let to = match family {
                    Family::V4 => IpAddr::from(self.other_ips.0),
                    Family::V6 => IpAddr::from(self.other_ips.1),
                };
                dnat_rule(port, SocketAddr::new(to, port))
            }
        }
        impl Published for P<'_> {
            fn add_others(
                &mut self,
                _ctx: &mut Ctx,
                family: Family,
                from: usize,
                to: usize,
            ) -> Result<()> {
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
                    text.push_str(&format!("{op} {}\n", self.rule(family, port)));
                }
                text.push_str("COMMIT\n");
                self.router.iptables_restore(family, &self.file, &text)
            }
            fn publish_one(&mut self, _ctx: &mut Ctx, port: u16) -> Result<Duration> {
                let r = self.rule(Family::V4, port);
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
                        crate::proc::first_line(&out.stderr)
                    );
                }
                Ok(took)
            }
        }
        let mut p = P {
            router: &router,
            other_ips,
            file: ctx.tmp.join(format!("{}-rules", router.ns.name())),
        };
        let run = Run {
            client: &client,
            server: &server,
            families: vec![
                FamilyRun::new(ep_ips.0.into(), router.uplink_ip.into(), true),
                FamilyRun::new(ep_ips.1.into(), router.uplink_ip6.into(), true),
            ],
        };
        let mut r = RunResult::default();
        let res = self.measure(ctx, &run, Some(&mut p), &mut r);
        ctx.detail("removing the topology");
        drop((server, other, router, client));
        res.map(|()| r)
    }

    pub(super) fn run_direct(&self, ctx: &mut Ctx) -> Result<RunResult> {
        ctx.detail("building the topology");
        let pair = topo::direct_veth(ctx)?;
        let families = Family::BOTH
            .into_iter()
            .filter_map(|f| pair.b_addr(f))
            .map(|b| FamilyRun::new(b, b, false))
            .collect();
        let run = Run {
            client: &pair.a,
            server: &pair.b,
            families,
        };
        let mut r = RunResult::default();
        let res = self.measure(ctx, &run, None, &mut r);
        ctx.detail("removing the topology");
        drop(pair);
        res.map(|()| r)
    }
}

/// A rule of the published ports' chain: TCP `port` to `to` (`[addr]:port` for IPv6,
/// as ip6tables writes it).
fn dnat_rule(port: u16, to: SocketAddr) -> String {
    format!("{CHAIN} -p tcp -m tcp --dport {port} -j DNAT --to-destination {to}")
}
