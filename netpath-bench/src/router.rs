//! The NAT scenarios' outside world: a host uplink into an "outside" namespace (for
//! netpath's `--uplink`) and the iptables recipes' router namespace (uplink, bridge,
//! gateways, forwarding, iptables/ip6tables rules), both dual-stack, both gone with the
//! namespaces they live in.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{Context as _, Result};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{
    Ctx, Family,
    ctx::{host, host6},
    proc::{self, ip},
    topo::{Link, Ns, veth},
};

/// An uplink on the host: a veth whose host end (`link`) has the first address of `net`
/// and whose other end, in `outside`, has the second; the same for IPv6 after
/// [`HostUplink::add_v6`]. Deleted on drop (with `outside`).
pub struct HostUplink {
    pub link: Link,
    pub host_ip: Ipv4Addr,
    pub outside_ip: Ipv4Addr,
    pub host_ip6: Option<Ipv6Addr>,
    pub outside_ip6: Option<Ipv6Addr>,
    outside_if: String,
}

impl HostUplink {
    pub fn create(ctx: &mut Ctx, outside: &Ns, net: Ipv4Net) -> Result<HostUplink> {
        let (h, o) = (ctx.name("u"), ctx.name("x"));
        veth(&h, None, &o, outside)?;
        let link = Link(h);
        let (host_ip, outside_ip) = (host(net, 0), host(net, 1));
        let len = net.prefix_len();
        ip(&["addr", "add", &format!("{host_ip}/{len}"), "dev", &link.0])?;
        ip(&["link", "set", &link.0, "up"])?;
        outside.add_addr(&o, outside_ip.into(), len)?;
        outside.ip(&["link", "set", &o, "up"])?;
        Ok(HostUplink {
            link,
            host_ip,
            outside_ip,
            host_ip6: None,
            outside_ip6: None,
            outside_if: o,
        })
    }

    /// Gives both ends the first and second address of `net6` too.
    pub fn add_v6(&mut self, outside: &Ns, net6: Ipv6Net) -> Result<()> {
        let (h6, o6) = (host6(net6, 0), host6(net6, 1));
        let len = net6.prefix_len();
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{h6}/{len}"),
            "dev",
            &self.link.0,
            "nodad",
        ])?;
        outside.add_addr(&self.outside_if, o6.into(), len)?;
        (self.host_ip6, self.outside_ip6) = (Some(h6), Some(o6));
        Ok(())
    }
}

/// The iptables recipes' router, entirely inside namespaces the bench created (the host's
/// tables are never touched), dual-stack: a router namespace with an uplink (a veth to
/// `outside`, first address of `uplink_net` / `uplink_net6` on the router's end, second on
/// the outside's) and a Linux bridge holding the gateways (first address of `subnet` and
/// of `subnet6`), IPv4 and IPv6 forwarding on. Endpoints join with
/// [`Router::add_endpoint`]. Everything goes with the namespaces.
pub struct Router {
    pub ns: Ns,
    pub uplink_if: String,
    pub uplink_ip: Ipv4Addr,
    pub outside_ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub uplink_ip6: Ipv6Addr,
    pub outside_ip6: Ipv6Addr,
    pub gateway6: Ipv6Addr,
    pub subnet6: Ipv6Net,
    bridge: String,
    next_ep: u32,
}

/// The address plan of a [`Router`]: its uplink's and its endpoints' subnets, per family.
pub struct RouterNets {
    pub uplink: Ipv4Net,
    pub subnet: Ipv4Net,
    pub uplink6: Ipv6Net,
    pub subnet6: Ipv6Net,
}

impl RouterNets {
    /// The /24s `uplink` and `subnet` of [`super::ctx::Subnets::in_netns`] and their
    /// IPv6 /64s.
    pub fn in_netns(ctx: &Ctx, uplink: u8, subnet: u8) -> RouterNets {
        let s = &ctx.subnets;
        RouterNets {
            uplink: s.in_netns_24(uplink),
            subnet: s.in_netns_24(subnet),
            uplink6: s.in_netns_64(uplink),
            subnet6: s.in_netns_64(subnet),
        }
    }
}

