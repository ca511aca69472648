//! Topology builders, each held by guards that remove it on drop: network namespaces
//! (one or many), host links, a bridge with a gateway address, and the three two-namespace
//! topologies traffic runs over — a direct veth pair, a Linux bridge, and a netpath
//! network with two container endpoints.
//!
//! Set-up shells out to `ip` (an independent implementation, like the test suite), except
//! for the netpath endpoints, which go through the daemon's API as an engine's would.

use std::{any::Any, net::Ipv4Addr, path::PathBuf, process::Command, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail};
use ipnet::Ipv4Net;
use netpath::{
    client::Client,
    model::{EndpointCreate, Mode, NetworkCreate},
};

use super::{
    Ctx,
    ctx::host,
    proc::{self, ip, ip_batch, ip_batch_force},
};

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
        let client = ctx.client()?;
        let name = ctx.name("p");
        let net = ctx
            .block_on(client.create_network(&NetworkCreate {
                name: name.clone(),
                subnet,
                mode: Mode::Bridge,
                gateway: None,
                subnet6: None,
                gateway6: None,
                uplink: uplink.map(str::to_owned),
                mtu: None,
                no_masquerade: Vec::new(),
            }))
            .map_err(|e| anyhow::anyhow!("netpath: create network {name}: {e}"))?;
        Ok(NetpathNetwork {
            name,
            gateway: net.gateway,
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

/// Two network namespaces that can reach each other at `a_ip` ↔ `b_ip`, plus whatever
/// joins them. Dropping it removes the joining infrastructure first, then the namespaces.
pub struct Pair {
    infra: Vec<Box<dyn Any>>,
    pub a: Ns,
    pub b: Ns,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
}

impl Pair {
    /// `a` and `b` joined by `infra` (dropped first).
    pub fn new(infra: Vec<Box<dyn Any>>, a: Ns, b: Ns, a_ip: Ipv4Addr, b_ip: Ipv4Addr) -> Pair {
        Pair {
            infra,
            a,
            b,
            a_ip,
            b_ip,
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Fields drop in declaration order after this; be explicit for the infra.
        self.infra.clear();
    }
}

fn two_namespaces(ctx: &mut Ctx) -> Result<(Ns, Ns)> {
    Ok((Ns::create(ctx, "a")?, Ns::create(ctx, "b")?))
}

/// The limit: a veth pair straight from one namespace into the other.
pub fn direct_veth(ctx: &mut Ctx) -> Result<Pair> {
    let (a, b) = two_namespaces(ctx)?;
    let net = ctx.subnets.in_netns_24(1);
    let (a_ip, b_ip) = (host(net, 0), host(net, 1));
    let (va, vb) = (ctx.name("v"), ctx.name("v"));
    ip(&[
        "link",
        "add",
        &va,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        &vb,
        "netns",
        b.name(),
    ])?;
    for (ns, dev, addr) in [(&a, &va, a_ip), (&b, &vb, b_ip)] {
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", dev])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok(Pair {
        infra: Vec::new(),
        a,
        b,
        a_ip,
        b_ip,
    })
}

/// Docker's and CNI's data path without iptables: each namespace's veth has its host end
/// on one Linux bridge.
pub fn linux_bridge(ctx: &mut Ctx) -> Result<Pair> {
    let (a, b) = two_namespaces(ctx)?;
    let net = ctx.subnets.in_netns_24(2);
    let (a_ip, b_ip) = (host(net, 0), host(net, 1));
    let br = Link(ctx.name("br"));
    ip(&["link", "add", &br.0, "type", "bridge"])?;
    ip(&["link", "set", &br.0, "up"])?;
    let mut infra: Vec<Box<dyn Any>> = vec![Box::new(br)];
    for (ns, addr) in [(&a, a_ip), (&b, b_ip)] {
        let (h, c) = (ctx.name("h"), ctx.name("c"));
        ip(&[
            "link",
            "add",
            &h,
            "type",
            "veth",
            "peer",
            "name",
            &c,
            "netns",
            ns.name(),
        ])?;
        let h = Link(h);
        let bridge = infra[0].downcast_ref::<Link>().expect("the bridge");
        ip(&["link", "set", &h.0, "master", &bridge.0, "up"])?;
        infra.push(Box::new(h));
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &c])?;
        ns.ip(&["link", "set", &c, "up"])?;
    }
    Ok(Pair {
        infra,
        a,
        b,
        a_ip,
        b_ip,
    })
}

