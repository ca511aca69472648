//! The control plane's two seams to the kernel: [`Host`], the objects it makes on the
//! host (links, addresses, routes, neighbours, namespaces, TAPs) and the facts it reads
//! there (routes, host ports), and [`Maps`], its writes to the datapath's maps.
//!
//! [`KernelHost`] and [`Datapath`] are the real implementations; the unit tests use the
//! recording fakes of `control::fake`, which can be told to fail at any call.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use futures::{FutureExt, future::BoxFuture};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netpath_common::{
    maps::{EndpointValue, Hook, NetworkValue},
    nat::{NatTarget, NatTarget6, PublishKey, PublishKey6, Uplink, Uplink6},
};

use crate::{
    datapath::{Attachment, Datapath, DatapathError, EndpointStat, Origin},
    model::{Endpoint, StatsReport},
    netlink::{Link, LinkConfig, Netlink, NetlinkError},
    portspec::Proto,
    sandbox::{self, NamespaceSide, SandboxError, VethPlan},
    sysctl::SysctlError,
    tap::{TapError, TapSpec},
};

/// A host call's future, borrowing the host for `'a`.
pub type HostFuture<'a, T, E = NetlinkError> = BoxFuture<'a, Result<T, E>>;

/// What the control plane does to, and reads from, the host's network stack.
pub trait Host: Send + Sync {
    /// The link named `name`, if any.
    fn link_by_name<'a>(&'a self, name: &'a str) -> HostFuture<'a, Option<Link>>;
    /// Every link of the host.
    fn links(&self) -> HostFuture<'_, Vec<Link>>;
    /// The IPv4 addresses (with prefix) of link `index`.
    fn ipv4_addresses(&self, index: u32) -> HostFuture<'_, Vec<(Ipv4Addr, u8)>>;
    /// Every address of the host, IPv4 then IPv6.
    fn all_addresses(&self) -> HostFuture<'_, Vec<IpAddr>>;
    /// The global IPv6 addresses of link `index` usable as a source (not link-local,
    /// tentative or deprecated), in the kernel's order.
    fn ipv6_global_addresses(&self, index: u32) -> HostFuture<'_, Vec<Ipv6Addr>>;
    /// IPv4 routes of the host's main table: (device, destination).
    fn routes(&self) -> Vec<(String, IpNet)>;
    /// Turns IPv6 forwarding on, keeping `uplink` taking router advertisements (see
    /// `sysctl`); a line per change.
    fn enable_ipv6_forwarding(&self, uplink: Option<&str>) -> Result<Vec<String>, SysctlError>;
    /// Turns the private-VLAN proxy ARP of bridge `bridge` on or off (an isolated
    /// network's; see `sysctl::set_private_vlan`).
    fn set_private_vlan(&self, bridge: &str, on: bool) -> Result<(), SysctlError>;
    /// Checks that `path` is a network namespace other than the host's; its identity.
    fn check_netns(&self, path: &Path) -> Result<u64, SandboxError>;
    /// Whether a host socket holds `proto` port `port` at `ip` (or its family's
    /// wildcard; an IPv6 wildcard socket that also takes IPv4 counts for both).
    fn port_busy(&self, proto: Proto, ip: IpAddr, port: u16) -> bool;
    /// Who holds `proto` port `port` on the host, in words.
    fn port_owner(&self, proto: Proto, port: u16) -> String;

    /// Creates bridge `name` (tagged `alias`) unless it exists; either way returns it.
    fn ensure_bridge<'a>(&'a self, name: &'a str, alias: &'a str, mtu: u32)
    -> HostFuture<'a, Link>;
    /// Creates a veth pair whose inner end is born in the plan's namespace (down,
    /// untagged); returns the host end.
    fn create_veth<'a>(&'a self, plan: &'a VethPlan<'a>) -> HostFuture<'a, Link, SandboxError>;
    /// Configures the container side of a veth pair. `'static`, so it can run on a task
    /// of its own while the caller attaches the datapath.
    fn configure_namespace(&self, side: NamespaceSide) -> HostFuture<'static, (), SandboxError>;
    /// Creates a persistent TAP device.
    fn create_tap(&self, spec: TapSpec) -> HostFuture<'static, (), TapError>;
    /// Applies `cfg` to link `index` in one request.
    fn configure<'a>(&'a self, index: u32, cfg: &'a LinkConfig<'a>) -> HostFuture<'a, ()>;
    fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> HostFuture<'_, ()>;
    /// A host route (/32, /128) to `ip` out of link `dev` (scope link).
    fn add_host_route(&self, ip: IpAddr, dev: u32) -> HostFuture<'_, ()>;
    fn add_permanent_neighbor(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> HostFuture<'_, ()>;
    fn set_up(&self, index: u32) -> HostFuture<'_, ()>;
    /// Sets or clears bridge port `index`'s `isolated` flag (an isolated network's ports).
    fn set_port_isolated(&self, index: u32, isolated: bool) -> HostFuture<'_, ()>;
    /// Deletes link `index` (a veth's peer, addresses, routes and neighbours go with it).
    fn delete_link(&self, index: u32) -> HostFuture<'_, ()>;
}

