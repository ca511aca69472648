//! Recording fakes of the control plane's seams, for unit tests without root.
//!
//! One [`World`] stands for the kernel: links, addresses, routes, neighbours, the
//! container ends of veth pairs, and the datapath's attachments and map entries.
//! [`FakeHost`] and [`FakeMaps`] share it. Every call that changes something is
//! recorded in `World::calls` as one line (`delete_link 12`); a test can make the
//! call at position k fail (`World::fail_at`), then read the undo calls that follow it.
//! Reads (`link_by_name`, `links`, …) are answered from the model and not recorded.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use futures::{FutureExt, future::BoxFuture};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netpath_common::{
    maps::{
        DropReason, ENDPOINT_FLAG_NO_IPV4, ENDPOINT_FLAG_PUBLISHED, EndpointValue, Hook,
        NetworkValue, POLICY_FLAGS,
    },
    nat::{NatTarget, NatTarget6, PublishKey, PublishKey6, Uplink, Uplink6},
};

use super::host::{Host, HostFuture, MapWrite, Maps};
use crate::{
    datapath::{Attachment, DatapathError, EndpointStat, Origin},
    model::{Endpoint, StatsReport},
    netlink::{Link, LinkConfig, NetlinkError},
    portspec::Proto,
    sandbox::{Inner, NamespaceSide, SandboxError, VethPlan},
    sysctl::SysctlError,
    tap::{TapError, TapOp, TapSpec},
};

/// A [`Service`](super::Service) over a fresh fake [`World`] and a state database in a
/// temporary directory (dropped with the returned guard).
pub fn service() -> (super::Service, Arc<Mutex<World>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = crate::config::Paths {
        state_dir: dir.path().join("state"),
        socket: dir.path().join("api.sock"),
        bpffs: dir.path().join("bpf"),
    };
    std::fs::create_dir_all(&paths.state_dir).expect("state dir");
    let store = crate::state::Store::open(&paths.state_dir.join("state.redb")).expect("store");
    let world = World::new();
    let svc = super::Service::new(
        paths,
        Arc::new(store),
        Arc::new(FakeHost(world.clone())),
        Box::new(FakeMaps(world.clone())),
        super::EPHEMERAL_PORTS,
    );
    (svc, world, dir)
}

/// The kernel side the control plane can see and change: compared whole before and
/// after an operation that failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    pub links: BTreeMap<u32, Link>,
    pub addrs: BTreeSet<(u32, IpAddr, u8)>,
    pub routes: BTreeSet<(IpNet, Option<IpAddr>, Option<u32>)>,
    pub neighbours: BTreeSet<(u32, IpAddr, [u8; 6])>,
    /// Container ends of veth pairs: host-end ifindex → (namespace, name, configured).
    pub peers: BTreeMap<u32, (PathBuf, String, bool)>,
    /// Pinned tc attachments: (hook, ifindex).
    pub pins: BTreeSet<(&'static str, u32)>,
    /// Endpoint tc filters (unpinned; they die with their device): ifindex.
    pub filters: BTreeSet<u32>,
    /// By the endpoint's IPv4 address, or its IPv6 one if it has none.
    pub endpoints: BTreeMap<IpAddr, EndpointValue>,
    /// A dual-stack endpoint's IPv6 address → its key in `endpoints`.
    pub endpoints6: BTreeMap<Ipv6Addr, IpAddr>,
    pub uplinks: BTreeMap<u32, Uplink>,
    pub uplinks6: BTreeMap<u32, Uplink6>,
    pub masq: BTreeMap<Ipv4Net, u16>,
    pub masq6: BTreeMap<Ipv6Net, u16>,
    pub no_masq: BTreeMap<u16, Vec<IpNet>>,
    pub publish: BTreeMap<(u8, [u8; 4], u16), NatTarget>,
    pub publish6: BTreeMap<(u8, [u8; 16], u16), NatTarget6>,
    /// Bridge ports with the `isolated` flag: ifindex.
    pub isolated_ports: BTreeSet<u32>,
    /// Bridges with private-VLAN proxy ARP, by name (a sysctl: it goes with the bridge).
    pub private_vlans: BTreeSet<String>,
    /// Network policy entries: network id → its gateways.
    pub networks: BTreeMap<u16, NetworkValue>,
    /// Egress rules: network id → (CIDR, deny or allow), as written.
    pub egress: BTreeMap<u16, Vec<(IpNet, u8)>>,
    /// Host access: network id → the ports it may still reach.
    pub host_access: BTreeMap<u16, Vec<(u8, u16)>>,
}

