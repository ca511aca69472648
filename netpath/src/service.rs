//! The control plane's operations: networks, container endpoints and microVM TAPs.
//!
//! Each operation keeps the state database and the kernel in step:
//! 1. validate the request (nothing changes on bad input);
//! 2. lease/record in one database transaction (`Creating` for endpoints);
//! 3. create the devices; on failure, remove them and roll the record back;
//! 4. register the endpoint in the datapath's maps and mark the record `Ready`.
//!
//! A crash between 2 and 4 leaves a `Creating` record, which [`Service::reconcile`]
//! rolls back at the next start; devices without a record are removed there too.
//! Operations on one network are serialized by a per-network lock; different networks
//! proceed in parallel.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use ipnet::Ipv4Net;
use netpath_common::{
    maps::{ENDPOINT_KIND_TAP, ENDPOINT_KIND_VETH, EndpointValue, Hook},
    nat::{MASQ_PORTS, NatTarget, PublishKey, Uplink},
};

use crate::{
    config::{self, IFNAME_MAX, Paths},
    datapath::{Attachment, Datapath, DatapathError, EndpointStat, Origin},
    hostports,
    model::{
        Endpoint, EndpointCreate, EndpointKind, EndpointState, Mode, Network, NetworkCreate,
        PortLease, PortPublish, StatsReport, TapCreate,
    },
    netlink::{LinkConfig, Netlink, NetlinkError},
    portspec::PortSpec,
    sandbox::{SandboxError, VethPlan, create_veth_endpoint},
    state::{NewEndpoint, ResolvedNetwork, StateError, Store},
    sysctl,
    tap::{TapError, TapSpec, create_tap},
    types::MacAddr,
};

/// Longest network name: its bridge `np-<name>` must fit an interface name.
pub const NETWORK_NAME_MAX: usize = IFNAME_MAX - config::LINK_PREFIX.len();
pub const DEFAULT_MTU: u32 = 1500;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{what}")]
    Invalid { what: String, hint: Option<String> },
    #[error("{what}")]
    Conflict { what: String, hint: Option<String> },
    #[error("{what}")]
    NotFound { what: String, hint: Option<String> },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    fn invalid(what: impl Into<String>) -> Self {
        ServiceError::Invalid {
            what: what.into(),
            hint: None,
        }
    }

    /// Whether the error says the named network or endpoint does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ServiceError::NotFound { .. }
                | ServiceError::State(
                    StateError::NetworkNotFound { .. } | StateError::EndpointNotFound { .. }
                )
        )
    }

    /// What the user can do about it, when there is something to do.
    pub fn hint(&self) -> Option<String> {
        match self {
            ServiceError::Invalid { hint, .. }
            | ServiceError::Conflict { hint, .. }
            | ServiceError::NotFound { hint, .. } => hint.clone(),
            ServiceError::State(e) => e.hint(),
            _ => None,
        }
    }
}

type Result<T, E = ServiceError> = std::result::Result<T, E>;

pub struct Service {
    paths: Paths,
    instance: String,
    store: Arc<Store>,
    nl: Netlink,
    datapath: Mutex<Datapath>,
    net_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Host ports handed out when a `-p` spec gives none.
    ephemeral_ports: (u16, u16),
}

/// Runs a blocking state-database call off the async workers.
async fn db<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StateError> + Send + 'static,
) -> Result<T> {
    // On the daemon's multi-threaded runtime the transaction runs on this worker, which
    // becomes a blocking thread meanwhile (its queued tasks move to another worker):
    // no hop to the blocking pool and back, each a thread wake-up — on an idle VM a
    // vCPU's exit from HLT, tens of µs. Elsewhere (current-thread runtimes in tests and
    // the CNI plugin) the blocking pool keeps the only worker free.
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(|| f(store)).map_err(ServiceError::from);
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(ServiceError::from)
}

/// Runs a point read (one record by key) of the state database inline. A redb read
/// transaction never waits for a writer (MVCC) and a point read takes microseconds,
/// while a hop to the blocking pool and back costs thread wake-ups — tens of µs each
/// on an idle VM, more than the read. Scans and writes go through [`db`].
fn read<T>(store: &Store, f: impl FnOnce(&Store) -> Result<T, StateError>) -> Result<T> {
    f(store).map_err(ServiceError::from)
}

fn validate_ifname(what: &str, name: &str) -> Result<()> {
    crate::types::check_ifname(name)
        .map_err(|reason| ServiceError::invalid(format!("invalid {what} {name:?}: {reason}")))
}

/// A CNI container id: "must start with an alphanumeric character, optionally followed
/// by any combination of one or more alphanumeric characters, underscore, dot or hyphen"
/// (CNI spec, `CNI_CONTAINERID`); at most 255 of them here.
fn validate_container_id(id: &str) -> Result<()> {
    let ok = id.len() <= 255
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        return Ok(());
    }
    Err(ServiceError::invalid(format!(
        "invalid container id {id:?}: use 1 to 255 characters from a-z, A-Z, 0-9, '_', '.', '-', starting with a letter or digit"
    )))
}