/// The real host: rtnetlink in the daemon's namespace, `/dev/net/tun`, `/proc`.
pub struct KernelHost {
    nl: Netlink,
}

impl KernelHost {
    pub fn connect() -> Result<KernelHost, NetlinkError> {
        Ok(KernelHost {
            nl: Netlink::connect()?,
        })
    }
}

impl Host for KernelHost {
    fn link_by_name<'a>(&'a self, name: &'a str) -> HostFuture<'a, Option<Link>> {
        self.nl.link_by_name(name).boxed()
    }
    fn links(&self) -> HostFuture<'_, Vec<Link>> {
        self.nl.links().boxed()
    }
    fn ipv4_addresses(&self, index: u32) -> HostFuture<'_, Vec<(Ipv4Addr, u8)>> {
        self.nl.ipv4_addresses(index).boxed()
    }
    fn all_addresses(&self) -> HostFuture<'_, Vec<IpAddr>> {
        self.nl.all_addresses().boxed()
    }
    fn ipv6_global_addresses(&self, index: u32) -> HostFuture<'_, Vec<Ipv6Addr>> {
        self.nl.ipv6_global_addresses(index).boxed()
    }
    fn routes(&self) -> Vec<(String, IpNet)> {
        super::proc_routes::read()
    }
    fn enable_ipv6_forwarding(&self, uplink: Option<&str>) -> Result<Vec<String>, SysctlError> {
        crate::sysctl::enable_ipv6_forwarding(uplink)
    }
    fn set_private_vlan(&self, bridge: &str, on: bool) -> Result<(), SysctlError> {
        crate::sysctl::set_private_vlan(bridge, on)
    }
    fn check_netns(&self, path: &Path) -> Result<u64, SandboxError> {
        sandbox::check_netns(path)
    }
    fn port_busy(&self, proto: Proto, ip: IpAddr, port: u16) -> bool {
        crate::hostports::busy(proto, ip, port)
    }
    fn port_owner(&self, proto: Proto, port: u16) -> String {
        crate::hostports::owner(proto, port)
    }
    fn ensure_bridge<'a>(
        &'a self,
        name: &'a str,
        alias: &'a str,
        mtu: u32,
    ) -> HostFuture<'a, Link> {
        self.nl.ensure_bridge(name, alias, Some(mtu)).boxed()
    }
    fn create_veth<'a>(&'a self, plan: &'a VethPlan<'a>) -> HostFuture<'a, Link, SandboxError> {
        sandbox::create_veth(&self.nl, plan).boxed()
    }
    fn configure_namespace(&self, side: NamespaceSide) -> HostFuture<'static, (), SandboxError> {
        sandbox::configure_inside(side).boxed()
    }
    fn create_tap(&self, spec: TapSpec) -> HostFuture<'static, (), TapError> {
        async move {
            // ioctls on /dev/net/tun and sysfs polling: off the async workers.
            tokio::task::spawn_blocking(move || crate::tap::create_tap(&spec))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        }
        .boxed()
    }
    fn configure<'a>(&'a self, index: u32, cfg: &'a LinkConfig<'a>) -> HostFuture<'a, ()> {
        self.nl.configure(index, cfg).boxed()
    }
    fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> HostFuture<'_, ()> {
        self.nl.add_address(index, addr, prefix).boxed()
    }
    fn add_host_route(&self, ip: IpAddr, dev: u32) -> HostFuture<'_, ()> {
        let dst = IpNet::from(ip);
        async move { self.nl.add_route(dst, None, Some(dev)).await }.boxed()
    }
    fn add_permanent_neighbor(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> HostFuture<'_, ()> {
        self.nl.add_permanent_neighbor(index, ip, mac).boxed()
    }
    fn set_up(&self, index: u32) -> HostFuture<'_, ()> {
        self.nl.set_up(index).boxed()
    }
    fn set_port_isolated(&self, index: u32, isolated: bool) -> HostFuture<'_, ()> {
        self.nl.set_port_isolated(index, isolated).boxed()
    }
    fn delete_link(&self, index: u32) -> HostFuture<'_, ()> {
        self.nl.delete_link(index).boxed()
    }
}