impl Kernel {
    /// As the real datapath: the endpoint at `ip` (either family), if any, gets the
    /// published flag.
    fn mark(&mut self, ip: IpAddr) {
        let key = match ip {
            IpAddr::V6(v6) => self.endpoints6.get(&v6).copied().unwrap_or(ip),
            IpAddr::V4(_) => ip,
        };
        if let Some(v) = self.endpoints.get_mut(&key) {
            v.flags |= ENDPOINT_FLAG_PUBLISHED;
        }
    }
}

#[derive(Debug, Default)]
pub struct World {
    pub kernel: Kernel,
    /// Every changing call so far, in order.
    pub calls: Vec<String>,
    /// The position in `calls` of the call that fails.
    pub fail_at: Option<usize>,
    /// `create_tap` finds its name taken (a device made since the service checked).
    pub tap_name_race: bool,
    /// Namespace files that exist, with their inode.
    pub namespaces: BTreeMap<PathBuf, u64>,
    /// The host's main routing table: (device, destination).
    pub host_routes: Vec<(String, IpNet)>,
    /// Host sockets holding ports: (protocol, port).
    pub busy_ports: BTreeSet<(Proto, u16)>,
    next_index: u32,
}

/// The host's own devices in every fake world: `lo` and an uplink `eth0` with
/// 192.0.2.10/24 (TEST-NET-1) and the default route.
pub const UPLINK: &str = "eth0";
pub const UPLINK_INDEX: u32 = 2;
pub const UPLINK_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// A namespace path the fake knows.
pub const NETNS: &str = "/run/netns/fake";

impl World {
    pub fn new() -> Arc<Mutex<World>> {
        let mut w = World {
            next_index: 10,
            ..Default::default()
        };
        w.kernel.links.insert(
            1,
            Link {
                index: 1,
                name: "lo".into(),
                alias: None,
                mac: None,
                master: None,
                loopback: true,
            },
        );
        w.kernel.links.insert(
            UPLINK_INDEX,
            Link {
                index: UPLINK_INDEX,
                name: UPLINK.into(),
                alias: None,
                mac: Some([0x52, 0x54, 0, 0, 0, 2]),
                master: None,
                loopback: false,
            },
        );
        w.kernel
            .addrs
            .insert((UPLINK_INDEX, UPLINK_ADDR.into(), 24));
        w.host_routes = vec![
            (UPLINK.into(), "0.0.0.0/0".parse().expect("net")),
            (UPLINK.into(), "192.0.2.0/24".parse().expect("net")),
            (UPLINK.into(), "::/0".parse().expect("net")),
            (UPLINK.into(), "2001:db8:1::/48".parse().expect("net")),
        ];
        w.namespaces.insert(NETNS.into(), 4026532999);
        Arc::new(Mutex::new(w))
    }

    /// Records changing call `call`; fails it if it is the one to fail.
    fn step(&mut self, call: String) -> Result<(), String> {
        let at = self.calls.len();
        self.calls.push(call.clone());
        if self.fail_at == Some(at) {
            return Err(call);
        }
        Ok(())
    }

    /// A new device's ifindex and MAC.
    pub fn new_link(&mut self, name: &str, master: Option<u32>) -> Link {
        let index = self.next_index;
        self.next_index += 1;
        let link = Link {
            index,
            name: name.to_owned(),
            alias: None,
            mac: Some([0x02, 0, 0, 0, 0, index as u8]),
            master,
            loopback: false,
        };
        self.kernel.links.insert(index, link.clone());
        link
    }

