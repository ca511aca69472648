//! Topology builders, each held by guards that remove it on drop: network namespaces
//! (one or many), host links, a bridge with a gateway address, and the three two-namespace
//! topologies traffic runs over — a direct veth pair, a Linux bridge, and a netpath
//! network with two container endpoints — all dual-stack (IPv6 beside IPv4, so that both
//! families are measured over the same topology in the same run).
//!
//! Set-up shells out to `ip` (an independent implementation, like the test suite), except
//! for the netpath endpoints, which go through the daemon's API as an engine's would.

use std::{
    any::Any,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ipnet::{Ipv4Net, Ipv6Net};
use netpath::{
    client::Client,
    model::{Endpoint, EndpointCreate, Mode, NetworkCreate},
};

use super::{
    Ctx, Family,
    ctx::{host, host6},
    proc::{self, ip, ip_batch, ip_batch_force},
};

/// Bound on waiting for IPv6 duplicate address detection to finish.
const DAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A named network namespace (`/run/netns/<name>`), deleted on drop (with its links).
pub struct Ns {
    name: String,
}

impl Ns {
    /// Creates `<prefix><role><n>` with loopback up.
    pub fn create(ctx: &mut Ctx, role: &str) -> Result<Ns> {
        let ns = Ns {
            name: ctx.name(role),
        };
        ip(&["netns", "add", &ns.name])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// `PROGRAM ARGS` run inside the namespace without `ip netns exec` (which also sets up
    /// a mount namespace and remounts /sys, milliseconds): the child enters the network
    /// namespace between fork and exec. For timed commands.
    pub fn command_direct(&self, program: &str, args: &[&str]) -> Result<Command> {
        use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
        let fd = std::os::fd::OwnedFd::from(
            std::fs::File::open(self.path())
                .with_context(|| format!("cannot open {}", self.path().display()))?,
        );
        let mut c = Command::new(program);
        c.args(args);
        // SAFETY: setns is async-signal-safe; `fd` lives in the closure, as long as `c`.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(c)
    }

    /// Adds `addr/len` to `dev` (IPv6 without duplicate address detection: the bench
    /// made every address of its namespaces, and a tentative address cannot be used).
    pub fn add_addr(&self, dev: &str, addr: IpAddr, len: u8) -> Result<()> {
        let cidr = format!("{addr}/{len}");
        match addr {
            IpAddr::V4(_) => self.ip(&["addr", "add", &cidr, "dev", dev]),
            IpAddr::V6(_) => self.ip(&["-6", "addr", "add", &cidr, "dev", dev, "nodad"]),
        }
        .map(drop)
    }

    /// Waits (bounded) until no IPv6 address of the namespace is tentative (duplicate
    /// address detection of addresses the bench did not add itself: link-local ones,
    /// netpath's).
    pub fn wait_dad(&self) -> Result<()> {
        let start = Instant::now();
        loop {
            if self
                .ip(&["-6", "addr", "show", "tentative"])?
                .trim()
                .is_empty()
            {
                return Ok(());
            }
            proc::check_interrupt()?;
            if start.elapsed() > DAD_TIMEOUT {
                bail!(
                    "IPv6 addresses in {} still tentative after {} s",
                    self.name,
                    DAD_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets a (per-namespace) sysctl, e.g. `net.ipv4.ip_forward`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        proc::run_ok(
            &mut self.command("sysctl", &["-q", "-w", &format!("{key}={value}")]),
            None,
            proc::CMD_TIMEOUT,
        )
        .map(drop)
    }

    /// `ip netns exec <ns> PROGRAM ARGS`, not yet started.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = proc::run_bounded(
            Command::new("ip").args(["netns", "del", &self.name]),
            None,
            proc::CMD_TIMEOUT,
        );
    }
}

/// Many network namespaces at once (`ip -batch`), deleted together on drop.
pub struct NsSet {
    pub names: Vec<String>,
}

impl NsSet {
    pub fn create(ctx: &mut Ctx, role: &str, n: usize) -> Result<NsSet> {
        let set = NsSet {
            names: (0..n).map(|_| ctx.name(role)).collect(),
        };
        let lines: Vec<String> = set.names.iter().map(|n| format!("netns add {n}")).collect();
        ip_batch(&lines, Duration::from_secs(120)).context("creating network namespaces")?;
        Ok(set)
    }

    pub fn path(&self, i: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.names[i])
    }
}

impl Drop for NsSet {
    fn drop(&mut self) {
        let lines: Vec<String> = self
            .names
            .iter()
            .map(|n| format!("netns del {n}"))
            .collect();
        ip_batch_force(&lines, Duration::from_secs(300));
    }
}

/// A host link, deleted on drop.
pub struct Link(pub String);

impl Drop for Link {
    fn drop(&mut self) {
        let _ = proc::run_bounded(
            Command::new("ip").args(["link", "del", &self.0]),
            None,
            proc::CMD_TIMEOUT,
        );
    }
}

/// A locally administered MAC with the bench's `02:6e:62` ("nb") prefix.
pub fn bench_mac(n: u32) -> String {
    let b = n.to_be_bytes();
    format!("02:6e:62:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3])
}

/// A Linux bridge with the first host of `subnet` as its address, up, and a fixed MAC
/// (a bridge's MAC otherwise follows its ports, which would break permanent gateway
/// neighbor entries).
pub struct GatewayBridge {
    pub link: Link,
    pub gateway: Ipv4Addr,
    pub mac: String,
}

impl GatewayBridge {
    pub fn create(ctx: &mut Ctx, subnet: Ipv4Net) -> Result<GatewayBridge> {
        let name = ctx.name("br");
        let mac = bench_mac(std::process::id() ^ 0x5a5a);
        ip(&["link", "add", &name, "address", &mac, "type", "bridge"])?;
        let link = Link(name);
        let gateway = host(subnet, 0);
        ip(&[
            "addr",
            "add",
            &format!("{gateway}/{}", subnet.prefix_len()),
            "dev",
            &link.0,
        ])?;
        ip(&["link", "set", &link.0, "up"])?;
        Ok(GatewayBridge { link, gateway, mac })
    }
}

/// Bound on removing a network with all its endpoints (1000 in `setup`).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(600);

/// A netpath network of the bench's daemon, removed (with its endpoints) on drop.
pub struct NetpathNetwork {
    pub name: String,
    pub gateway: Ipv4Addr,
    client: Client,
    rt: Arc<tokio::runtime::Runtime>,
}

impl NetpathNetwork {
    pub fn create(ctx: &mut Ctx, subnet: Ipv4Net) -> Result<NetpathNetwork> {
        Self::create_with_uplink(ctx, subnet, None)
    }

    /// A network whose masquerade and published ports use `uplink` (a host link).
    pub fn create_with_uplink(
        ctx: &mut Ctx,
        subnet: Ipv4Net,
        uplink: Option<&str>,
    ) -> Result<NetpathNetwork> {
        Self::create_dual(ctx, subnet, None, uplink)
    }

    /// A dual-stack network with `uplink`, or, if the daemon refuses one (a daemon
    /// without NAT66 may), an IPv4-only one and why the dual-stack one was refused.
    pub fn create_dual_or_v4(
        ctx: &mut Ctx,
        subnet: Ipv4Net,
        subnet6: Ipv6Net,
        uplink: &str,
    ) -> Result<(NetpathNetwork, Option<String>)> {
        match Self::create_dual(ctx, subnet, Some(subnet6), Some(uplink)) {
            Ok(n) => Ok((n, None)),
            Err(e) => {
                let why = format!("the daemon refused a dual-stack network with an uplink: {e:#}");
                Ok((
                    Self::create_with_uplink(ctx, subnet, Some(uplink))?,
                    Some(why),
                ))
            }
        }
    }

    /// A network with an IPv6 `subnet6` too (dual-stack) when given.
    pub fn create_dual(
        ctx: &mut Ctx,
        subnet: Ipv4Net,
        subnet6: Option<Ipv6Net>,
        uplink: Option<&str>,
    ) -> Result<NetpathNetwork> {
        let client = ctx.client()?;
        let name = ctx.name("p");
        let net = ctx
            .block_on(client.create_network(&NetworkCreate {
                name: name.clone(),
                subnet: Some(subnet),
                mode: Mode::Bridge,
                gateway: None,
                subnet6,
                gateway6: None,
                uplink: uplink.map(str::to_owned),
                mtu: None,
                no_masquerade: Vec::new(),
                policy: Default::default(),
                profile: None,
            }))
            .map_err(|e| anyhow::anyhow!("netpath: create network {name}: {e}"))?;
        Ok(NetpathNetwork {
            name,
            gateway: net
                .gateway
                .context("a network with an IPv4 subnet has an IPv4 gateway")?,
            client,
            rt: ctx.rt.clone(),
        })
    }

    /// A guard for network `name` of the bench's daemon that something else (the CNI
    /// plugin) creates: removed on drop like the others (nothing happens if it was never
    /// made).
    pub fn adopt(ctx: &mut Ctx, name: String, gateway: Ipv4Addr) -> Result<NetpathNetwork> {
        Ok(NetpathNetwork {
            name,
            gateway,
            client: ctx.client()?,
            rt: ctx.rt.clone(),
        })
    }

    /// The client, with room for removing a network with many endpoints.
    fn remover(&self) -> Client {
        self.client.clone().with_timeout(REMOVE_TIMEOUT)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Removes the network and its endpoints now.
    pub fn remove(self) -> Result<()> {
        let r = self
            .rt
            .block_on(self.client.remove_network(&self.name, true));
        std::mem::forget(self);
        r.map(drop)
            .map_err(|e| anyhow::anyhow!("netpath: remove network: {e}"))
    }
}

impl Drop for NetpathNetwork {
    fn drop(&mut self) {
        let _ = self
            .rt
            .block_on(self.remover().remove_network(&self.name, true));
    }
}

/// Two network namespaces that can reach each other at `a_ip` ↔ `b_ip` and, when
/// dual-stack, `a_ip6` ↔ `b_ip6`, plus whatever joins them. Dropping it removes the
/// joining infrastructure first, then the namespaces.
pub struct Pair {
    infra: Vec<Box<dyn Any>>,
    pub a: Ns,
    pub b: Ns,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
    pub a_ip6: Option<Ipv6Addr>,
    pub b_ip6: Option<Ipv6Addr>,
    /// Host devices whose tc programs are the path between the two (netpath's endpoint
    /// devices, the floor's host ends): the programs whose cost is measured.
    pub prog_devs: Vec<String>,
}

impl Pair {
    /// `a` and `b` joined by `infra` (dropped first), IPv4 only.
    pub fn new(infra: Vec<Box<dyn Any>>, a: Ns, b: Ns, a_ip: Ipv4Addr, b_ip: Ipv4Addr) -> Pair {
        Pair {
            infra,
            a,
            b,
            a_ip,
            b_ip,
            a_ip6: None,
            b_ip6: None,
            prog_devs: Vec::new(),
        }
    }

    /// With IPv6 addresses `a_ip6` ↔ `b_ip6` too (dual-stack).
    pub fn with_v6(mut self, a_ip6: Option<Ipv6Addr>, b_ip6: Option<Ipv6Addr>) -> Pair {
        (self.a_ip6, self.b_ip6) = (a_ip6, b_ip6);
        self
    }

    /// With the host devices whose tc programs are the path ([`Pair::prog_devs`]).
    pub fn with_prog_devs(mut self, devs: Vec<String>) -> Pair {
        self.prog_devs = devs;
        self
    }

    /// The server's (`b`'s) address over `family`; `None` for IPv6 on an IPv4-only pair.
    pub fn b_addr(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => Some(self.b_ip.into()),
            Family::V6 => self.b_ip6.map(IpAddr::from),
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Fields drop in declaration order after this; be explicit for the infra.
        self.infra.clear();
    }
}

/// A veth pair: end `a` in `a_ns` (the host namespace when `None`), end `b` in `b_ns`.
pub fn veth(a: &str, a_ns: Option<&Ns>, b: &str, b_ns: &Ns) -> Result<()> {
    let mut args = vec!["link", "add", a];
    if let Some(ns) = a_ns {
        args.extend(["netns", ns.name()]);
    }
    args.extend(["type", "veth", "peer", "name", b, "netns", b_ns.name()]);
    ip(&args).map(drop)
}

fn two_namespaces(ctx: &mut Ctx) -> Result<(Ns, Ns)> {
    Ok((Ns::create(ctx, "a")?, Ns::create(ctx, "b")?))
}

/// The limit: a veth pair straight from one namespace into the other.
pub fn direct_veth(ctx: &mut Ctx) -> Result<Pair> {
    let (a, b) = two_namespaces(ctx)?;
    let (net, net6) = (ctx.subnets.in_netns_24(1), ctx.subnets.in_netns_64(1));
    let (a_ip, b_ip) = (host(net, 0), host(net, 1));
    let (a_ip6, b_ip6) = (host6(net6, 0), host6(net6, 1));
    let (va, vb) = (ctx.name("v"), ctx.name("v"));
    veth(&va, Some(&a), &vb, &b)?;
    for (ns, dev, addr, addr6) in [(&a, &va, a_ip, a_ip6), (&b, &vb, b_ip, b_ip6)] {
        ns.add_addr(dev, addr.into(), 24)?;
        ns.add_addr(dev, addr6.into(), 64)?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(Pair::new(Vec::new(), a, b, a_ip, b_ip).with_v6(Some(a_ip6), Some(b_ip6)))
}

/// Docker's and CNI's data path without iptables: each namespace's veth has its host end
/// on one Linux bridge.
pub fn linux_bridge(ctx: &mut Ctx) -> Result<Pair> {
    let (a, b) = two_namespaces(ctx)?;
    let (net, net6) = (ctx.subnets.in_netns_24(2), ctx.subnets.in_netns_64(2));
    let (a_ip, b_ip) = (host(net, 0), host(net, 1));
    let (a_ip6, b_ip6) = (host6(net6, 0), host6(net6, 1));
    let br = Link(ctx.name("br"));
    ip(&["link", "add", &br.0, "type", "bridge"])?;
    ip(&["link", "set", &br.0, "up"])?;
    let mut infra: Vec<Box<dyn Any>> = vec![Box::new(br)];
    for (ns, addr, addr6) in [(&a, a_ip, a_ip6), (&b, b_ip, b_ip6)] {
        let (h, c) = (ctx.name("h"), ctx.name("c"));
        veth(&h, None, &c, ns)?;
        let h = Link(h);
        let bridge = infra[0].downcast_ref::<Link>().expect("the bridge");
        ip(&["link", "set", &h.0, "master", &bridge.0, "up"])?;
        infra.push(Box::new(h));
        ns.add_addr(&c, addr.into(), 24)?;
        ns.add_addr(&c, addr6.into(), 64)?;
        ns.ip(&["link", "set", &c, "up"])?;
    }
    Ok(Pair::new(infra, a, b, a_ip, b_ip).with_v6(Some(a_ip6), Some(b_ip6)))
}

/// netpath: a dual-stack network of the bench's daemon with one container endpoint (via
/// the API) in each namespace.
pub fn netpath_pair(ctx: &mut Ctx) -> Result<Pair> {
    Ok(netpath_pair_endpoints(ctx)?.0)
}

/// [`netpath_pair`], with the two endpoints as the daemon describes them.
pub fn netpath_pair_endpoints(ctx: &mut Ctx) -> Result<(Pair, [Endpoint; 2])> {
    let (a, b) = two_namespaces(ctx)?;
    let subnet6 = ctx.subnets.v6_64(super::ctx::V6_ENDPOINT);
    let network =
        NetpathNetwork::create_dual(ctx, ctx.subnets.endpoint_netpath, Some(subnet6), None)?;
    let (ea, eb) = (
        netpath_endpoint(ctx, &network, &a)?,
        netpath_endpoint(ctx, &network, &b)?,
    );
    let v4 = |e: &Endpoint| e.ip.context("an endpoint has no IPv4 address");
    let pair = Pair::new(vec![Box::new(network)], a, b, v4(&ea)?, v4(&eb)?)
        .with_v6(ea.ip6, eb.ip6)
        .with_prog_devs(vec![ea.host_ifname.clone(), eb.host_ifname.clone()]);
    Ok((pair, [ea, eb]))
}

/// Pings `to` (either family) from namespace `ns`: up to 3 echo requests 0.2 s apart,
/// any reply within 2 s will do. On failure, says what the namespace's neighbor table and
/// links show.
pub fn ping(ns: &str, to: impl Into<IpAddr>) -> Result<()> {
    let to: IpAddr = to.into();
    let to_s = to.to_string();
    let out = proc::run_bounded(
        Command::new("ip").args([
            "netns", "exec", ns, "ping", "-q", "-n", "-c", "3", "-i", "0.2", "-W", "2", &to_s,
        ]),
        None,
        Duration::from_secs(10),
    )?;
    if out.status.success() {
        return Ok(());
    }
    let neigh = proc::ip(&["-n", ns, "neigh", "show", &to_s]).unwrap_or_default();
    let links = proc::ip(&["-n", ns, "-br", "link"]).unwrap_or_default();
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    bail!(
        "no ping reply from {to} in namespace {ns} (3 tries); neighbor entry: {}; links: {}",
        if neigh.trim().is_empty() {
            "none".to_owned()
        } else {
            flat(&neigh)
        },
        flat(&links)
    )
}

/// A netpath endpoint (through the API) in `ns`, as the daemon describes it (id,
/// addresses, host device).
pub fn netpath_endpoint(ctx: &Ctx, network: &NetpathNetwork, ns: &Ns) -> Result<Endpoint> {
    ctx.block_on(network.client().add_endpoint(&EndpointCreate {
        network: network.name.clone(),
        netns: Some(ns.path()),
        pid: None,
        ip: None,
        ip6: None,
        ifname: None,
        mac: None,
        container_id: None,
        peer: None,
    }))
    .map_err(|e| anyhow::anyhow!("netpath: add endpoint in {}: {e}", ns.name()))
}