fn validate_network_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > NETWORK_NAME_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ServiceError::invalid(format!(
            "invalid network name {name:?}: use 1 to {NETWORK_NAME_MAX} characters from a-z, 0-9, '-' and '_'"
        )));
    }
    Ok(())
}

/// IPv4 routes of the host's main table (from /proc/net/route): (ifname, destination).
fn host_routes() -> Vec<(String, Ipv4Net)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The kernel prints the network-order address read as a native u32.
            let dst = Ipv4Addr::from(dst.to_ne_bytes());
            let prefix = mask.count_ones() as u8;
            Some((f[0].to_owned(), Ipv4Net::new(dst, prefix).ok()?))
        })
        .collect()
}

impl Service {
    /// Opens the state database and the pinned datapath (adopting it if present).
    pub async fn open(
        paths: Paths,
        reload: bool,
        ephemeral_ports: (u16, u16),
    ) -> anyhow::Result<Service> {
        std::fs::create_dir_all(&paths.state_dir)?;
        sysctl::enable_forwarding()?;
        let store = Arc::new(Store::open(&paths.state_dir.join("state.redb"))?);
        let mut datapath = Datapath::open(&paths.bpffs, reload)?;
        let cgroup = crate::config::cgroup2_root()?;
        datapath.attach_host_local(&cgroup)?;
        let service = Service {
            instance: paths.instance(),
            paths,
            store,
            nl: Netlink::connect()?,
            datapath: Mutex::new(datapath),
            net_locks: Mutex::new(HashMap::new()),
            ephemeral_ports,
        };
        service.refresh_local_addrs().await?;
        Ok(service)
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    fn datapath(&self) -> std::sync::MutexGuard<'_, Datapath> {
        // A panic while holding the lock cannot leave the kernel maps inconsistent
        // (each map op is atomic), so a poisoned lock is still usable.
        self.datapath.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn net_lock(&self, network: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.net_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(network.to_owned())
            .or_default()
            .clone()
    }

    pub async fn list_networks(&self) -> Result<Vec<Network>> {
        db(&self.store, |s| s.list_networks()).await
    }

    pub async fn get_network(&self, name: &str) -> Result<Network> {
        read(&self.store, |s| s.get_network(name))
    }

    pub async fn create_network(&self, mut req: NetworkCreate) -> Result<Network> {
        req.no_masquerade.sort();
        req.no_masquerade.dedup();
        validate_network_name(&req.name)?;
        let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
        if !(68..=65535).contains(&mtu) {
            return Err(ServiceError::invalid(format!(
                "invalid MTU {mtu}: use 68 to 65535"
            )));
        }
        if req.subnet.prefix_len() > 30 || req.subnet.network() != req.subnet.addr() {
            return Err(ServiceError::invalid(format!(
                "invalid subnet {}: give the network address with a prefix of /30 or shorter (e.g. {})",
                req.subnet,
                req.subnet.trunc()
            )));
        }
        const NO_MASQ_PER_NETWORK: usize = 64;
        if req.no_masquerade.len() > NO_MASQ_PER_NETWORK {
            return Err(ServiceError::invalid(format!(
                "{} --no-masquerade destinations: at most {NO_MASQ_PER_NETWORK} per network",
                req.no_masquerade.len()
            )));
        }
        if let Some(c) = req.no_masquerade.iter().find(|c| c.network() != c.addr()) {
            return Err(ServiceError::invalid(format!(
                "invalid --no-masquerade {c}: give the network address (e.g. {})",
                c.trunc()
            )));
        }
        let gateway = match req.gateway {
            Some(g) => g,
            None => req
                .subnet
                .hosts()
                .next()
                .expect("a /30 or larger has hosts"),
        };
        let routes = host_routes();
        let ours: Vec<String> = self
            .list_networks()
            .await?
            .iter()
            .filter_map(|n| n.bridge.clone())
            .collect();
        if let Some((dev, dst)) = routes.iter().find(|(dev, dst)| {
            dst.prefix_len() > 0
                && !ours.contains(dev)
                && (dst.contains(&req.subnet) || req.subnet.contains(dst))
        }) {
            return Err(ServiceError::Invalid {
                what: format!(
                    "subnet {} overlaps the host route {dst} on {dev}",
                    req.subnet
                ),
                hint: Some("pick a subnet no host interface uses".into()),
            });
        }
        let uplink = match &req.uplink {
            Some(u) => {
                validate_ifname("uplink", u)?;
                let Some(link) = self.nl.link_by_name(u).await? else {
                    return Err(ServiceError::invalid(format!(
                        "uplink interface {u} does not exist"
                    )));
                };
                if link.loopback {
                    return Err(ServiceError::Invalid {
                        what: format!(
                            "{u} is a loopback device: traffic cannot leave the host through it"
                        ),
                        hint: Some(
                            "give the interface traffic leaves by (the default route's, say), or omit --uplink"
                                .into(),
                        ),
                    });
                }
                if link
                    .alias
                    .as_deref()
                    .is_some_and(|a| a.starts_with(config::ALIAS_PREFIX))
                {
                    return Err(ServiceError::invalid(format!(
                        "{u} is a device netpath made for a network or endpoint, not an uplink"
                    )));
                }
                Some(u.clone())
            }
            None => routes
                .iter()
                .find(|(_, dst)| dst.prefix_len() == 0)
                .map(|(dev, _)| dev.clone()),
        };
        let bridge = (req.mode == Mode::Bridge).then(|| config::bridge_name(&req.name));
        if let Some(b) = &bridge
            && self.nl.link_by_name(b).await?.is_some()
        {
            return Err(ServiceError::invalid(format!(
                "interface {b} already exists on this host"
            )));
        }
        let lock = self.net_lock(&req.name);
        let _guard = lock.lock().await;
        let resolved = ResolvedNetwork {
            gateway,
            uplink,
            mtu,
            bridge: bridge.clone(),
        };
        let network = db(&self.store, move |s| s.create_network(&req, resolved)).await?;
        if let Err(e) = self.plumb_network(&network).await {
            let name = network.name.clone();
            let _ = self.unplumb_network(&network).await;
            let _ = db(&self.store, move |s| s.remove_network(&name, true)).await;
            return Err(e);
        }
        Ok(network)
    }

    /// Creates a network's devices (bridge mode: the bridge with the gateway address,
    /// and the tc program on its ingress). Idempotent.
    async fn plumb_network(&self, network: &Network) -> Result<Option<Attachment>> {
        self.plumb_masquerade(network).await?;
        let Some(bridge) = &network.bridge else {
            return Ok(None);
        };
        let alias = config::link_alias(&self.instance, "bridge", &network.name);
        let link = self
            .nl
            .ensure_bridge(bridge, &alias, Some(network.mtu))
            .await?;
        self.nl
            .add_address(
                link.index,
                network.gateway.into(),
                network.subnet.prefix_len(),
            )
            .await?;
        self.nl.set_up(link.index).await?;
        Ok(Some(
            self.datapath().attach_tc_ingress(&link.name, link.index)?,
        ))
    }

    /// Egress masquerade for `network` on its uplink: the SNAT/reverse-SNAT programs on
    /// the uplink's egress/ingress, its address as the masquerade source, and the
    /// network's subnet as masqueraded. Without an uplink, or an uplink without an
    /// IPv4 address, there is nothing to do.
    async fn plumb_masquerade(&self, network: &Network) -> Result<()> {
        let Some(name) = &network.uplink else {
            return Ok(());
        };
        let Some(link) = self.nl.link_by_name(name).await? else {
            return Ok(());
        };
        let Some((addr, _)) = self.nl.ipv4_addresses(link.index).await?.first().copied() else {
            return Ok(());
        };
        let mut dp = self.datapath();
        dp.attach_tc(Hook::UplinkEgress, &link.name, link.index)?;
        dp.attach_tc(Hook::UplinkIngress, &link.name, link.index)?;
        dp.set_uplink(
            link.index,
            Uplink {
                addr: addr.octets(),
                first_port: MASQ_PORTS.first,
                last_port: MASQ_PORTS.last,
            },
        )?;
        dp.add_masq_subnet(network.subnet, network.id)?;
        dp.set_no_masquerade(network.id, &network.no_masquerade)?;
        Ok(())
    }

    /// Undoes [`Self::plumb_masquerade`]; the uplink keeps its programs while another
    /// network still uses it.
    async fn unplumb_masquerade(&self, network: &Network) -> Result<()> {
        {
            let mut dp = self.datapath();
            dp.remove_masq_subnet(network.subnet)?;
            dp.set_no_masquerade(network.id, &[])?;
        }
        let Some(name) = &network.uplink else {
            return Ok(());
        };
        let still_used = self
            .list_networks()
            .await?
            .iter()
            .any(|n| n.name != network.name && n.uplink.as_deref() == Some(name));
        if still_used {
            return Ok(());
        }
        if let Some(link) = self.nl.link_by_name(name).await? {
            let mut dp = self.datapath();
            dp.remove_uplink(link.index)?;
            dp.forget_links(&link.name, link.index)?;
        }
        Ok(())
    }

    /// Whether the datapath was loaded by this process or adopted from pins.
    pub fn datapath_origin(&self) -> Origin {
        self.datapath().origin()
    }

    /// Makes sure network `name` has its devices; returns the bridge's tc attachment.
    pub async fn plumb(&self, name: &str) -> Result<Option<Attachment>> {
        let network = self.get_network(name).await?;
        let lock = self.net_lock(name);
        let _guard = lock.lock().await;
        self.plumb_network(&network).await
    }

    async fn unplumb_network(&self, network: &Network) -> Result<()> {
        self.unplumb_masquerade(network).await?;
        if let Some(bridge) = &network.bridge
            && let Some(link) = self.nl.link_by_name(bridge).await?
        {
            self.nl.delete_link(link.index).await?;
            self.datapath().forget_links(&link.name, link.index)?;
        }
        Ok(())
    }

    pub async fn remove_network(&self, name: &str, force: bool) -> Result<Network> {
        let lock = self.net_lock(name);
        let _guard = lock.lock().await;
        let n = name.to_owned();
        let (network, endpoints) = db(&self.store, move |s| s.remove_network(&n, force)).await?;
        for ep in &endpoints {
            self.unplumb_endpoint(ep).await?;
        }
        self.unplumb_network(&network).await?;
        Ok(network)
    }

    pub async fn list_endpoints(&self, network: Option<&str>) -> Result<Vec<Endpoint>> {
        let network = network.map(str::to_owned);
        db(&self.store, move |s| s.list_endpoints(network.as_deref())).await
    }

    /// The endpoint with id `id`, or the only one whose id starts with `id`.
    pub async fn get_endpoint(&self, id: &str) -> Result<Endpoint> {
        read(&self.store, |s| s.find_endpoint_by_prefix(id))
    }

    pub async fn add_endpoint(&self, req: EndpointCreate) -> Result<Endpoint> {
        let netns = match (&req.netns, req.pid) {
            (Some(p), None) => p.clone(),
            (None, Some(pid)) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            _ => {
                return Err(ServiceError::invalid(
                    "give exactly one of netns (a namespace path) or pid",
                ));
            }
        };
        let netns_inode = crate::sandbox::check_netns(&netns)?;
        if let Some(c) = &req.container_id {
            validate_container_id(c)?;
        }
        let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".into());
        validate_ifname("interface name", &ifname)?;
        let mac = req.mac.unwrap_or_else(MacAddr::random_local).octets();
        let lock = self.net_lock(&req.network);
        let _guard = lock.lock().await;
        let network = self.get_network(&req.network).await?;
        if let Some(asked) = req.mac {
            self.refuse_duplicate_mac(&network, asked).await?;
        }
        let id = db(&self.store, |s| s.new_endpoint_id()).await?;
        let host_ifname = format!("{}{id}", config::LINK_PREFIX);
        let new = NewEndpoint {
            id: id.clone(),
            network: network.name.clone(),
            kind: EndpointKind::Veth,
            ip: req.ip,
            mac: MacAddr(mac),
            host_ifname: host_ifname.clone(),
            ifname: Some(ifname.clone()),
            netns: Some(netns.clone()),
            uid: None,
            gid: None,
            queues: None,
            container_id: req.container_id.clone(),
            netns_inode: Some(netns_inode),
        };
        let ep = db(&self.store, move |s| s.reserve_endpoint(new)).await?;
        match self.plumb_veth(&network, &ep, &netns, &ifname, mac).await {
            Ok(()) => {}
            Err(e) => {
                let _ = self.unplumb_endpoint(&ep).await;
                let _ = db(&self.store, move |s| s.release_endpoint(&id)).await;
                return Err(e);
            }
        }
        db(&self.store, move |s| s.mark_ready(&id)).await
    }

    /// Refuses a MAC another endpoint of `network` has: two on one bridge (or one
    /// subnet) would steal each other's frames. Called under the network's lock, for MACs
    /// the client asked for only: it reads every endpoint of the network, which a default
    /// add (a random MAC, 46 random bits) must not pay for.
    async fn refuse_duplicate_mac(&self, network: &Network, wanted: MacAddr) -> Result<()> {
        let name = network.name.clone();
        let endpoints = db(&self.store, move |s| s.list_endpoints(Some(&name))).await?;
        if let Some(other) = endpoints.iter().find(|e| e.mac == wanted) {
            return Err(ServiceError::Conflict {
                what: format!(
                    "MAC {wanted} is already used by endpoint {} in network {}",
                    other.id, network.name
                ),
                hint: Some("omit the MAC to get a random one".into()),
            });
        }
        Ok(())
    }

    async fn bridge_link(&self, network: &Network) -> Result<Option<crate::netlink::Link>> {
        match &network.bridge {
            Some(b) => Ok(Some(self.nl.link_by_name(b).await?.ok_or_else(|| {
                ServiceError::Internal(format!("bridge {b} of network {} is missing", network.name))
            })?)),
            None => Ok(None),
        }
    }

    async fn plumb_veth(
        &self,
        network: &Network,
        ep: &Endpoint,
        netns: &Path,
        ifname: &str,
        mac: [u8; 6],
    ) -> Result<()> {
        let bridge = self.bridge_link(network).await?;
        let alias = config::link_alias(&self.instance, "veth", &ep.id);
        create_veth_endpoint(
            &self.nl,
            &VethPlan {
                host_ifname: &ep.host_ifname,
                alias: &alias,
                netns,
                ifname,
                mac,
                ip: ep.ip,
                prefix_len: ep.prefix_len,
                gateway: network.gateway,
                gateway_mac: bridge.as_ref().and_then(|b| b.mac),
                mtu: network.mtu,
                bridge: bridge.as_ref().map(|b| b.index),
                routed: network.mode == Mode::Routed,
            },
            // Registered while the namespace side is configured (see sandbox).
            |link| {
                let gateway = gateway_mac(bridge.as_ref(), link);
                self.register(network, ep, link.index, mac, gateway, ENDPOINT_KIND_VETH)
            },
        )
        .await?;
        Ok(())
    }

    /// Puts the endpoint in the datapath's maps and attaches the tc program to its
    /// host-side device.
    fn register(
        &self,
        network: &Network,
        ep: &Endpoint,
        ifindex: u32,
        mac: [u8; 6],
        host_mac: [u8; 6],
        kind: u8,
    ) -> Result<()> {
        let mut dp = self.datapath();
        dp.attach_tc_endpoint(&ep.host_ifname, ifindex)?;
        dp.upsert_endpoint(EndpointValue {
            ip: ep.ip.octets(),
            ifindex,
            mac,
            host_mac,
            network_id: network.id,
            kind,
            flags: 0,
        })?;
        Ok(())
    }

    pub async fn add_tap(&self, req: TapCreate) -> Result<Endpoint> {
        crate::tap::validate_name(&req.name)?;
        let queues = req.queues.unwrap_or(1);
        if queues == 0 || queues > 256 {
            return Err(ServiceError::invalid(format!(
                "invalid queue count {queues}: use 1 to 256"
            )));
        }
        for (what, v) in [("uid", req.uid), ("gid", req.gid)] {
            if v == Some(u32::MAX) {
                return Err(ServiceError::invalid(format!(
                    "invalid {what} {}: use 0 to {}",
                    u32::MAX,
                    u32::MAX - 1
                )));
            }
        }
        let mac = req.mac.unwrap_or_else(MacAddr::random_local).octets();
        if self.nl.link_by_name(&req.name).await?.is_some() {
            return Err(ServiceError::invalid(format!(
                "interface {} already exists",
                req.name
            )));
        }
        let lock = self.net_lock(&req.network);
        let _guard = lock.lock().await;
        let network = self.get_network(&req.network).await?;
        if let Some(asked) = req.mac {
            self.refuse_duplicate_mac(&network, asked).await?;
        }
        let id = db(&self.store, |s| s.new_endpoint_id()).await?;
        let new = NewEndpoint {
            id: id.clone(),
            network: network.name.clone(),
            kind: EndpointKind::Tap,
            ip: req.ip,
            mac: MacAddr(mac),
            host_ifname: req.name.clone(),
            ifname: None,
            netns: None,
            uid: req.uid,
            gid: req.gid,
            queues: Some(queues),
            container_id: None,
            netns_inode: None,
        };
        let ep = db(&self.store, move |s| s.reserve_endpoint(new)).await?;
        if let Err(e) = self.plumb_tap(&network, &ep, &req, queues, mac).await {
            let _ = self.unplumb_endpoint(&ep).await;
            let _ = db(&self.store, move |s| s.release_endpoint(&id)).await;
            return Err(e);
        }
        db(&self.store, move |s| s.mark_ready(&id)).await
    }

    async fn plumb_tap(
        &self,
        network: &Network,
        ep: &Endpoint,
        req: &TapCreate,
        queues: u16,
        mac: [u8; 6],
    ) -> Result<()> {
        let spec = TapSpec {
            name: req.name.clone(),
            uid: req.uid,
            gid: req.gid,
            queues,
            vnet_hdr: true,
        };
        tokio::task::spawn_blocking(move || create_tap(&spec))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let link = self.nl.link_by_name(&req.name).await?.ok_or_else(|| {
            ServiceError::Internal(format!("TAP {} vanished after creation", req.name))
        })?;
        let alias = config::link_alias(&self.instance, "tap", &ep.id);
        let bridge = self.bridge_link(network).await?;
        self.nl
            .configure(
                link.index,
                &LinkConfig {
                    mtu: Some(network.mtu),
                    master: bridge.as_ref().map(|b| b.index),
                    alias: Some(&alias),
                    up: true,
                    // The guest does its own IPv6; the host side needs none.
                    no_ipv6_link_local: true,
                    ..Default::default()
                },
            )
            .await?;
        if network.mode == Mode::Routed {
            // The host side of a point-to-point link answers as the gateway.
            self.nl
                .add_address(link.index, network.gateway.into(), 32)
                .await?;
        }
        // The guest is a point-to-point /32 behind its TAP, with a known MAC.
        self.nl
            .add_route(
                Ipv4Net::new(ep.ip, 32).expect("/32"),
                None,
                Some(link.index),
            )
            .await?;
        self.nl
            .add_permanent_neighbor(link.index, ep.ip, mac)
            .await?;
        let gateway = gateway_mac(bridge.as_ref(), &link);
        self.register(network, ep, link.index, mac, gateway, ENDPOINT_KIND_TAP)
    }

    /// Removes an endpoint's devices, map entries (its published ports included) and
    /// attachment pins. Idempotent.
    async fn unplumb_endpoint(&self, ep: &Endpoint) -> Result<()> {
        let ports = self.list_ports().await?;
        {
            let mut dp = self.datapath();
            for l in ports.iter().filter(|l| l.endpoint == ep.id) {
                dp.unpublish(publish_key(l))?;
            }
            dp.remove_endpoint(ep.ip)?;
        }
        if let Some(link) = self.nl.link_by_name(&ep.host_ifname).await? {
            // Only delete what carries our tag (a TAP name is the user's choice).
            let ours = link.alias.as_deref().is_some_and(|a| {
                a == config::link_alias(&self.instance, kind_role(ep.kind), &ep.id)
            });
            if ours || ep.state == EndpointState::Creating {
                self.nl.delete_link(link.index).await?;
            }
            self.datapath().forget_links(&link.name, link.index)?;
        }
        Ok(())
    }

    pub async fn remove_endpoint(&self, id: &str) -> Result<Endpoint> {
        let ep = self.get_endpoint(id).await?;
        let lock = self.net_lock(&ep.network);
        let _guard = lock.lock().await;
        // Re-read under the lock: a concurrent removal may have won.
        let ep = read(&self.store, |s| s.get_endpoint(&ep.id))?;
        self.unplumb_endpoint(&ep).await?;
        let id = ep.id.clone();
        db(&self.store, move |s| s.release_endpoint(&id)).await
    }

    /// Publishes ports of an endpoint (Docker's `-p` syntax, every spec of one command):
    /// leases the host ports in the state database in one transaction, then puts them in
    /// the datapath's publish map — all or none.
    pub async fn publish_ports(&self, req: PortPublish) -> Result<Vec<PortLease>> {
        let specs = req.specs();
        if specs.is_empty() {
            return Err(ServiceError::invalid(
                "no port to publish: give at least one spec, e.g. 8080:80",
            ));
        }
        let mut requests = Vec::new();
        for spec in specs {
            let spec: PortSpec = spec.parse().map_err(|e: crate::portspec::PortSpecError| {
                ServiceError::invalid(e.to_string())
            })?;
            // (The datapath's view of the host's addresses, which 0.0.0.0 publishes answer
            // on, is kept current by the daemon as addresses change: see
            // `refresh_local_addrs`.)
            if let Some(ip) = spec.host_ip
                && !ip.is_loopback()
                && !self.host_has_address(ip).await?
            {
                return Err(ServiceError::Invalid {
                    what: format!("{ip} is not an address of this host"),
                    hint: Some(
                        "publish on one of the host's addresses, 127.0.0.1, or all (omit HOSTIP)"
                            .into(),
                    ),
                });
            }
            requests.extend(spec.requests());
        }
        let ep = self.get_endpoint(&req.endpoint).await?;
        let lock = self.net_lock(&ep.network);
        let _guard = lock.lock().await;
        let (id, ephemeral) = (ep.id.clone(), self.ephemeral_ports);
        let leases = db(&self.store, move |s| {
            s.lease_ports(&id, &requests, ephemeral, &hostports::busy)
        })
        .await
        .map_err(|e| match e {
            // Say which process holds it.
            ServiceError::State(StateError::HostPortInUse { lease, proto, port }) => {
                ServiceError::Conflict {
                    what: format!(
                        "port {lease} is taken on the host by {}",
                        hostports::owner(proto, port)
                    ),
                    hint: Some("pick another host port, or stop the process using it".into()),
                }
            }
            e => e,
        })?;
        // Map writes under the datapath lock, no await inside; on failure undo them.
        let published = {
            let mut dp = self.datapath();
            let r = leases
                .iter()
                .try_for_each(|l| dp.publish(publish_key(l), publish_target(l)));
            if r.is_err() {
                for l in &leases {
                    let _ = dp.unpublish(publish_key(l));
                }
            }
            r
        };
        if let Err(e) = published {
            // Release exactly the leases just taken (older ones of this endpoint stay).
            let (id, ids): (String, Vec<String>) =
                (ep.id.clone(), leases.iter().map(|l| l.id.clone()).collect());
            let _ = db(&self.store, move |s| {
                ids.iter()
                    .try_for_each(|lid| s.release_ports(Some(&id), Some(lid)).map(drop))
            })
            .await;
            return Err(e.into());
        }
        Ok(leases)
    }

    /// Unpublishes ports: the lease `lease` (`tcp/0.0.0.0:8080`), every port of endpoint
    /// `endpoint` (an id or unique prefix), or the lease only if it is that endpoint's.
    pub async fn unpublish_ports(
        &self,
        endpoint: Option<&str>,
        lease: Option<&str>,
    ) -> Result<Vec<PortLease>> {
        let ep = match endpoint {
            Some(e) => Some(self.get_endpoint(e).await?),
            None => None,
        };
        let lease = match lease {
            Some(l) => {
                let ports = self.list_ports().await?;
                let Some(found) = ports.into_iter().find(|p| p.id == l) else {
                    return Err(ServiceError::NotFound {
                        what: format!("no port is published as {l}"),
                        hint: Some("`netpath port ls` lists the published ports".into()),
                    });
                };
                if let Some(ep) = &ep
                    && found.endpoint != ep.id
                {
                    return Err(ServiceError::invalid(format!(
                        "port {l} is published for endpoint {}, not {}",
                        found.endpoint, ep.id
                    )));
                }
                Some(found)
            }
            None => None,
        };
        let network = match (&ep, &lease) {
            (Some(ep), _) => ep.network.clone(),
            (None, Some(l)) => self.get_endpoint(&l.endpoint).await?.network,
            (None, None) => {
                return Err(ServiceError::invalid(
                    "say what to unpublish: an endpoint, a port lease id (tcp/0.0.0.0:8080), or both",
                ));
            }
        };
        let lock = self.net_lock(&network);
        let _guard = lock.lock().await;
        let id = ep.map(|e| e.id);
        let lease_id = lease.map(|l| l.id);
        let gone = db(&self.store, move |s| {
            s.release_ports(id.as_deref(), lease_id.as_deref())
        })
        .await?;
        let mut dp = self.datapath();
        for l in &gone {
            dp.unpublish(publish_key(l))?;
        }
        Ok(gone)
    }

    pub async fn list_ports(&self) -> Result<Vec<PortLease>> {
        db(&self.store, |s| s.list_ports()).await
    }

    async fn host_has_address(&self, ip: Ipv4Addr) -> Result<bool> {
        Ok(self.nl.all_ipv4_addresses().await?.contains(&ip))
    }

    /// Tells the datapath which addresses are this host's: a 0.0.0.0 publish answers on
    /// those only (socket hooks and uplink DNAT). The daemon calls it at start, whenever
    /// the kernel announces an IPv4 address change (addresses come and go, e.g. with
    /// DHCP), and periodically as a safety net.
    pub async fn refresh_local_addrs(&self) -> Result<()> {
        let addrs: Vec<Ipv4Addr> = self
            .nl
            .all_ipv4_addresses()
            .await?
            .into_iter()
            .filter(|a| !a.is_loopback())
            .collect();
        self.datapath().set_local_addrs(&addrs)?;
        Ok(())
    }

    /// Every counter of the datapath, endpoints under their ids.
    pub async fn stats(&self) -> Result<StatsReport> {
        let records = self.list_endpoints(None).await?;
        Ok(crate::stats::report(&self.datapath(), &records)?)
    }

    /// Per-endpoint traffic counters.
    pub async fn endpoint_stats(&self) -> Result<Vec<EndpointStat>> {
        Ok(self.datapath().endpoint_stats()?)
    }

    /// Packets dropped for `reason` so far.
    pub fn drop_count(&self, reason: netpath_common::maps::DropReason) -> Result<u64> {
        Ok(self.datapath().drop_counter(reason)?.packets)
    }

    /// Rolls back endpoint records left `Creating` by an operation that cannot finish
    /// any more (a handler that panicked, say): the daemon runs this periodically, so
    /// such a record never waits for a restart. An operation in progress holds its
    /// network's lock from the record's creation until it is `Ready` or gone, so a record
    /// still `Creating` once that lock is taken belongs to no live operation. Returns a
    /// one-line summary per record rolled back.
    pub async fn sweep_unfinished(&self) -> Result<Vec<String>> {
        let mut actions = Vec::new();
        let candidates = self.list_endpoints(None).await?;
        for ep in candidates
            .into_iter()
            .filter(|e| e.state == EndpointState::Creating)
        {
            let lock = self.net_lock(&ep.network);
            let _guard = lock.lock().await;
            match self.get_endpoint(&ep.id).await {
                Ok(now) if now.state == EndpointState::Creating => {
                    self.roll_back(&now).await?;
                    actions.push(format!(
                        "released endpoint {} ({}): creation never finished",
                        now.id, now.ip
                    ));
                }
                // Finished or removed meanwhile.
                _ => {}
            }
        }
        Ok(actions)
    }

    /// Removes an endpoint's devices and map entries, then its record and leases.
    async fn roll_back(&self, ep: &Endpoint) -> Result<()> {
        self.unplumb_endpoint(ep).await?;
        let id = ep.id.clone();
        db(&self.store, move |s| s.release_endpoint(&id)).await?;
        Ok(())
    }

    /// Brings kernel state and records back in step after a restart or crash:
    /// unfinished endpoints are rolled back, endpoints whose device vanished are
    /// released, networks get their devices back, and tagged devices without a record
    /// are removed. Returns a one-line summary per action.
    pub async fn reconcile(&self) -> Result<Vec<String>> {
        let mut actions = Vec::new();
        let networks = self.list_networks().await?;
        for n in &networks {
            if self
                .nl
                .link_by_name(n.bridge.as_deref().unwrap_or_default())
                .await?
                .is_none()
                && n.bridge.is_some()
            {
                actions.push(format!("recreated the bridge of network {}", n.name));
            }
            self.plumb_network(n).await?;
        }
        let mut known: Vec<String> = networks.iter().filter_map(|n| n.bridge.clone()).collect();
        for ep in self.list_endpoints(None).await? {
            let link = self.nl.link_by_name(&ep.host_ifname).await?;
            // The host-side device alone says whether an endpoint lives: a veth pair dies
            // with its namespace, and a recorded namespace path may outlive it or not
            // (a `/proc/PID/ns/net` goes with that process, while the namespace may live
            // on, held by another).
            let gone = link.is_none();
            if ep.state == EndpointState::Creating || gone {
                self.roll_back(&ep).await?;
                actions.push(format!(
                    "released endpoint {} ({}): {}",
                    ep.id,
                    ep.ip,
                    if gone {
                        "its device is gone"
                    } else {
                        "creation never finished"
                    }
                ));
                continue;
            }
            let link = link.expect("checked above");
            let network = networks
                .iter()
                .find(|n| n.name == ep.network)
                .ok_or_else(|| {
                    ServiceError::Internal(format!("endpoint {} has no network", ep.id))
                })?;
            let mac = ep.mac.octets();
            let gateway = gateway_mac(self.bridge_link(network).await?.as_ref(), &link);
            let kind = match ep.kind {
                EndpointKind::Veth => ENDPOINT_KIND_VETH,
                EndpointKind::Tap => ENDPOINT_KIND_TAP,
            };
            self.register(network, &ep, link.index, mac, gateway, kind)?;
            known.push(ep.host_ifname.clone());
        }
        // Endpoints with leases are marked as published (maps pinned by a version that
        // had no such mark, or entries re-created above).
        let leases = db(&self.store, |s| s.list_ports()).await?;
        {
            let mut dp = self.datapath();
            for l in &leases {
                dp.mark_published(publish_target(l).addr)?;
            }
        }
        let links = self.nl.links().await?;
        let swept = self.datapath().sweep_link_pins(&links)?;
        if swept > 0 {
            actions.push(format!(
                "removed {swept} attachment pin(s) of deleted devices"
            ));
        }
        for link in links {
            let tagged = link.alias.as_deref().is_some_and(|a| {
                a.starts_with(&format!("{}{}:", config::ALIAS_PREFIX, self.instance))
            });
            if tagged && !known.contains(&link.name) {
                self.nl.delete_link(link.index).await?;
                self.datapath().forget_links(&link.name, link.index)?;
                actions.push(format!("removed orphan device {}", link.name));
            }
        }
        Ok(actions)
    }
}

/// Host ports handed out by default when a `-p` spec gives none (`netpath daemon
/// --ephemeral-ports`). Kept clear of Linux's ephemeral range (32768-60999), which
/// masquerade and host sockets use.
pub const EPHEMERAL_PORTS: (u16, u16) = (20000, 29999);

fn publish_key(l: &PortLease) -> PublishKey {
    PublishKey {
        host_ip: l.host_ip.octets(),
        port: l.host_port,
        proto: l.proto.number(),
        _pad: 0,
    }
}

fn publish_target(l: &PortLease) -> NatTarget {
    NatTarget {
        addr: l.guest_ip.octets(),
        port: l.guest_port,
        flags: 0,
        _pad: 0,
    }
}

fn kind_role(kind: EndpointKind) -> &'static str {
    match kind {
        EndpointKind::Veth => "veth",
        EndpointKind::Tap => "tap",
    }
}

/// The MAC of an endpoint's gateway, as the endpoint sees it (the datapath's
/// `EndpointValue::host_mac`): its network's bridge in bridge mode, else the host side of
/// its own link (routed veth, point-to-point TAP).
fn gateway_mac(bridge: Option<&crate::netlink::Link>, link: &crate::netlink::Link) -> [u8; 6] {
    bridge.and_then(|b| b.mac).or(link.mac).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_network_name("default").is_ok());
        assert!(validate_network_name("a-very-long-name").is_err());
        assert!(validate_network_name("bad/name").is_err());
        assert!(validate_ifname("ifname", "eth0").is_ok());
        assert!(validate_ifname("ifname", "0123456789abcdef").is_err());
        assert!(validate_ifname("ifname", "a/b").is_err());
    }
}