    fn by_name(&self, name: &str) -> Option<Link> {
        self.kernel.links.values().find(|l| l.name == name).cloned()
    }

    /// What deleting a device does in the kernel: its addresses, routes, neighbours,
    /// tc filters and veth peer go with it; its bridge ports lose their master.
    pub fn delete(&mut self, index: u32) {
        if let Some(link) = self.kernel.links.remove(&index) {
            self.kernel.private_vlans.remove(&link.name);
        }
        self.kernel.addrs.retain(|a| a.0 != index);
        self.kernel.routes.retain(|r| r.2 != Some(index));
        self.kernel.neighbours.retain(|n| n.0 != index);
        self.kernel.filters.remove(&index);
        self.kernel.peers.remove(&index);
        self.kernel.isolated_ports.remove(&index);
        for l in self.kernel.links.values_mut() {
            if l.master == Some(index) {
                l.master = None;
            }
        }
    }
}

fn lock(w: &Mutex<World>) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

fn nl_err(call: String) -> NetlinkError {
    NetlinkError {
        op: "injected failure",
        target: call,
        source: io::Error::from_raw_os_error(libc::EIO),
    }
}

fn dp_err(call: String) -> DatapathError {
    DatapathError::WriteMap {
        map: "injected failure",
        source: aya::maps::MapError::InvalidName { name: call },
    }
}

fn ready<'a, T: Send + 'a, E: Send + 'a>(r: Result<T, E>) -> BoxFuture<'a, Result<T, E>> {
    futures::future::ready(r).boxed()
}

pub struct FakeHost(pub Arc<Mutex<World>>);

impl FakeHost {
    /// Records `call`, then applies `f` to the world unless the call is to fail.
    fn change<T>(&self, call: String, f: impl FnOnce(&mut World) -> T) -> Result<T, NetlinkError> {
        let mut w = lock(&self.0);
        w.step(call).map_err(nl_err)?;
        Ok(f(&mut w))
    }
}