/// One write to the datapath's maps, as a value: the control plane's whole vocabulary of
/// map changes, which [`Maps::write`] applies (and the fake records).
#[derive(Clone, Debug)]
pub enum MapWrite {
    /// An endpoint by its address (and its IPv6 address, if it has one), with its
    /// device's entries (flags kept).
    UpsertEndpoint {
        value: EndpointValue,
        ip6: Option<Ipv6Addr>,
    },
    /// The endpoint of these addresses and its device's entries; absent is fine.
    RemoveEndpoint {
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
    },
    /// An uplink's masquerade address and port range, and its NAT66 address (its first
    /// global IPv6 address; none: no NAT66 on it).
    SetUplink {
        ifindex: u32,
        uplink: Uplink,
        uplink6: Option<Uplink6>,
    },
    /// Both families' uplink entries.
    RemoveUplink(u32),
    /// Masquerade what network `network`'s subnet (and its IPv6 subnet, if it is
    /// dual-stack) sends out of an uplink.
    AddMasqSubnet {
        subnet: Option<Ipv4Net>,
        subnet6: Option<Ipv6Net>,
        network: u16,
    },
    RemoveMasqSubnet {
        subnet: Option<Ipv4Net>,
        subnet6: Option<Ipv6Net>,
    },
    /// The destinations network `network` reaches unmasqueraded: exactly `cidrs`.
    SetNoMasquerade {
        network: u16,
        cidrs: Vec<IpNet>,
    },
    /// A published port and the endpoint address and port behind it.
    Publish {
        key: PublishKey,
        target: NatTarget,
    },
    Unpublish(PublishKey),
    /// An IPv6 published port and the endpoint's IPv6 address and port behind it.
    Publish6 {
        key: PublishKey6,
        target: NatTarget6,
    },
    Unpublish6(PublishKey6),
    /// Marks the endpoint of this address (either family) as having published ports.
    MarkPublished(IpAddr),
    /// The host's own addresses (both families), for host-local access.
    SetLocalAddrs(Vec<IpAddr>),
    /// Network `network`'s egress rules: exactly `rules` (CIDR, `policy::EGRESS_DENY` or
    /// `EGRESS_ALLOW`).
    SetEgress {
        network: u16,
        rules: Vec<(IpNet, u8)>,
    },
    /// The host ports network `network` may reach under restricted host access: exactly
    /// `ports` (IP protocol, port).
    SetHostAccess {
        network: u16,
        ports: Vec<(u8, u16)>,
    },
    /// Network `network`'s policy entry (an internal network's gateways), or none.
    SetNetwork {
        network: u16,
        value: Option<NetworkValue>,
    },
    /// The policy flags (`ENDPOINT_FLAG_ISOLATED`, `ENDPOINT_FLAG_INTERNAL`) of the
    /// endpoint of these addresses, on each of its entries; its other flags stay. No
    /// such endpoint is fine.
    SetEndpointPolicy {
        ip: Option<Ipv4Addr>,
        ip6: Option<Ipv6Addr>,
        flags: u8,
    },
}