impl Router {
    pub fn create(ctx: &mut Ctx, outside: &Ns, nets: RouterNets) -> Result<Router> {
        let ns = Ns::create(ctx, "r")?;
        let (u, o, br) = (ctx.name("u"), ctx.name("x"), ctx.name("br"));
        veth(&u, Some(&ns), &o, outside)?;
        let (uplink_ip, outside_ip) = (host(nets.uplink, 0), host(nets.uplink, 1));
        let (uplink_ip6, outside_ip6) = (host6(nets.uplink6, 0), host6(nets.uplink6, 1));
        let (len, len6) = (nets.uplink.prefix_len(), nets.uplink6.prefix_len());
        ns.add_addr(&u, uplink_ip.into(), len)?;
        ns.add_addr(&u, uplink_ip6.into(), len6)?;
        ns.ip(&["link", "set", &u, "up"])?;
        outside.add_addr(&o, outside_ip.into(), len)?;
        outside.add_addr(&o, outside_ip6.into(), len6)?;
        outside.ip(&["link", "set", &o, "up"])?;
        let (gateway, gateway6) = (host(nets.subnet, 0), host6(nets.subnet6, 0));
        ns.ip(&["link", "add", &br, "type", "bridge"])?;
        ns.add_addr(&br, gateway.into(), nets.subnet.prefix_len())?;
        ns.add_addr(&br, gateway6.into(), nets.subnet6.prefix_len())?;
        ns.ip(&["link", "set", &br, "up"])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        Ok(Router {
            ns,
            uplink_if: u,
            uplink_ip,
            outside_ip,
            gateway,
            subnet: nets.subnet,
            uplink_ip6,
            outside_ip6,
            gateway6,
            subnet6: nets.subnet6,
            bridge: br,
            next_ep: 1,
        })
    }

    /// Puts `ep` on the bridge (a veth, `eth0` inside) with the next address of each
    /// subnet and default routes via the gateways; returns the addresses.
    pub fn add_endpoint(&mut self, ctx: &mut Ctx, ep: &Ns) -> Result<(Ipv4Addr, Ipv6Addr)> {
        let (h, c) = (ctx.name("h"), ctx.name("c"));
        veth(&h, Some(&self.ns), &c, ep)?;
        self.ns
            .ip(&["link", "set", &h, "master", &self.bridge, "up"])?;
        let addr = host(self.subnet, self.next_ep);
        let addr6 = host6(self.subnet6, self.next_ep);
        self.next_ep += 1;
        ep.ip(&["link", "set", &c, "name", "eth0"])?;
        ep.add_addr("eth0", addr.into(), self.subnet.prefix_len())?;
        ep.add_addr("eth0", addr6.into(), self.subnet6.prefix_len())?;
        ep.ip(&["link", "set", "eth0", "up"])?;
        ep.ip(&["route", "add", "default", "via", &self.gateway.to_string()])?;
        ep.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &self.gateway6.to_string(),
        ])?;
        Ok((addr, addr6))
    }

    /// `iptables-restore --noflush FILE` (`ip6tables-restore` for IPv6) in the router's
    /// namespace (`rules`, a complete `*table … COMMIT` text, is written to `file` first
    /// and removed after).
    pub fn iptables_restore(
        &self,
        family: Family,
        file: &std::path::Path,
        rules: &str,
    ) -> Result<()> {
        std::fs::write(file, rules).with_context(|| format!("cannot write {}", file.display()))?;
        let path = file.to_string_lossy().into_owned();
        let program = format!("{}-restore", iptables_for(family));
        let r = proc::run_ok(
            &mut self.ns.command_direct(&program, &["--noflush", &path])?,
            None,
            Duration::from_secs(120),
        );
        let _ = std::fs::remove_file(file);
        r.map(drop)
            .with_context(|| format!("{program} in the router namespace"))
    }

    /// `iptables ARGS` (`ip6tables` for IPv6) in the router's namespace; must succeed.
    pub fn iptables(&self, family: Family, args: &[&str]) -> Result<()> {
        proc::run_ok(
            &mut self.ns.command_direct(iptables_for(family), args)?,
            None,
            proc::CMD_TIMEOUT,
        )
        .map(drop)
    }
}

/// The iptables program of `family`.
pub fn iptables_for(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}