impl Host for FakeHost {
    fn link_by_name<'a>(&'a self, name: &'a str) -> HostFuture<'a, Option<Link>> {
        ready(Ok(lock(&self.0).by_name(name)))
    }
    fn links(&self) -> HostFuture<'_, Vec<Link>> {
        ready(Ok(lock(&self.0).kernel.links.values().cloned().collect()))
    }
    fn ipv4_addresses(&self, index: u32) -> HostFuture<'_, Vec<(Ipv4Addr, u8)>> {
        let w = lock(&self.0);
        let addrs = w.kernel.addrs.iter().filter(|a| a.0 == index);
        let v4 = addrs.filter_map(|&(_, a, prefix)| match a {
            IpAddr::V4(a) => Some((a, prefix)),
            IpAddr::V6(_) => None,
        });
        ready(Ok(v4.collect()))
    }
    fn all_addresses(&self) -> HostFuture<'_, Vec<IpAddr>> {
        let w = lock(&self.0);
        let mut all: Vec<IpAddr> = w.kernel.addrs.iter().map(|a| a.1).collect();
        all.sort_by_key(IpAddr::is_ipv6);
        ready(Ok(all))
    }
    fn ipv6_global_addresses(&self, index: u32) -> HostFuture<'_, Vec<Ipv6Addr>> {
        let w = lock(&self.0);
        let addrs = w.kernel.addrs.iter().filter(|a| a.0 == index);
        let global = addrs.filter_map(|&(_, a, _)| match a {
            IpAddr::V6(a) if !a.is_unicast_link_local() => Some(a),
            _ => None,
        });
        ready(Ok(global.collect()))
    }

    fn routes(&self) -> Vec<(String, IpNet)> {
        lock(&self.0).host_routes.clone()
    }
    /// Recorded, not modelled: a host-wide knob no rollback turns back (as ip_forward).
    fn enable_ipv6_forwarding(&self, uplink: Option<&str>) -> Result<Vec<String>, SysctlError> {
        let call = format!("enable_ipv6_forwarding {}", uplink.unwrap_or("-"));
        lock(&self.0)
            .step(call)
            .map_err(|call| SysctlError::Ipv6Forwarding {
                path: call.into(),
                source: io::Error::from_raw_os_error(libc::EIO),
            })?;
        Ok(Vec::new())
    }
    fn set_private_vlan(&self, bridge: &str, on: bool) -> Result<(), SysctlError> {
        let mut w = lock(&self.0);
        let err = |call: String| SysctlError::PrivateVlan {
            bridge: call,
            path: "/proc/sys/net/ipv4/conf".into(),
            source: io::Error::from_raw_os_error(libc::EIO),
        };
        w.step(format!("set_private_vlan {bridge} {on}"))
            .map_err(err)?;
        let bridges = &mut w.kernel.private_vlans;
        match on {
            true => bridges.insert(bridge.to_owned()),
            false => bridges.remove(bridge),
        };
        Ok(())
    }
    fn check_netns(&self, path: &Path) -> Result<u64, SandboxError> {
        lock(&self.0)
            .namespaces
            .get(path)
            .copied()
            .ok_or_else(|| SandboxError::NetnsMissing {
                path: path.display().to_string(),
            })
    }
    fn port_busy(&self, proto: Proto, _ip: IpAddr, port: u16) -> bool {
        lock(&self.0).busy_ports.contains(&(proto, port))
    }
    fn port_owner(&self, _proto: Proto, port: u16) -> String {
        format!("process fake (pid 4242) listening on 0.0.0.0:{port}")
    }
    fn ensure_bridge<'a>(
        &'a self,
        name: &'a str,
        alias: &'a str,
        _mtu: u32,
    ) -> HostFuture<'a, Link> {
        ready(self.change(format!("ensure_bridge {name}"), |w| {
            w.by_name(name).unwrap_or_else(|| {
                let link = w.new_link(name, None);
                let l = w.kernel.links.get_mut(&link.index).expect("just made");
                l.alias = Some(alias.to_owned());
                l.clone()
            })
        }))
    }
    fn create_veth<'a>(&'a self, plan: &'a VethPlan<'a>) -> HostFuture<'a, Link, SandboxError> {
        // A container end left in the host's namespace is recorded with the netns "host".
        let (netns, ifname) = match plan.inner {
            Inner::Namespace { netns, ifname } => (netns, ifname),
            Inner::Host { name } => (Path::new("host"), name),
        };
        let call = format!("create_veth {}:{ifname}", netns.display());
        let r = self.change(call, |w| {
            let link = w.new_link(plan.host_ifname, plan.bridge);
            let peer = (netns.to_owned(), ifname.to_owned(), false);
            w.kernel.peers.insert(link.index, peer);
            link
        });
        ready(r.map_err(SandboxError::from))
    }
    fn configure_namespace(&self, side: NamespaceSide) -> HostFuture<'static, (), SandboxError> {
        let call = format!(
            "configure_namespace {}:{}",
            side.netns.display(),
            side.ifname
        );
        let r = self.change(call, |w| {
            for peer in w.kernel.peers.values_mut() {
                if peer.0 == side.netns && peer.1 == side.ifname {
                    peer.2 = true;
                }
            }
        });
        ready(r.map_err(SandboxError::from))
    }
    fn create_tap(&self, spec: TapSpec) -> HostFuture<'static, (), TapError> {
        let mut w = lock(&self.0);
        let r = match w.step(format!("create_tap {}", spec.name)) {
            Err(call) => Err(TapError::Io {
                name: spec.name.clone(),
                op: TapOp::SetIff,
                source: io::Error::other(call),
            }),
            Ok(()) if w.tap_name_race => {
                w.new_link(&spec.name, None);
                Err(TapError::Exists { name: spec.name })
            }
            Ok(()) => {
                w.new_link(&spec.name, None);
                Ok(())
            }
        };
        ready(r)
    }
    fn configure<'a>(&'a self, index: u32, cfg: &'a LinkConfig<'a>) -> HostFuture<'a, ()> {
        let mut what = Vec::new();
        if cfg.master.is_some() {
            what.push("master");
        }
        if cfg.alias.is_some() {
            what.push("alias");
        }
        if cfg.up {
            what.push("up");
        }
        let call = format!("configure {index} {}", what.join(","));
        ready(self.change(call, |w| {
            if let Some(l) = w.kernel.links.get_mut(&index) {
                if let Some(a) = cfg.alias {
                    l.alias = Some(a.to_owned());
                }
                if let Some(m) = cfg.master {
                    l.master = Some(m);
                }
            }
        }))
    }
    fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> HostFuture<'_, ()> {
        ready(
            self.change(format!("add_address {index} {addr}/{prefix}"), |w| {
                w.kernel.addrs.insert((index, addr, prefix));
            }),
        )
    }
    fn add_host_route(&self, ip: IpAddr, dev: u32) -> HostFuture<'_, ()> {
        let dst = IpNet::from(ip);
        ready(self.change(format!("add_route {dst} dev {dev}"), |w| {
            w.kernel.routes.insert((dst, None, Some(dev)));
        }))
    }
    fn add_permanent_neighbor(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> HostFuture<'_, ()> {
        ready(self.change(format!("add_neighbor {index} {ip}"), |w| {
            w.kernel.neighbours.insert((index, ip, mac));
        }))
    }
    fn set_up(&self, index: u32) -> HostFuture<'_, ()> {
        ready(self.change(format!("set_up {index}"), |_| ()))
    }
    fn set_port_isolated(&self, index: u32, isolated: bool) -> HostFuture<'_, ()> {
        let call = format!("set_port_isolated {index} {isolated}");
        ready(self.change(call, |w| {
            let ports = &mut w.kernel.isolated_ports;
            match isolated {
                true => ports.insert(index),
                false => ports.remove(&index),
            };
        }))
    }
    fn delete_link(&self, index: u32) -> HostFuture<'_, ()> {
        ready(self.change(format!("delete_link {index}"), |w| w.delete(index)))
    }
}