/// The control plane's use of the datapath: attachments, map writes, and the reads it
/// serves. Called under the service's datapath lock; every call is one or a few
/// syscalls, never a wait.
pub trait Maps: Send {
    fn origin(&self) -> Origin;
    /// Ends the migration of maps pinned with another layout (see `datapath::layout`);
    /// a line per map migrated.
    fn finish_migrations(&mut self) -> Result<Vec<String>, DatapathError>;
    fn attach_tc(
        &mut self,
        hook: Hook,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError>;
    /// Attaches the endpoint program to an endpoint's host-side device.
    fn attach_tc_endpoint(
        &mut self,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError>;
    /// Detaches and forgets every attachment pin of link `ifname`/`ifindex`.
    fn forget_links(&mut self, ifname: &str, ifindex: u32) -> Result<(), DatapathError>;
    /// Removes the attachment pins of links not in `live`; how many.
    fn sweep_link_pins(&mut self, live: &[Link]) -> Result<usize, DatapathError>;
    /// Applies one write to the maps.
    fn write(&mut self, write: MapWrite) -> Result<(), DatapathError>;
    /// Every counter, endpoints named after `records`.
    fn report(&self, records: &[Endpoint]) -> Result<StatsReport, DatapathError>;
    fn endpoint_stats(&self) -> Result<Vec<EndpointStat>, DatapathError>;
    fn drop_packets(&self, reason: netpath_common::maps::DropReason) -> Result<u64, DatapathError>;
    /// Every connection the datapath translates.
    fn tracked(&self) -> Result<Vec<crate::datapath::Tracked>, DatapathError>;
}

impl Maps for Datapath {
    fn origin(&self) -> Origin {
        Datapath::origin(self)
    }
    fn finish_migrations(&mut self) -> Result<Vec<String>, DatapathError> {
        Datapath::finish_migrations(self)
    }
    fn attach_tc(
        &mut self,
        hook: Hook,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        Datapath::attach_tc(self, hook, ifname, ifindex)
    }
    fn attach_tc_endpoint(
        &mut self,
        ifname: &str,
        ifindex: u32,
    ) -> Result<Attachment, DatapathError> {
        Datapath::attach_tc_endpoint(self, ifname, ifindex)
    }
    fn forget_links(&mut self, ifname: &str, ifindex: u32) -> Result<(), DatapathError> {
        Datapath::forget_links(self, ifname, ifindex)
    }
    fn sweep_link_pins(&mut self, live: &[Link]) -> Result<usize, DatapathError> {
        Datapath::sweep_link_pins(self, live)
    }
    fn write(&mut self, write: MapWrite) -> Result<(), DatapathError> {
        match write {
            MapWrite::UpsertEndpoint { value, ip6 } => self.upsert_endpoint(value, ip6),
            MapWrite::RemoveEndpoint { ip, ip6 } => self.remove_endpoint(ip, ip6),
            MapWrite::SetUplink {
                ifindex,
                uplink,
                uplink6,
            } => {
                self.set_uplink(ifindex, uplink)?;
                self.set_uplink6(ifindex, uplink6)
            }
            MapWrite::RemoveUplink(ifindex) => {
                self.set_uplink6(ifindex, None)?;
                self.remove_uplink(ifindex)
            }
            MapWrite::AddMasqSubnet {
                subnet,
                subnet6,
                network,
            } => {
                if let Some(s) = subnet {
                    self.add_masq_subnet(s, network)?;
                }
                subnet6.map_or(Ok(()), |s| self.add_masq_subnet6(s, network))
            }
            MapWrite::RemoveMasqSubnet { subnet, subnet6 } => {
                if let Some(s) = subnet6 {
                    self.remove_masq_subnet6(s)?;
                }
                subnet.map_or(Ok(()), |s| self.remove_masq_subnet(s))
            }
            MapWrite::SetNoMasquerade { network, cidrs } => self.set_no_masquerade(network, &cidrs),
            MapWrite::Publish { key, target } => self.publish(key, target),
            MapWrite::Unpublish(key) => self.unpublish(key),
            MapWrite::Publish6 { key, target } => self.publish6(key, target),
            MapWrite::Unpublish6(key) => self.unpublish6(key),
            MapWrite::MarkPublished(ip) => self.mark_published(ip),
            MapWrite::SetLocalAddrs(addrs) => self.set_local_addrs(&addrs),
            MapWrite::SetNetwork { network, value } => self.set_network(network, value),
            MapWrite::SetEgress { network, rules } => self.set_egress(network, &rules),
            MapWrite::SetHostAccess { network, ports } => self.set_host_access(network, &ports),
            MapWrite::SetEndpointPolicy { ip, ip6, flags } => {
                self.set_endpoint_policy(ip, ip6, flags)
            }
        }
    }
    fn report(&self, records: &[Endpoint]) -> Result<StatsReport, DatapathError> {
        crate::stats::report(self, records)
    }
    fn endpoint_stats(&self) -> Result<Vec<EndpointStat>, DatapathError> {
        Datapath::endpoint_stats(self)
    }
    fn drop_packets(&self, reason: netpath_common::maps::DropReason) -> Result<u64, DatapathError> {
        Ok(Datapath::drop_counter(self, reason)?.packets)
    }
    fn tracked(&self) -> Result<Vec<crate::datapath::Tracked>, DatapathError> {
        Datapath::tracked(self)
    }
}