/// netpath: a network of the bench's daemon with one container endpoint (via the API)
/// in each namespace.
pub fn netpath_pair(ctx: &mut Ctx) -> Result<Pair> {
    let (a, b) = two_namespaces(ctx)?;
    let network = NetpathNetwork::create(ctx, ctx.subnets.endpoint_netpath)?;
    let mut ips = Vec::new();
    for ns in [&a, &b] {
        let ep = ctx
            .block_on(network.client().add_endpoint(&EndpointCreate {
                network: network.name.clone(),
                netns: Some(ns.path()),
                pid: None,
                ip: None,
                ip6: None,
                ifname: None,
                mac: None,
                container_id: None,
            }))
            .map_err(|e| anyhow::anyhow!("netpath: add endpoint in {}: {e}", ns.name()))?;
        ips.push(ep.ip);
    }
    Ok(Pair {
        infra: vec![Box::new(network)],
        a,
        b,
        a_ip: ips[0],
        b_ip: ips[1],
    })
}

/// Pings `to` from namespace `ns`: up to 3 echo requests 0.2 s apart, any reply within
/// 2 s will do. On failure, says what the namespace's neighbor table and links show.
pub fn ping(ns: &str, to: Ipv4Addr) -> Result<()> {
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

/// A netpath endpoint (through the API) in `ns`: its id and address.
pub fn netpath_endpoint(
    ctx: &Ctx,
    network: &NetpathNetwork,
    ns: &Ns,
) -> Result<(String, Ipv4Addr)> {
    let ep = ctx
        .block_on(network.client().add_endpoint(&EndpointCreate {
            network: network.name.clone(),
            netns: Some(ns.path()),
            pid: None,
            ip: None,
            ip6: None,
            ifname: None,
            mac: None,
            container_id: None,
        }))
        .map_err(|e| anyhow::anyhow!("netpath: add endpoint in {}: {e}", ns.name()))?;
    Ok((ep.id, ep.ip))
}

/// An uplink on the host: a veth whose host end (`link`) has the first address of `net`
/// and whose other end, in `outside`, has the second. Deleted on drop (with `outside`).
pub struct HostUplink {
    pub link: Link,
    pub host_ip: Ipv4Addr,
    pub outside_ip: Ipv4Addr,
}

impl HostUplink {
    pub fn create(ctx: &mut Ctx, outside: &Ns, net: Ipv4Net) -> Result<HostUplink> {
        let (h, o) = (ctx.name("u"), ctx.name("x"));
        ip(&[
            "link",
            "add",
            &h,
            "type",
            "veth",
            "peer",
            "name",
            &o,
            "netns",
            outside.name(),
        ])?;
        let link = Link(h);
        let (host_ip, outside_ip) = (host(net, 0), host(net, 1));
        let len = net.prefix_len();
        ip(&["addr", "add", &format!("{host_ip}/{len}"), "dev", &link.0])?;
        ip(&["link", "set", &link.0, "up"])?;
        outside.ip(&["addr", "add", &format!("{outside_ip}/{len}"), "dev", &o])?;
        outside.ip(&["link", "set", &o, "up"])?;
        Ok(HostUplink {
            link,
            host_ip,
            outside_ip,
        })
    }
}

/// The iptables recipes' router, entirely inside namespaces the bench created (the host's
/// tables are never touched): a router namespace with an uplink (a veth to `outside`,
/// first address of `uplink_net` on the router's end, second on the outside's) and a
/// Linux bridge holding the gateway (first address of `subnet`), IPv4 forwarding on.
/// Endpoints join with [`Router::add_endpoint`]. Everything goes with the namespaces.
pub struct Router {
    pub ns: Ns,
    pub uplink_if: String,
    pub uplink_ip: Ipv4Addr,
    pub outside_ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub subnet: Ipv4Net,
    bridge: String,
    next_ep: u32,
}

impl Router {
    pub fn create(
        ctx: &mut Ctx,
        outside: &Ns,
        uplink_net: Ipv4Net,
        subnet: Ipv4Net,
    ) -> Result<Router> {
        let ns = Ns::create(ctx, "r")?;
        let (u, o, br) = (ctx.name("u"), ctx.name("x"), ctx.name("br"));
        ip(&[
            "link",
            "add",
            &u,
            "netns",
            ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            &o,
            "netns",
            outside.name(),
        ])?;
        let (uplink_ip, outside_ip) = (host(uplink_net, 0), host(uplink_net, 1));
        let len = uplink_net.prefix_len();
        ns.ip(&["addr", "add", &format!("{uplink_ip}/{len}"), "dev", &u])?;
        ns.ip(&["link", "set", &u, "up"])?;
        outside.ip(&["addr", "add", &format!("{outside_ip}/{len}"), "dev", &o])?;
        outside.ip(&["link", "set", &o, "up"])?;
        let gateway = host(subnet, 0);
        ns.ip(&["link", "add", &br, "type", "bridge"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{gateway}/{}", subnet.prefix_len()),
            "dev",
            &br,
        ])?;
        ns.ip(&["link", "set", &br, "up"])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(Router {
            ns,
            uplink_if: u,
            uplink_ip,
            outside_ip,
            gateway,
            subnet,
            bridge: br,
            next_ep: 1,
        })
    }

    /// Puts `ep` on the bridge (a veth, `eth0` inside) with the next address of the subnet
    /// and a default route via the gateway; returns the address.
    pub fn add_endpoint(&mut self, ctx: &mut Ctx, ep: &Ns) -> Result<Ipv4Addr> {
        let (h, c) = (ctx.name("h"), ctx.name("c"));
        ip(&[
            "link",
            "add",
            &h,
            "netns",
            self.ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            &c,
            "netns",
            ep.name(),
        ])?;
        self.ns
            .ip(&["link", "set", &h, "master", &self.bridge, "up"])?;
        let addr = host(self.subnet, self.next_ep);
        self.next_ep += 1;
        ep.ip(&["link", "set", &c, "name", "eth0"])?;
        ep.ip(&[
            "addr",
            "add",
            &format!("{addr}/{}", self.subnet.prefix_len()),
            "dev",
            "eth0",
        ])?;
        ep.ip(&["link", "set", "eth0", "up"])?;
        ep.ip(&["route", "add", "default", "via", &self.gateway.to_string()])?;
        Ok(addr)
    }

    /// `iptables-restore --noflush FILE` in the router's namespace (`rules`, a complete
    /// `*table … COMMIT` text, is written to `file` first and removed after).
    pub fn iptables_restore(&self, file: &std::path::Path, rules: &str) -> Result<()> {
        std::fs::write(file, rules).with_context(|| format!("cannot write {}", file.display()))?;
        let path = file.to_string_lossy().into_owned();
        let r = proc::run_ok(
            &mut self
                .ns
                .command_direct("iptables-restore", &["--noflush", &path])?,
            None,
            Duration::from_secs(120),
        );
        let _ = std::fs::remove_file(file);
        r.map(drop)
            .context("iptables-restore in the router namespace")
    }

    /// `iptables ARGS` in the router's namespace; must succeed.
    pub fn iptables(&self, args: &[&str]) -> Result<()> {
        proc::run_ok(
            &mut self.ns.command_direct("iptables", args)?,
            None,
            proc::CMD_TIMEOUT,
        )
        .map(drop)
    }
}