pub struct FakeMaps(pub Arc<Mutex<World>>);

impl FakeMaps {
    fn change<T>(
        &self,
        call: String,
        f: impl FnOnce(&mut Kernel) -> T,
    ) -> Result<T, DatapathError> {
        let mut w = lock(&self.0);
        w.step(call).map_err(dp_err)?;
        Ok(f(&mut w.kernel))
    }
}

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Xdp => "xdp",
        Hook::TcIngress => "ingress",
        Hook::UplinkEgress => "uplink-egress",
        Hook::UplinkIngress => "uplink-ingress",
    }
}

fn key_name(key: &PublishKey) -> String {
    format!("{}/{}:{}", key.proto, Ipv4Addr::from(key.host_ip), key.port)
}

/// ` SUBNET6` for a network's IPv6 subnet, nothing without one.
/// A call's IPv4 and IPv6 values: `v4`, `v4 v6`, or `- v6` (an IPv6-only network's).
fn both(v4: Option<impl std::fmt::Display>, v6: Option<impl std::fmt::Display>) -> String {
    match (v4, v6) {
        (Some(v4), Some(v6)) => format!("{v4} {v6}"),
        (Some(v4), None) => v4.to_string(),
        (None, Some(v6)) => format!("- {v6}"),
        (None, None) => "-".into(),
    }
}

fn key_name6(key: &PublishKey6) -> String {
    format!(
        "{}/[{}]:{}",
        key.proto,
        Ipv6Addr::from(key.host_ip),
        key.port
    )
}

