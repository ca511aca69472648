//! `masq`: egress masquerade — an endpoint reaches a server in another namespace behind
//! the uplink, leaving with the uplink's address: TCP throughput and new connections per
//! second, netpath's BPF masquerade against iptables MASQUERADE.

use std::{net::SocketAddrV4, time::Duration};

use anyhow::{Result, bail};

use super::{
    Better, Ctx, Metric, Opts, RunResult, Scenario, Unit, Variant,
    connrate::{self, ConnStats},
    endpoint::iperf_via,
    topo::{self, HostUplink, NetpathNetwork, Ns, Router},
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

    /// Servers in `outside` on `server`, the client in `ep`.
    fn measure(
        &self,
        ctx: &mut Ctx,
        ep: &Ns,
        outside: &Ns,
        server: std::net::Ipv4Addr,
    ) -> Result<RunResult> {
        let mut r = RunResult::default();
        let target = SocketAddrV4::new(server, CONN_PORT);
        let _server = connrate::Server::start(&outside.path(), target, SERVER_THREADS)?;
        let conns = |ctx: &Ctx, total: usize, what: &str| -> Result<ConnStats> {
            ctx.check()?;
            ctx.detail(&format!("{total} connections, {what}"));
            let s = connrate::run_clients(&ep.path(), target, total, WORKERS, self.conn_budget)?;
            s.check(what)?;
            Ok(s)
        };
        conns(ctx, WARMUP, "warm-up (does traffic flow?)")?;
        let s = conns(ctx, self.conns, "measured")?;
        r.set("conn_per_s", s.rate());
        r.notes.extend(s.note("new connections"));
        ctx.check()?;
        ctx.detail(&format!("iperf3, 1 stream, {} s", self.secs));
        let (gbps, retr) = iperf_via(
            ctx,
            outside,
            server,
            IPERF_PORT,
            ep,
            SocketAddrV4::new(server, IPERF_PORT),
            1,
            self.secs,
        )?;
        r.set("tcp1_gbps", gbps);
        r.set("tcp1_retransmits", retr);
        Ok(r)
    }

    fn run_netpath(&self, ctx: &mut Ctx) -> Result<RunResult> {
        ctx.detail("building the topology");
        let outside = Ns::create(ctx, "s")?;
        let uplink = HostUplink::create(ctx, &outside, ctx.subnets.in_netns_24(33))?;
        let subnet = ctx.subnets.masq_netpath;
        let network = NetpathNetwork::create_with_uplink(ctx, subnet, Some(&uplink.link.0))?;
        let ep = Ns::create(ctx, "e")?;
        topo::netpath_endpoint(ctx, &network, &ep)?;
        let r = self.measure(ctx, &ep, &outside, uplink.outside_ip);
        ctx.detail("removing the topology");
        drop(network);
        drop((ep, outside, uplink));
        r
    }

    fn run_iptables(&self, ctx: &mut Ctx) -> Result<RunResult> {
        ctx.detail("building the topology");
        let outside = Ns::create(ctx, "s")?;
        let mut router = Router::create(
            ctx,
            &outside,
            ctx.subnets.in_netns_24(34),
            ctx.subnets.in_netns_24(35),
        )?;
        let ep = Ns::create(ctx, "e")?;
        router.add_endpoint(ctx, &ep)?;
        let subnet = router.subnet.to_string();
        let uplink = router.uplink_if.clone();
        router.iptables(&[
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
        ])?;
        let r = self.measure(ctx, &ep, &outside, router.outside_ip);
        ctx.detail("removing the topology");
        drop((ep, router, outside));
        r
    }
}

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
             -O 1`, 1 stream, endpoint → outside. Each run builds its topology afresh. Ratios \
             are against iptables.",
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
                how: "a netpath bridge network (bench daemon, host namespace) whose `--uplink` \
                      is a host veth into the outside namespace; one container endpoint (API); \
                      SNAT in BPF on the uplink's egress, reverse on its ingress."
                    .into(),
            },
            Variant {
                key: "iptables",
                label: "iptables MASQUERADE",
                how: "inside a router namespace the bench creates: uplink veth into the \
                      outside namespace, a Linux bridge with the gateway, the endpoint's veth on \
                      it, `ip_forward=1`, `nat POSTROUTING -s SUBNET -o UPLINK -j MASQUERADE` \
                      (iptables-nft, conntrack)."
                    .into(),
            },
        ]
    }

    fn reference(&self) -> &'static str {
        "iptables"
    }

    fn metrics(&self) -> Vec<Metric> {
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
        ]
    }

    fn run(&mut self, ctx: &mut Ctx, variant: &str, _round: usize) -> Result<RunResult> {
        match variant {
            "netpath" => self.run_netpath(ctx),
            "iptables" => self.run_iptables(ctx),
            other => bail!("unknown variant {other}"),
        }
    }
}
