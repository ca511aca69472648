//! `masq`: egress masquerade — an endpoint reaches a server in another namespace behind
//! the uplink, leaving with the uplink's address: TCP throughput and new connections per
//! second, netpath's BPF masquerade against iptables MASQUERADE, and the same over IPv6
//! (NAT66) against ip6tables MASQUERADE in the same run.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Result, bail};

use super::{
    Better, Ctx, Family, Metric, Opts, RunResult, Scenario, Unit, Variant,
    connrate::{self, ConnStats},
    ctx::V6_MASQ,
    endpoint::iperf_via,
    router::{HostUplink, Router, RouterNets},
    topo::{self, NetpathNetwork, Ns},
};

const CONN_PORT: u16 = 80;
const IPERF_PORT: u16 = 5201;
const WORKERS: usize = 4;
const SERVER_THREADS: usize = 2;
const WARMUP: usize = 200;

pub struct MasqScenario {
    conns: usize,
    conn_budget: Duration,
    secs: u64,
}

impl MasqScenario {
    pub fn new(opts: &Opts) -> Self {
        if opts.quick {
            MasqScenario {
                conns: 3000,
                conn_budget: Duration::from_secs(8),
                secs: 3,
            }
        } else {
            MasqScenario {
                conns: 15_000,
                conn_budget: Duration::from_secs(30),
                secs: 5,
            }
        }
    }

    /// Servers in `outside` on `server`, the client in `ep`, over `server`'s family; the
    /// figures go into `r` under the family's keys. The connection server checks that
    /// the outside saw `masq`, the masquerade address: a probe connection seeing another
    /// source is an [`Untranslated`] error.
    fn measure(
        &self,
        ctx: &mut Ctx,
        ep: &Ns,
        outside: &Ns,
        server: IpAddr,
        masq: IpAddr,
        r: &mut RunResult,
    ) -> Result<()> {
        let family = if server.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let fam = family.label();
        let target = SocketAddr::new(server, CONN_PORT);
        if family == Family::V6 {
            ep.wait_dad()?;
            outside.wait_dad()?;
        }
        let srv = connrate::Server::start(&outside.path(), target, SERVER_THREADS)?;
        let conns = |ctx: &Ctx, total: usize, what: &str| -> Result<ConnStats> {
            ctx.check()?;
            ctx.detail(&format!("{fam}: {total} connections, {what}"));
            let s = connrate::run_clients(&ep.path(), target, total, WORKERS, self.conn_budget)?;
            s.check(what)?;
            Ok(s)
        };
        conns(ctx, 1, "probe (does traffic flow, translated?)")
            .map_err(|e| anyhow::Error::new(Untranslated(format!("{fam} probe: {e:#}"))))?;
        match srv.first_peer() {
            Some(p) if p.ip() == masq => {}
            seen => {
                return Err(Untranslated(format!(
                    "the outside saw {} instead of the masquerade address {masq}",
                    seen.map_or("nothing".to_owned(), |p| p.ip().to_string())
                ))
                .into());
            }
        }
        conns(ctx, WARMUP, "warm-up")?;
        let s = conns(ctx, self.conns, "measured")?;
        r.set(&family.key("conn_per_s"), s.rate());
        r.notes.extend(s.note(&format!("{fam} new connections")));
        drop(srv);
        ctx.check()?;
        ctx.detail(&format!("{fam}: iperf3, 1 stream, {} s", self.secs));
        let (gbps, retr) = iperf_via(
            ctx,
            outside,
            server,
            IPERF_PORT,
            ep,
            SocketAddr::new(server, IPERF_PORT),
            1,
            self.secs,
        )?;
        r.set(&family.key("tcp1_gbps"), gbps);
        r.set(&family.key("tcp1_retransmits"), retr);
        Ok(())
    }

    fn run_netpath(&self, ctx: &mut Ctx) -> Result<RunResult> {
        ctx.detail("building the topology");
        let mut r = RunResult::default();
        let outside = Ns::create(ctx, "s")?;
        let mut uplink = HostUplink::create(ctx, &outside, ctx.subnets.in_netns_24(33))?;
        uplink.add_v6(&outside, ctx.subnets.in_netns_64(33))?;
        let subnet = ctx.subnets.masq_netpath;
        let subnet6 = ctx.subnets.v6_64(V6_MASQ);
        let (network, refused) =
            NetpathNetwork::create_dual_or_v4(ctx, subnet, subnet6, &uplink.link.0)?;
        if let Some(why) = refused {
            r.v6_unavailable(&self.metrics(), &why);
        }
        let ep = Ns::create(ctx, "e")?;
        let endpoint = topo::netpath_endpoint(ctx, &network, &ep)?;
        let res = (|| -> Result<()> {
            self.measure(
                ctx,
                &ep,
                &outside,
                uplink.outside_ip.into(),
                uplink.host_ip.into(),
                &mut r,
            )?;
            if !r.unavailable.is_empty() {
                return Ok(());
            }
            let (Some(ip6), Some(host6), Some(out6)) =
                (endpoint.ip6, uplink.host_ip6, uplink.outside_ip6)
            else {
                r.v6_unavailable(&self.metrics(), "the endpoint got no IPv6 address");
                return Ok(());
            };
            // A route back, so that un-translated IPv6 still answers and is seen as such
            // (with NAT66 the outside only ever sees the uplink's on-link address).
            outside.ip(&[
                "-6",
                "route",
                "add",
                &subnet6.to_string(),
                "via",
                &host6.to_string(),
            ])?;
            match self.measure(ctx, &ep, &outside, out6.into(), host6.into(), &mut r) {
                Ok(()) => Ok(()),
                Err(e) => match e.downcast_ref::<Untranslated>() {
                    Some(u) => {
                        r.v6_unavailable(
                            &self.metrics(),
                            &format!("no NAT66 from the endpoint ({ip6}): {}", u.0),
                        );
                        Ok(())
                    }
                    None => Err(e),
                },
            }
        })();
        ctx.detail("removing the topology");
        drop(network);
        drop((ep, outside, uplink));
        res.map(|()| r)
    }