/// How a map write is recorded: the operation and what it names.
fn call_line(write: &MapWrite) -> String {
    match write {
        MapWrite::UpsertEndpoint { value, ip6 } => {
            let ip = (value.flags & ENDPOINT_FLAG_NO_IPV4 == 0).then(|| Ipv4Addr::from(value.ip));
            format!("upsert_endpoint {}", both(ip, *ip6))
        }
        MapWrite::RemoveEndpoint { ip, ip6 } => format!("remove_endpoint {}", both(*ip, *ip6)),
        MapWrite::RemoveUplink(ifindex) => format!("remove_uplink {ifindex}"),
        MapWrite::SetUplink {
            ifindex,
            uplink6: Some(u),
            ..
        } => format!("set_uplink {ifindex} {}", Ipv6Addr::from(u.addr)),
        MapWrite::SetUplink { ifindex, .. } => format!("set_uplink {ifindex}"),
        MapWrite::AddMasqSubnet {
            subnet, subnet6, ..
        } => format!("add_masq_subnet {}", both(*subnet, *subnet6)),
        MapWrite::RemoveMasqSubnet { subnet, subnet6 } => {
            format!("remove_masq_subnet {}", both(*subnet, *subnet6))
        }
        MapWrite::SetNoMasquerade { network, cidrs } => {
            format!("set_no_masquerade {network} {cidrs:?}")
        }
        MapWrite::Publish { key, .. } => format!("publish {}", key_name(key)),
        MapWrite::Unpublish(key) => format!("unpublish {}", key_name(key)),
        MapWrite::Publish6 { key, .. } => format!("publish6 {}", key_name6(key)),
        MapWrite::Unpublish6(key) => format!("unpublish6 {}", key_name6(key)),
        MapWrite::MarkPublished(ip) => format!("mark_published {ip}"),
        MapWrite::SetLocalAddrs(_) => "set_local_addrs".into(),
        MapWrite::SetEgress { network, rules } => format!("set_egress {network} {rules:?}"),
        MapWrite::SetHostAccess { network, ports } => {
            format!("set_host_access {network} {ports:?}")
        }
        MapWrite::SetNetwork { network, value } => {
            format!(
                "set_network {network} {}",
                if value.is_some() { "some" } else { "none" }
            )
        }
        MapWrite::SetEndpointPolicy { ip, ip6, flags } => {
            format!("set_endpoint_policy {} {flags}", both(*ip, *ip6))
        }
    }
}

impl Maps for FakeMaps {
    fn origin(&self) -> Origin {
        Origin::Loaded
    }
    fn finish_migrations(&mut self) -> Result<Vec<String>, DatapathError> {
        Ok(Vec::new())
    }
    fn attach_tc(
        &mut self,
        hook: Hook,
        _ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        let call = format!("attach_tc {} {ifindex}", hook_name(hook));
        self.change(call, |k| {
            if k.pins.insert((hook_name(hook), ifindex)) {
                Attachment::Attached
            } else {
                Attachment::Adopted
            }
        })
    }
    fn attach_tc_endpoint(
        &mut self,
        _ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        self.change(format!("attach_tc_endpoint {ifindex}"), |k| {
            k.filters.insert(ifindex);
            Attachment::Attached
        })
    }
    fn forget_links(&mut self, _ifname: &str, ifindex: u32) -> Result<(), DatapathError> {
        self.change(format!("forget_links {ifindex}"), |k| {
            k.pins.retain(|p| p.1 != ifindex)
        })
    }
    fn sweep_link_pins(&mut self, live: &[Link]) -> Result<usize, DatapathError> {
        self.change("sweep_link_pins".into(), |k| {
            let before = k.pins.len();
            k.pins.retain(|p| live.iter().any(|l| l.index == p.1));
            before - k.pins.len()
        })
    }
    fn write(&mut self, write: MapWrite) -> Result<(), DatapathError> {
        self.change(call_line(&write), |k| match write {
            MapWrite::UpsertEndpoint { value, ip6 } => {
                let key = match ip6 {
                    Some(ip6) if value.flags & ENDPOINT_FLAG_NO_IPV4 != 0 => IpAddr::V6(ip6),
                    _ => IpAddr::V4(value.ip.into()),
                };
                if let Some(ip6) = ip6 {
                    k.endpoints6.insert(ip6, key);
                }
                // As the real datapath: the published flag stays, the others are new.
                let kept = k.endpoints.get(&key).map_or(0, |old| old.flags);
                let value = EndpointValue {
                    flags: value.flags | (kept & ENDPOINT_FLAG_PUBLISHED),
                    ..value
                };
                k.endpoints.insert(key, value);
            }
            MapWrite::RemoveEndpoint { ip, ip6 } => {
                if let Some(ip6) = ip6 {
                    k.endpoints6.remove(&ip6);
                }
                let key = ip.map(IpAddr::V4).or(ip6.map(IpAddr::V6));
                if let Some(key) = key {
                    k.endpoints.remove(&key);
                }
            }
            MapWrite::SetUplink {
                ifindex,
                uplink,
                uplink6,
            } => {
                k.uplinks.insert(ifindex, uplink);
                match uplink6 {
                    Some(u) => k.uplinks6.insert(ifindex, u),
                    None => k.uplinks6.remove(&ifindex),
                };
            }
            MapWrite::RemoveUplink(ifindex) => {
                k.uplinks.remove(&ifindex);
                k.uplinks6.remove(&ifindex);
            }
            MapWrite::AddMasqSubnet {
                subnet,
                subnet6,
                network,
            } => {
                k.masq.extend(subnet.map(|s| (s, network)));
                k.masq6.extend(subnet6.map(|s| (s, network)));
            }
            MapWrite::RemoveMasqSubnet { subnet, subnet6 } => {
                if let Some(s) = subnet {
                    k.masq.remove(&s);
                }
                if let Some(s) = subnet6 {
                    k.masq6.remove(&s);
                }
            }
            MapWrite::SetNoMasquerade { network, cidrs } if cidrs.is_empty() => {
                k.no_masq.remove(&network);
            }
            MapWrite::SetNoMasquerade { network, cidrs } => {
                k.no_masq.insert(network, cidrs);
            }
            MapWrite::Publish { key, target } => {
                k.mark(IpAddr::V4(target.addr.into()));
                k.publish.insert((key.proto, key.host_ip, key.port), target);
            }
            MapWrite::Unpublish(key) => {
                k.publish.remove(&(key.proto, key.host_ip, key.port));
            }
            MapWrite::Publish6 { key, target } => {
                k.mark(IpAddr::V6(target.addr.into()));
                k.publish6
                    .insert((key.proto, key.host_ip, key.port), target);
            }
            MapWrite::Unpublish6(key) => {
                k.publish6.remove(&(key.proto, key.host_ip, key.port));
            }
            MapWrite::MarkPublished(ip) => k.mark(ip),
            MapWrite::SetLocalAddrs(_) => {}
            MapWrite::SetHostAccess { network, ports } if ports.is_empty() => {
                k.host_access.remove(&network);
            }
            MapWrite::SetHostAccess { network, ports } => {
                k.host_access.insert(network, ports);
            }
            MapWrite::SetEgress { network, rules } if rules.is_empty() => {
                k.egress.remove(&network);
            }
            MapWrite::SetEgress { network, rules } => {
                k.egress.insert(network, rules);
            }
            MapWrite::SetNetwork { network, value } => match value {
                Some(v) => drop(k.networks.insert(network, v)),
                None => drop(k.networks.remove(&network)),
            },
            MapWrite::SetEndpointPolicy { ip, ip6, flags } => {
                let key = ip.map(IpAddr::V4).or(ip6.map(IpAddr::V6));
                if let Some(v) = key.and_then(|key| k.endpoints.get_mut(&key)) {
                    v.flags = (v.flags & !POLICY_FLAGS) | (flags & POLICY_FLAGS);
                }
            }
        })
    }
    fn report(&self, _records: &[Endpoint]) -> Result<StatsReport, DatapathError> {
        Ok(StatsReport::default())
    }
    fn endpoint_stats(&self) -> Result<Vec<EndpointStat>, DatapathError> {
        Ok(Vec::new())
    }
    fn drop_packets(&self, _reason: DropReason) -> Result<u64, DatapathError> {
        Ok(0)
    }
    fn tracked(&self) -> Result<Vec<crate::datapath::Tracked>, DatapathError> {
        Ok(Vec::new())
    }
}