    fn run_iptables(&self, ctx: &mut Ctx) -> Result<RunResult> {
        ctx.detail("building the topology");
        let outside = Ns::create(ctx, "s")?;
        let mut router = Router::create(ctx, &outside, RouterNets::in_netns(ctx, 34, 35))?;
        let ep = Ns::create(ctx, "e")?;
        router.add_endpoint(ctx, &ep)?;
        let uplink = router.uplink_if.clone();
        for (family, subnet) in [
            (Family::V4, router.subnet.to_string()),
            (Family::V6, router.subnet6.to_string()),
        ] {
            router.iptables(
                family,
                &[
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-s",
                    &subnet,
                    "-o",
                    &uplink,
                    "-j",
                    "MASQUERADE",
                ],
            )?;
        }
        let mut r = RunResult::default();
        let res = self
            .measure(
                ctx,
                &ep,
                &outside,
                router.outside_ip.into(),
                router.uplink_ip.into(),
                &mut r,
            )
            .and_then(|()| {
                self.measure(
                    ctx,
                    &ep,
                    &outside,
                    router.outside_ip6.into(),
                    router.uplink_ip6.into(),
                    &mut r,
                )
            });
        ctx.detail("removing the topology");
        drop((ep, router, outside));
        res.map(|()| r)
    }
}

/// The traffic left with another source than the masquerade address, or did not get
/// through at all: for netpath's IPv6, the sign that NAT66 is not there (n/a).
#[derive(Debug)]
struct Untranslated(String);

impl std::fmt::Display for Untranslated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Untranslated {}

impl Scenario for MasqScenario {
    fn name(&self) -> &'static str {
        "masq"
    }

    fn title(&self) -> String {
        "Egress masquerade: throughput and new connections per second".into()
    }

    fn method(&self) -> String {
        format!(
            "A container endpoint connects to a server in another namespace (\"the \
             outside\") behind the network's uplink; the server sees the uplink's address. \
             New connections per second: {WORKERS} client threads in the endpoint make {n} \
             connections (connect, send {req} bytes, read {resp} bytes, read the server's \
             close, close; bounded at {b} s) after {WARMUP} warm-up connections; more than \
             1 % failed connections, or none completed, is FAILED. Throughput: `iperf3 -t {s} \
             -O 1`, 1 stream, endpoint → outside. Each run builds its topology afresh \
             (dual-stack) and measures IPv4, then the same over IPv6 (\"(IPv6)\" rows: NAT66 \
             against ip6tables MASQUERADE). A probe connection first checks that the outside \
             sees the masquerade address; netpath's IPv6 rows are n/a (with the reason) when \
             the daemon refuses the dual-stack network or the outside sees the endpoint's \
             own address or nothing (no NAT66 yet). Ratios are against iptables; the IPv6 \
             ÷ IPv4 table compares each variant's IPv6 ratio with its IPv4 one.",
            n = self.conns,
            req = connrate::REQUEST_LEN,
            resp = connrate::RESPONSE_LEN,
            b = self.conn_budget.as_secs(),
            s = self.secs,
        )
    }

    fn variants(&self) -> Vec<Variant> {
        vec![
            Variant {
                key: "netpath",
                label: "netpath",
                how: "a dual-stack netpath bridge network (bench daemon, host namespace) whose \
                      `--uplink` is a host veth (IPv4 and IPv6 addresses) into the outside \
                      namespace; one container endpoint (API); SNAT in BPF on the uplink's \
                      egress, reverse on its ingress."
                    .into(),
            },
            Variant {
                key: "iptables",
                label: "iptables / ip6tables MASQUERADE",
                how: "inside a router namespace the bench creates: uplink veth into the \
                      outside namespace, a Linux bridge with the gateways, the endpoint's veth on \
                      it, IPv4 and IPv6 forwarding on, `nat POSTROUTING -s SUBNET -o UPLINK -j \
                      MASQUERADE` in iptables and in ip6tables (the IPv6 subnet) \
                      (iptables-nft, conntrack)."
                    .into(),
            },
        ]
    }

    fn reference(&self) -> &'static str {
        "iptables"
    }

    fn metrics(&self) -> Vec<Metric> {
        Metric::with_v6(
            vec![
                Metric::new(
                    "tcp1_gbps",
                    "TCP throughput, 1 stream",
                    Unit::Gbps,
                    Better::Higher,
                ),
                Metric::new(
                    "conn_per_s",
                    "new connections/s",
                    Unit::ConnPerSec,
                    Better::Higher,
                ),
            ],
            |_| true,
        )
    }

    fn plots(
        &self,
        result: &super::report::ScenarioResult,
        dir: &std::path::Path,
    ) -> Result<Vec<(String, String)>> {
        Ok(super::plot::family_ratios(result, dir)?
            .into_iter()
            .collect())
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        match variant {
            "netpath" => self.run_netpath(ctx),
            "iptables" => self.run_iptables(ctx),
            other => bail!("unknown variant {other}"),
        }
    }
}
