//! The daemon's persistent state: networks, endpoints and IP leases in a redb database.
//!
//! This is the single source of truth of the control plane. Every mutating operation is
//! one redb write transaction that either fully happens or not at all; redb serializes
//! write transactions, so concurrent callers (many tokio tasks sharing one
//! `Arc<Store>`) never see or produce a half-done change. The calls block, so async
//! callers should run them with `tokio::task::spawn_blocking`.
//!
//! # Durability
//!
//! Two levels, chosen per operation (see [`Flush`]):
//! - networks are configuration a user expects back after a reboot: their commits are
//!   fsynced before they return;
//! - endpoint records and their port leases describe kernel objects (veths in
//!   namespaces, TAPs) that do not survive a reboot anyway: their commits are written
//!   to the file (so they survive a crash or `kill -9` of the daemon, which is what
//!   reconciliation is built for) but not fsynced, which saves ~1–2 ms per endpoint
//!   add, remove or port publish. After a power loss the next fsynced commit, or
//!   reconciliation, settles them.
//!
//! # Table layout
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `&str` | `u64` — `"schema_version"` → [`SCHEMA_VERSION`] |
//! | `networks` | network name | JSON [`Network`] |
//! | `network_ids` | network id `u16` | network name (index: smallest free id, id → name) |
//! | `endpoints` | endpoint id (12 hex) | JSON [`Endpoint`] |
//! | `host_ifnames` | host-side device name | endpoint id (index: no two endpoints share a device) |
//! | `ip_leases` | `(network id u16, IPv4 as u32)` | endpoint id |
//!
//! `ip_leases` is ordered by network id, then address, so one network's leases are one
//! contiguous range: the free-address search and the per-network endpoint listing are
//! range scans. Every endpoint has exactly one IP lease, so `ip_leases` is also the
//! network → endpoints index.
//!
//! Adding a table (e.g. port leases, keyed `(network id u16, proto u8, port u16)` →
//! endpoint id) means: a `TableDefinition`, a field in `Tables` (so it is created on
//! open and wiped by [`Store::clear`]), and a line in `remove_endpoint_rows` so releasing
//! an endpoint frees its rows. New tables need no schema version bump; bump
//! [`SCHEMA_VERSION`] only when an existing table's encoding changes (and migrate in
//! `Store::init`).

use std::{
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use redb::{
    Database, Durability, ReadableTable, StorageBackend, Table, TableDefinition, WriteTransaction,
    backends::FileBackend,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::model::{
    Endpoint, EndpointKind, EndpointState, MacAddr, Mode, Network, NetworkCreate, PortLease,
};
use crate::portspec::{HostPort, PortRequest, Proto};

/// Version of the table layout and encoding this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;
const SCHEMA_VERSION_KEY: &str = "schema_version";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const NETWORK_IDS: TableDefinition<u16, &str> = TableDefinition::new("network_ids");
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
const HOST_IFNAMES: TableDefinition<&str, &str> = TableDefinition::new("host_ifnames");
const IP_LEASES: TableDefinition<(u16, u32), &str> = TableDefinition::new("ip_leases");
/// Port leases by (protocol number, host port, host address as u32; 0 = every address)
/// → JSON `PortLease`. Keyed port-first so all leases of one (protocol, port) are one
/// range, which is what conflict checks scan.
const PORT_LEASES: TableDefinition<(u8, u16, u32), &[u8]> = TableDefinition::new("port_leases");

/// Length of an endpoint id (lowercase hex digits).
pub const ENDPOINT_ID_LEN: usize = 12;

/// Why an address cannot be leased (or used as a gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidIpReason {
    OutsideSubnet,
    NetworkAddress,
    BroadcastAddress,
    Gateway,
}

impl fmt::Display for InvalidIpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidIpReason::OutsideSubnet => "it is outside the subnet",
            InvalidIpReason::NetworkAddress => "it is the network address",
            InvalidIpReason::BroadcastAddress => "it is the broadcast address",
            InvalidIpReason::Gateway => "it is the gateway",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error(
        "the state database {} has schema version {found}, but this netpath supports version {supported}",
        path.display()
    )]
    UnsupportedSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("state database operation failed")]
    Db(#[source] Box<redb::Error>),
    #[error("corrupt {table} record {key:?} in the state database")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("network \"{name}\" already exists")]
    NetworkExists { name: String },
    #[error("network \"{name}\" does not exist")]
    NetworkNotFound { name: String },
    #[error("subnet {subnet} overlaps network \"{other}\" ({other_subnet})")]
    SubnetOverlap {
        subnet: Ipv4Net,
        other: String,
        other_subnet: Ipv4Net,
    },
    #[error("subnet {subnet} cannot be used: {reason}")]
    InvalidSubnet { subnet: Ipv4Net, reason: String },
    #[error("gateway {gateway} cannot be used in subnet {subnet}: {reason}")]
    InvalidGateway {
        gateway: Ipv4Addr,
        subnet: Ipv4Net,
        reason: InvalidIpReason,
    },
    #[error("no free network id: all {} are in use", u16::MAX)]
    NetworkIdsExhausted,
    #[error(
        "network \"{name}\" still has {endpoints} {}",
        if *endpoints == 1 { "endpoint" } else { "endpoints" }
    )]
    NetworkInUse { name: String, endpoints: usize },
    #[error("endpoint {id} does not exist")]
    EndpointNotFound { id: String },
    #[error("endpoint id prefix {prefix:?} matches several endpoints")]
    AmbiguousEndpointId { prefix: String },
    #[error("endpoint {id} already exists")]
    EndpointExists { id: String },
    #[error("invalid endpoint id {id:?}: expected {ENDPOINT_ID_LEN} lowercase hex digits")]
    InvalidEndpointId { id: String },
    #[error("host interface {ifname} is already used by endpoint {endpoint}")]
    HostIfnameInUse { ifname: String, endpoint: String },
    #[error("{ip} cannot be leased in network \"{network}\" ({subnet}): {reason}")]
    InvalidIp {
        network: String,
        subnet: Ipv4Net,
        ip: Ipv4Addr,
        reason: InvalidIpReason,
    },
    #[error("{ip} is already leased to endpoint {endpoint} in network \"{network}\"")]
    IpInUse {
        network: String,
        ip: Ipv4Addr,
        endpoint: String,
    },
    #[error("port {lease} is taken: endpoint {endpoint} has {holder} published")]
    PortInUse {
        /// The lease asked for.
        lease: String,
        /// The lease that holds it (the same, or one on 0.0.0.0 or a given address).
        holder: String,
        endpoint: String,
    },
    #[error("port {lease} is taken by a host socket")]
    HostPortInUse {
        lease: String,
        proto: Proto,
        port: u16,
    },
    #[error("no free host port left in {first}-{last}")]
    PortsExhausted { first: u16, last: u16 },
    #[error("network \"{network}\" ({subnet}) has no free address left")]
    SubnetExhausted { network: String, subnet: Ipv4Net },
}

impl StateError {
    /// What the user can do about this error, when there is something to do.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            StateError::Open { source, .. } => match source.as_ref() {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "another netpath daemon is using this state directory; stop it or pass \
                     another --state-dir"
                        .into()
                }
                _ => "check that the state directory exists and is writable".into(),
            },
            StateError::UnsupportedSchema { .. } => {
                "run the netpath version that wrote it, or `netpath reset` to start over".into()
            }
            StateError::NetworkExists { .. } => {
                "choose another name, or remove the existing network first".into()
            }
            StateError::SubnetOverlap { .. } => "choose a subnet that overlaps no network".into(),
            StateError::NetworkInUse { .. } => {
                "remove its endpoints first, or force the removal".into()
            }
            StateError::IpInUse { .. } => "omit the address to get a free one".into(),
            StateError::AmbiguousEndpointId { .. } => {
                "give more of the id (`netpath ls` lists them)".into()
            }
            StateError::InvalidIp { .. } => {
                "pick a host address of the subnet other than the gateway, or omit it".into()
            }
            StateError::SubnetExhausted { .. } => {
                "remove unused endpoints, or use a network with a larger subnet".into()
            }
            _ => return None,
        })
    }
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StateError {
            fn from(e: $t) -> Self {
                StateError::Db(Box::new(e.into()))
            }
        }
    )*};
}
db_error_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

type Result<T, E = StateError> = std::result::Result<T, E>;

/// What [`Store::create_network`] needs besides the request: the values the caller
/// resolved (defaults, the uplink of the default route, the bridge's name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedNetwork {
    pub gateway: Ipv4Addr,
    pub uplink: Option<String>,
    pub mtu: u32,
    /// The bridge (bridge mode), `None` in routed mode.
    pub bridge: Option<String>,
}

/// An endpoint to reserve: everything of [`Endpoint`] except what the store decides
/// (the address when not requested, prefix length, gateway, state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEndpoint {
    /// 12 lowercase hex digits, e.g. from [`Store::new_endpoint_id`].
    pub id: String,
    pub network: String,
    pub kind: EndpointKind,
    /// The requested address; `None`: the lowest free host address.
    pub ip: Option<Ipv4Addr>,
    pub mac: MacAddr,
    pub host_ifname: String,
    pub ifname: Option<String>,
    pub netns: Option<PathBuf>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub queues: Option<u16>,
    /// The CNI container id, for endpoints made by the CNI plugin.
    pub container_id: Option<String>,
    /// The inode of the container's network namespace (see [`Endpoint::netns_inode`]).
    pub netns_inode: Option<u64>,
}

/// The state database. Cheap to share: put it in an `Arc`.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Every table, opened in one write transaction.
struct Tables<'t> {
    meta: Table<'t, &'static str, u64>,
    networks: Table<'t, &'static str, &'static [u8]>,
    network_ids: Table<'t, u16, &'static str>,
    endpoints: Table<'t, &'static str, &'static [u8]>,
    host_ifnames: Table<'t, &'static str, &'static str>,
    ip_leases: Table<'t, (u16, u32), &'static str>,
    port_leases: Table<'t, (u8, u16, u32), &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self> {
        Ok(Tables {
            meta: txn.open_table(META)?,
            networks: txn.open_table(NETWORKS)?,
            network_ids: txn.open_table(NETWORK_IDS)?,
            endpoints: txn.open_table(ENDPOINTS)?,
            host_ifnames: txn.open_table(HOST_IFNAMES)?,
            ip_leases: txn.open_table(IP_LEASES)?,
            port_leases: txn.open_table(PORT_LEASES)?,
        })
    }
}

impl Store {
    /// Opens (creating if needed) the database file at `path`; its directory must exist.
    pub fn open(path: &Path) -> Result<Store> {
        let open_err = |source: redb::DatabaseError| StateError::Open {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| open_err(e.into()))?;
        // FileBackend takes redb's lock on the file, as `Database::create` would.
        let backend = FileBackend::new(file).map_err(open_err)?;
        let db = redb::Builder::new()
            .create_with_backend(CrashDurableFile(backend))
            .map_err(open_err)?;
        let store = Store {
            db,
            path: path.to_owned(),
        };
        store.init()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the tables and checks (or writes) the schema version.
    fn init(&self) -> Result<()> {
        self.write(|t| {
            let found = t.meta.get(SCHEMA_VERSION_KEY)?.map(|g| g.value());
            match found {
                None => {
                    t.meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => {
                    return Err(StateError::UnsupportedSchema {
                        path: self.path.clone(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            Ok(())
        })
    }

    /// Runs `f` in one write transaction: committed (and fsynced) if it returns `Ok`,
    /// aborted otherwise.
    fn write<T>(&self, f: impl FnOnce(&mut Tables<'_>) -> Result<T>) -> Result<T> {
        self.write_with(Flush::Fsync, f)
    }

    /// [`Store::write`] at the given durability.
    fn write_with<T>(
        &self,
        flush: Flush,
        f: impl FnOnce(&mut Tables<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(match flush {
            Flush::Fsync => Durability::Immediate,
            Flush::CrashOnly => Durability::Eventual,
        });
        let out = {
            let mut tables = Tables::open(&txn)?;
            f(&mut tables)
        };
        match out {
            Ok(v) => {
                txn.commit()?;
                Ok(v)
            }
            Err(e) => {
                // Nothing was written; an error while discarding changes nothing for
                // the caller, whose error is the one that matters.
                let _ = txn.abort();
                Err(e)
            }
        }
    }

    /// Creates a network with the smallest free id ≥ 1.
    pub fn create_network(
        &self,
        req: &NetworkCreate,
        resolved: ResolvedNetwork,
    ) -> Result<Network> {
        let subnet = req.subnet;
        if subnet.prefix_len() > 30 {
            return Err(StateError::InvalidSubnet {
                subnet,
                reason:
                    "it has no room for a gateway and endpoints (the prefix must be /30 or shorter)"
                        .into(),
            });
        }
        if subnet.trunc() != subnet {
            return Err(StateError::InvalidSubnet {
                subnet,
                reason: format!("it has host bits set (did you mean {}?)", subnet.trunc()),
            });
        }
        if let Some(reason) = unusable_reason(subnet, None, resolved.gateway) {
            return Err(StateError::InvalidGateway {
                gateway: resolved.gateway,
                subnet,
                reason,
            });
        }
        self.write(|t| {
            if t.networks.get(req.name.as_str())?.is_some() {
                return Err(StateError::NetworkExists {
                    name: req.name.clone(),
                });
            }
            for item in t.networks.iter()? {
                let (k, v) = item?;
                let other: Network = decode(NETWORKS_NAME, k.value(), v.value())?;
                if overlaps(subnet, other.subnet) {
                    return Err(StateError::SubnetOverlap {
                        subnet,
                        other: other.name,
                        other_subnet: other.subnet,
                    });
                }
            }
            let id = smallest_free_network_id(&t.network_ids)?;
            let network = Network {
                id,
                name: req.name.clone(),
                subnet,
                gateway: resolved.gateway,
                mode: req.mode,
                uplink: resolved.uplink,
                mtu: resolved.mtu,
                bridge: resolved.bridge,
                no_masquerade: req.no_masquerade.clone(),
            };
            t.networks
                .insert(network.name.as_str(), encode(&network).as_slice())?;
            t.network_ids.insert(id, network.name.as_str())?;
            Ok(network)
        })
    }

    /// Removes a network. With endpoints, fails with [`StateError::NetworkInUse`] unless
    /// `force`, in which case its endpoints and their leases go too and are returned (the
    /// caller then deletes their devices).
    pub fn remove_network(&self, name: &str, force: bool) -> Result<(Network, Vec<Endpoint>)> {
        self.write(|t| {
            let network = read_network(&t.networks, name)?;
            let ids = leased_endpoint_ids(&t.ip_leases, network.id)?;
            if !ids.is_empty() && !force {
                return Err(StateError::NetworkInUse {
                    name: name.to_owned(),
                    endpoints: ids.len(),
                });
            }
            let mut removed = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(ep) = find_endpoint(&t.endpoints, &id)? {
                    remove_endpoint_rows(t, &ep, Some(network.id))?;
                    removed.push(ep);
                }
            }
            // Nothing should be left; make sure no lease outlives its network.
            t.ip_leases
                .retain_in((network.id, 0)..=(network.id, u32::MAX), |_, _| false)?;
            t.networks.remove(name)?;
            t.network_ids.remove(network.id)?;
            removed.sort_by(|a, b| a.id.cmp(&b.id));
            Ok((network, removed))
        })
    }

    pub fn get_network(&self, name: &str) -> Result<Network> {
        let txn = self.db.begin_read()?;
        read_network(&txn.open_table(NETWORKS)?, name)
    }

    /// Every network, by name.
    pub fn list_networks(&self) -> Result<Vec<Network>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(NETWORKS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push(decode(NETWORKS_NAME, k.value(), v.value())?);
        }
        Ok(out)
    }

    /// A fresh endpoint id: 12 random lowercase hex digits, unused by any endpoint.
    /// [`Store::reserve_endpoint`] still rejects a duplicate, should another caller
    /// reserve the same id in between (48 random bits make that practically impossible).
    pub fn new_endpoint_id(&self) -> Result<String> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENDPOINTS)?;
        loop {
            let id = format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
            if table.get(id.as_str())?.is_none() {
                return Ok(id);
            }
        }
    }

    /// Writes a `Creating` endpoint record and leases its address, in one transaction.
    pub fn reserve_endpoint(&self, new: NewEndpoint) -> Result<Endpoint> {
        if !is_endpoint_id(&new.id) {
            return Err(StateError::InvalidEndpointId { id: new.id });
        }
        self.write_with(Flush::CrashOnly, |t| {
            let network = read_network(&t.networks, &new.network)?;
            if t.endpoints.get(new.id.as_str())?.is_some() {
                return Err(StateError::EndpointExists { id: new.id });
            }
            let owner = t
                .host_ifnames
                .get(new.host_ifname.as_str())?
                .map(|g| g.value().to_owned());
            if let Some(endpoint) = owner {
                return Err(StateError::HostIfnameInUse {
                    ifname: new.host_ifname,
                    endpoint,
                });
            }
            let ip = match new.ip {
                Some(ip) => {
                    if let Some(reason) = unusable_reason(network.subnet, Some(network.gateway), ip)
                    {
                        return Err(StateError::InvalidIp {
                            network: network.name,
                            subnet: network.subnet,
                            ip,
                            reason,
                        });
                    }
                    let owner = t
                        .ip_leases
                        .get((network.id, u32::from(ip)))?
                        .map(|g| g.value().to_owned());
                    if let Some(endpoint) = owner {
                        return Err(StateError::IpInUse {
                            network: network.name,
                            ip,
                            endpoint,
                        });
                    }
                    ip
                }
                None => lowest_free_ip(&t.ip_leases, &network)?.ok_or_else(|| {
                    StateError::SubnetExhausted {
                        network: network.name.clone(),
                        subnet: network.subnet,
                    }
                })?,
            };
            let endpoint = Endpoint {
                id: new.id,
                network: network.name,
                kind: new.kind,
                state: EndpointState::Creating,
                ip,
                // A bridged container shares the subnet's link; a routed container
                // and a microVM are point-to-point /32s behind their gateway.
                prefix_len: match (new.kind, network.mode) {
                    (EndpointKind::Veth, Mode::Bridge) => network.subnet.prefix_len(),
                    _ => 32,
                },
                mac: new.mac,
                gateway: network.gateway,
                host_ifname: new.host_ifname,
                ifname: new.ifname,
                netns: new.netns,
                uid: new.uid,
                gid: new.gid,
                queues: new.queues,
                container_id: new.container_id,
                netns_inode: new.netns_inode,
            };
            t.endpoints
                .insert(endpoint.id.as_str(), encode(&endpoint).as_slice())?;
            t.ip_leases
                .insert((network.id, u32::from(ip)), endpoint.id.as_str())?;
            t.host_ifnames
                .insert(endpoint.host_ifname.as_str(), endpoint.id.as_str())?;
            Ok(endpoint)
        })
    }

    /// Marks an endpoint `Ready` (its devices exist). Idempotent.
    pub fn mark_ready(&self, id: &str) -> Result<Endpoint> {
        self.write_with(Flush::CrashOnly, |t| {
            let mut endpoint = read_endpoint(&t.endpoints, id)?;
            if endpoint.state != EndpointState::Ready {
                endpoint.state = EndpointState::Ready;
                t.endpoints.insert(id, encode(&endpoint).as_slice())?;
            }
            Ok(endpoint)
        })
    }

    /// Removes an endpoint record and frees its address; returns the removed record.
    pub fn release_endpoint(&self, id: &str) -> Result<Endpoint> {
        self.write_with(Flush::CrashOnly, |t| {
            let endpoint = read_endpoint(&t.endpoints, id)?;
            let network_id = t
                .networks
                .get(endpoint.network.as_str())?
                .map(|g| decode::<Network>(NETWORKS_NAME, &endpoint.network, g.value()))
                .transpose()?
                .map(|n| n.id);
            remove_endpoint_rows(t, &endpoint, network_id)?;
            Ok(endpoint)
        })
    }

    pub fn get_endpoint(&self, id: &str) -> Result<Endpoint> {
        let txn = self.db.begin_read()?;
        read_endpoint(&txn.open_table(ENDPOINTS)?, id)
    }

    /// The endpoint whose id is `id` or, as with Docker's ids, the only one whose id starts
    /// with `id`. [`StateError::EndpointNotFound`] if none does,
    /// [`StateError::AmbiguousEndpointId`] if several do.
    pub fn find_endpoint_by_prefix(&self, id: &str) -> Result<Endpoint> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENDPOINTS)?;
        if let Some(ep) = find_endpoint(&table, id)? {
            return Ok(ep);
        }
        let not_found = || StateError::EndpointNotFound { id: id.to_owned() };
        if id.is_empty() {
            return Err(not_found());
        }
        let mut matches = Vec::new();
        for item in table.range(id..)? {
            let (k, v) = item?;
            if !k.value().starts_with(id) {
                break;
            }
            matches.push(decode::<Endpoint>(ENDPOINTS_NAME, k.value(), v.value())?);
            if matches.len() > 1 {
                return Err(StateError::AmbiguousEndpointId {
                    prefix: id.to_owned(),
                });
            }
        }
        matches.pop().ok_or_else(not_found)
    }

    /// Every endpoint (of `network`, if given; [`StateError::NetworkNotFound`] if it
    /// does not exist), by id.
    pub fn list_endpoints(&self, network: Option<&str>) -> Result<Vec<Endpoint>> {
        let txn = self.db.begin_read()?;
        let endpoints = txn.open_table(ENDPOINTS)?;
        let mut out = Vec::new();
        match network {
            None => {
                for item in endpoints.iter()? {
                    let (k, v) = item?;
                    out.push(decode(ENDPOINTS_NAME, k.value(), v.value())?);
                }
            }
            Some(name) => {
                let network = read_network(&txn.open_table(NETWORKS)?, name)?;
                let ids = leased_endpoint_ids(&txn.open_table(IP_LEASES)?, network.id)?;
                for id in ids {
                    if let Some(ep) = find_endpoint(&endpoints, &id)? {
                        out.push(ep);
                    }
                }
                out.sort_by(|a, b| a.id.cmp(&b.id));
            }
        }
        Ok(out)
    }

    /// Leases host ports for endpoint `endpoint_id`, all or none. A port conflicts with
    /// a lease of the same protocol and port whose address is the same or either is
    /// 0.0.0.0, and with a host socket bound to it (`host_busy` says, see
    /// [`crate::hostports::busy`]); a
    /// [`HostPort::FirstFree`] or [`HostPort::Ephemeral`] request takes the lowest port of
    /// its range (`ephemeral` for the latter) that conflicts with neither.
    pub fn lease_ports(
        &self,
        endpoint_id: &str,
        requests: &[PortRequest],
        ephemeral: (u16, u16),
        host_busy: &(dyn Fn(Proto, Ipv4Addr, u16) -> bool + Sync),
    ) -> Result<Vec<PortLease>> {
        self.write_with(Flush::CrashOnly, |t| {
            let ep = read_endpoint(&t.endpoints, endpoint_id)?;
            let mut out = Vec::new();
            for r in requests {
                let (proto, host_ip) = (r.proto, r.host_ip);
                let port = match r.host {
                    HostPort::Exact(p) => {
                        let lease = PortLease::lease_id(proto, host_ip, p);
                        if let Some(holder) = port_holder(&t.port_leases, proto, host_ip, p)? {
                            return Err(StateError::PortInUse {
                                lease,
                                holder: holder.id,
                                endpoint: holder.endpoint,
                            });
                        }
                        if host_busy(proto, host_ip, p) {
                            return Err(StateError::HostPortInUse {
                                lease,
                                proto,
                                port: p,
                            });
                        }
                        p
                    }
                    HostPort::FirstFree(_) | HostPort::Ephemeral => {
                        let (first, last) = match r.host {
                            HostPort::FirstFree(range) => (range.first, range.last),
                            _ => ephemeral,
                        };
                        let mut found = None;
                        for p in first..=last {
                            if port_holder(&t.port_leases, proto, host_ip, p)?.is_none()
                                && !host_busy(proto, host_ip, p)
                            {
                                found = Some(p);
                                break;
                            }
                        }
                        found.ok_or(StateError::PortsExhausted { first, last })?
                    }
                };
                let lease = PortLease {
                    id: PortLease::lease_id(proto, host_ip, port),
                    endpoint: ep.id.clone(),
                    proto,
                    host_ip,
                    host_port: port,
                    guest_ip: ep.ip,
                    guest_port: r.guest_port,
                };
                t.port_leases.insert(
                    (proto.number(), port, u32::from(host_ip)),
                    encode(&lease).as_slice(),
                )?;
                out.push(lease);
            }
            Ok(out)
        })
    }

    /// Releases port leases: the one with id `lease_id` if given, else every lease of
    /// `endpoint_id`. Returns what was released.
    pub fn release_ports(
        &self,
        endpoint_id: Option<&str>,
        lease_id: Option<&str>,
    ) -> Result<Vec<PortLease>> {
        self.write_with(Flush::CrashOnly, |t| {
            let mut gone = Vec::new();
            t.port_leases.retain(|_, v| {
                let Ok(l) = serde_json::from_slice::<PortLease>(v) else {
                    return true;
                };
                let hit = lease_id.is_none_or(|id| l.id == id)
                    && endpoint_id.is_none_or(|e| l.endpoint == e);
                if hit {
                    gone.push(l);
                }
                !hit
            })?;
            Ok(gone)
        })
    }

    /// Every port lease, by protocol, port and address.
    pub fn list_ports(&self) -> Result<Vec<PortLease>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PORT_LEASES)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let (proto, port, ip) = k.value();
            out.push(decode(
                PORTS_NAME,
                &format!("{proto}/{ip}:{port}"),
                v.value(),
            )?);
        }
        Ok(out)
    }

    /// Removes every network, endpoint and lease (the schema version stays).
    pub fn clear(&self) -> Result<()> {
        self.write(|t| {
            t.networks.retain(|_, _| false)?;
            t.network_ids.retain(|_, _| false)?;
            t.endpoints.retain(|_, _| false)?;
            t.host_ifnames.retain(|_, _| false)?;
            t.ip_leases.retain(|_, _| false)?;
            t.port_leases.retain(|_, _| false)?;
            Ok(())
        })
    }
}

const NETWORKS_NAME: &str = "network";
const PORTS_NAME: &str = "port lease";

/// The endpoint holding a lease that conflicts with (`proto`, `host_ip`, `port`).
fn port_holder(
    leases: &impl ReadableTable<(u8, u16, u32), &'static [u8]>,
    proto: Proto,
    host_ip: Ipv4Addr,
    port: u16,
) -> Result<Option<PortLease>> {
    let n = proto.number();
    for item in leases.range((n, port, 0)..=(n, port, u32::MAX))? {
        let (k, v) = item?;
        let ip = k.value().2;
        if ip == 0 || host_ip.is_unspecified() || ip == u32::from(host_ip) {
            return Ok(Some(decode(
                PORTS_NAME,
                &format!("{n}/{ip}:{port}"),
                v.value(),
            )?));
        }
    }
    Ok(None)
}
const ENDPOINTS_NAME: &str = "endpoint";

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // The model types are plain structs with string keys: serializing cannot fail.
    serde_json::to_vec(value).expect("model types serialize to JSON")
}

fn decode<T: DeserializeOwned>(table: &'static str, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StateError::Corrupt {
        table,
        key: key.to_owned(),
        source,
    })
}

fn read_network(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Network> {
    match table.get(name)? {
        Some(v) => decode(NETWORKS_NAME, name, v.value()),
        None => Err(StateError::NetworkNotFound {
            name: name.to_owned(),
        }),
    }
}

fn find_endpoint(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Endpoint>> {
    table
        .get(id)?
        .map(|v| decode(ENDPOINTS_NAME, id, v.value()))
        .transpose()
}

fn read_endpoint(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Endpoint> {
    find_endpoint(table, id)?.ok_or_else(|| StateError::EndpointNotFound { id: id.to_owned() })
}

/// The ids of the endpoints holding a lease in network `network_id`, by address.
fn leased_endpoint_ids(
    leases: &impl ReadableTable<(u16, u32), &'static str>,
    network_id: u16,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for item in leases.range((network_id, 0)..=(network_id, u32::MAX))? {
        let (_, v) = item?;
        ids.push(v.value().to_owned());
    }
    Ok(ids)
}

/// Deletes every row that belongs to `endpoint`. `network_id`: its network's id, when
/// the network exists. Rows are removed only if they still point at this endpoint.
fn remove_endpoint_rows(
    t: &mut Tables<'_>,
    endpoint: &Endpoint,
    network_id: Option<u16>,
) -> Result<()> {
    t.endpoints.remove(endpoint.id.as_str())?;
    let id = endpoint.id.clone();
    t.port_leases
        .retain(|_, v| serde_json::from_slice::<PortLease>(v).map_or(true, |l| l.endpoint != id))?;
    if let Some(nid) = network_id {
        let key = (nid, u32::from(endpoint.ip));
        let owned = t
            .ip_leases
            .get(key)?
            .is_some_and(|g| g.value() == endpoint.id);
        if owned {
            t.ip_leases.remove(key)?;
        }
    }
    let owned = t
        .host_ifnames
        .get(endpoint.host_ifname.as_str())?
        .is_some_and(|g| g.value() == endpoint.id);
    if owned {
        t.host_ifnames.remove(endpoint.host_ifname.as_str())?;
    }
    Ok(())
}

fn smallest_free_network_id(ids: &impl ReadableTable<u16, &'static str>) -> Result<u16> {
    let mut id: u16 = 1;
    for item in ids.range(1u16..)? {
        let (k, _) = item?;
        if k.value() != id {
            break;
        }
        id = id.checked_add(1).ok_or(StateError::NetworkIdsExhausted)?;
    }
    Ok(id)
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why `ip` is not a leasable host address of `subnet` (`gateway`: also excluded).
fn unusable_reason(
    subnet: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    ip: Ipv4Addr,
) -> Option<InvalidIpReason> {
    if !subnet.contains(&ip) {
        Some(InvalidIpReason::OutsideSubnet)
    } else if ip == subnet.network() {
        Some(InvalidIpReason::NetworkAddress)
    } else if ip == subnet.broadcast() {
        Some(InvalidIpReason::BroadcastAddress)
    } else if Some(ip) == gateway {
        Some(InvalidIpReason::Gateway)
    } else {
        None
    }
}

/// The lowest host address of `network` that is neither the gateway nor leased: one
/// ordered range scan over the network's leases, stopping at the first gap.
/// How durable a commit must be (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flush {
    /// Written and fsynced before the commit returns: survives a power loss.
    Fsync,
    /// Written to the file (the page cache) before the commit returns: survives the
    /// daemon crashing, not necessarily the machine.
    CrashOnly,
}

/// redb's file backend, except that an `eventual` sync (what [`Durability::Eventual`]
/// commits ask for) only orders the writes instead of waiting for the disk. On Linux,
/// redb's own backend fsyncs for both levels.
///
/// Within one running kernel, completed `pwrite`s are visible in order to any later
/// reader, so a commit that returned survives the process being killed at any point.
#[derive(Debug)]
struct CrashDurableFile(FileBackend);

impl StorageBackend for CrashDurableFile {
    fn len(&self) -> std::result::Result<u64, std::io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, len: usize) -> std::result::Result<Vec<u8>, std::io::Error> {
        self.0.read(offset, len)
    }

    fn set_len(&self, len: u64) -> std::result::Result<(), std::io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> std::result::Result<(), std::io::Error> {
        if eventual {
            Ok(())
        } else {
            self.0.sync_data(false)
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), std::io::Error> {
        self.0.write(offset, data)
    }
}

fn lowest_free_ip(
    leases: &impl ReadableTable<(u16, u32), &'static str>,
    network: &Network,
) -> Result<Option<Ipv4Addr>> {
    // Subnets are /30 or shorter, so first <= last and neither computation overflows.
    let first = u32::from(network.subnet.network()) + 1;
    let last = u32::from(network.subnet.broadcast()) - 1;
    let gateway = u32::from(network.gateway);
    // The gateway is a host address (< broadcast), so skipping it never overflows.
    let skip_gateway = |ip: u32| if ip == gateway { ip + 1 } else { ip };
    let mut candidate = skip_gateway(first);
    for item in leases.range((network.id, first)..=(network.id, last))? {
        let (k, _) = item?;
        let (_, leased) = k.value();
        if leased > candidate {
            break;
        }
        if leased == candidate {
            candidate = skip_gateway(candidate + 1);
        }
    }
    Ok((candidate <= last).then(|| Ipv4Addr::from(candidate)))
}

fn is_endpoint_id(id: &str) -> bool {
    id.len() == ENDPOINT_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet, HashSet},
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::{Instant, SystemTime, UNIX_EPOCH},
    };

    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::model::Mode;

    const _: () = {
        const fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Store>();
        assert_send_sync::<StateError>();
    };

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "netpath-state-test-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("state.redb")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn create(store: &Store, name: &str, subnet: &str) -> Result<Network> {
        let subnet = net(subnet);
        let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
        create_gw(store, name, &subnet.to_string(), gateway)
    }

    fn create_gw(store: &Store, name: &str, subnet: &str, gateway: Ipv4Addr) -> Result<Network> {
        let req = NetworkCreate {
            name: name.into(),
            subnet: net(subnet),
            mode: Mode::Bridge,
            gateway: Some(gateway),
            uplink: None,
            mtu: None,
            no_masquerade: Vec::new(),
        };
        store.create_network(
            &req,
            ResolvedNetwork {
                gateway,
                uplink: Some("eth0".into()),
                mtu: 1500,
                bridge: Some(format!("np-{name}")),
            },
        )
    }

    fn new_ep(store: &Store, network: &str, ip: Option<Ipv4Addr>) -> NewEndpoint {
        let id = store.new_endpoint_id().unwrap();
        NewEndpoint {
            host_ifname: format!("np-{id}"),
            id,
            network: network.into(),
            kind: EndpointKind::Veth,
            ip,
            mac: "02:00:00:00:00:01".parse().unwrap(),
            ifname: Some("eth0".into()),
            netns: Some("/run/netns/x".into()),
            uid: None,
            gid: None,
            queues: None,
            container_id: None,
            netns_inode: None,
        }
    }

    fn reserve(store: &Store, network: &str, ip: Option<Ipv4Addr>) -> Result<Endpoint> {
        store.reserve_endpoint(new_ep(store, network, ip))
    }

    /// Every lease in the database, as (network id, ip) → endpoint id.
    fn all_leases(store: &Store) -> BTreeMap<(u16, u32), String> {
        let txn = store.db.begin_read().unwrap();
        let t = txn.open_table(IP_LEASES).unwrap();
        t.iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value(), v.value().to_owned())
            })
            .collect()
    }

    #[test]
    fn concurrent_reservations_never_share_an_ip() {
        let dir = TempDir::new();
        let store = Arc::new(Store::open(&dir.db()).unwrap());
        create(&store, "n", "10.9.0.0/24").unwrap();
        let results: Vec<(Vec<Endpoint>, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let store = Arc::clone(&store);
                    s.spawn(move || {
                        let mut got = Vec::new();
                        let mut exhausted = 0;
                        for _ in 0..50 {
                            match reserve(&store, "n", None) {
                                Ok(ep) => got.push(ep),
                                Err(StateError::SubnetExhausted { network, subnet }) => {
                                    assert_eq!(network, "n");
                                    assert_eq!(subnet, net("10.9.0.0/24"));
                                    exhausted += 1;
                                }
                                Err(e) => panic!("unexpected error: {e}"),
                            }
                        }
                        (got, exhausted)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let eps: Vec<Endpoint> = results.iter().flat_map(|(g, _)| g.clone()).collect();
        let exhausted: usize = results.iter().map(|(_, e)| e).sum();
        let usable = 256 - 3;
        assert_eq!(eps.len(), usable);
        assert_eq!(exhausted, 8 * 50 - usable);
        let ips: HashSet<Ipv4Addr> = eps.iter().map(|e| e.ip).collect();
        assert_eq!(ips.len(), usable, "an IP was handed out twice");
        for a in [ip("10.9.0.0"), ip("10.9.0.1"), ip("10.9.0.255")] {
            assert!(!ips.contains(&a));
        }
        assert_eq!(all_leases(&store).len(), usable);
        assert_eq!(store.list_endpoints(Some("n")).unwrap().len(), usable);
        // Once exhausted, a specific request is refused as in use.
        assert!(matches!(
            reserve(&store, "n", Some(ip("10.9.0.7"))),
            Err(StateError::IpInUse { .. })
        ));
    }

    #[test]
    fn state_persists_across_reopen() {
        let dir = TempDir::new();
        let (network, ready, creating) = {
            let store = Store::open(&dir.db()).unwrap();
            let network = create(&store, "a", "10.1.0.0/24").unwrap();
            let e1 = reserve(&store, "a", None).unwrap();
            let ready = store.mark_ready(&e1.id).unwrap();
            let creating = reserve(&store, "a", None).unwrap();
            (network, ready, creating)
        };
        let store = Store::open(&dir.db()).unwrap();
        assert_eq!(store.list_networks().unwrap(), vec![network.clone()]);
        assert_eq!(store.get_network("a").unwrap(), network);
        assert_eq!(
            store.get_endpoint(&ready.id).unwrap().state,
            EndpointState::Ready
        );
        assert_eq!(store.get_endpoint(&creating.id).unwrap(), creating);
        let mut expected = vec![ready.clone(), creating.clone()];
        expected.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(store.list_endpoints(None).unwrap(), expected);
        assert_eq!(store.list_endpoints(Some("a")).unwrap(), expected);
        // Leases survived: the next address follows the two taken ones.
        assert_eq!(reserve(&store, "a", None).unwrap().ip, ip("10.1.0.4"));
    }

    #[test]
    fn second_open_of_same_file_is_refused() {
        let dir = TempDir::new();
        let _store = Store::open(&dir.db()).unwrap();
        let err = Store::open(&dir.db()).unwrap_err();
        assert!(matches!(err, StateError::Open { .. }), "{err}");
        assert!(err.hint().unwrap().contains("another netpath daemon"));
        let missing = dir.0.join("no/such/dir/state.redb");
        assert!(matches!(
            Store::open(&missing),
            Err(StateError::Open { .. })
        ));
    }

    #[test]
    fn subnet_overlap_is_detected_both_ways() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        create(&store, "a", "10.1.0.0/16").unwrap();
        for (name, subnet) in [
            ("inner", "10.1.2.0/24"),
            ("outer", "10.0.0.0/8"),
            ("same", "10.1.0.0/16"),
            ("last", "10.1.255.252/30"),
        ] {
            let err = create(&store, name, subnet).unwrap_err();
            match &err {
                StateError::SubnetOverlap {
                    subnet: s,
                    other,
                    other_subnet,
                } => {
                    assert_eq!(*s, net(subnet));
                    assert_eq!(other, "a");
                    assert_eq!(*other_subnet, net("10.1.0.0/16"));
                }
                e => panic!("{name}: unexpected {e}"),
            }
            assert_eq!(
                err.to_string(),
                format!("subnet {subnet} overlaps network \"a\" (10.1.0.0/16)")
            );
        }
        // Adjacent subnets do not overlap.
        create(&store, "b", "10.2.0.0/16").unwrap();
        create(&store, "c", "10.0.255.0/24").unwrap();
        let err = create(&store, "a", "192.168.0.0/24").unwrap_err();
        assert!(matches!(&err, StateError::NetworkExists { name } if name == "a"));
        assert_eq!(err.to_string(), "network \"a\" already exists");
        let names: Vec<String> = store
            .list_networks()
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn subnet_and_gateway_are_validated() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        assert!(matches!(
            create(&store, "x", "10.1.0.0/31"),
            Err(StateError::InvalidSubnet { .. })
        ));
        assert!(matches!(
            create_gw(&store, "x", "10.1.0.5/24", ip("10.1.0.1")),
            Err(StateError::InvalidSubnet { .. })
        ));
        for (gw, reason) in [
            ("10.1.0.0", InvalidIpReason::NetworkAddress),
            ("10.1.0.255", InvalidIpReason::BroadcastAddress),
            ("10.2.0.1", InvalidIpReason::OutsideSubnet),
        ] {
            match create_gw(&store, "x", "10.1.0.0/24", ip(gw)) {
                Err(StateError::InvalidGateway { reason: r, .. }) => assert_eq!(r, reason),
                other => panic!("{gw}: {other:?}"),
            }
        }
        assert!(store.list_networks().unwrap().is_empty());
    }

    #[test]
    fn network_ids_are_smallest_free() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        assert_eq!(create(&store, "a", "10.1.0.0/24").unwrap().id, 1);
        assert_eq!(create(&store, "b", "10.2.0.0/24").unwrap().id, 2);
        assert_eq!(create(&store, "c", "10.3.0.0/24").unwrap().id, 3);
        store.remove_network("b", false).unwrap();
        assert_eq!(create(&store, "d", "10.4.0.0/24").unwrap().id, 2);
        assert_eq!(create(&store, "e", "10.5.0.0/24").unwrap().id, 4);
        store.remove_network("a", false).unwrap();
        assert_eq!(create(&store, "f", "10.6.0.0/24").unwrap().id, 1);
    }

    #[test]
    fn invalid_and_taken_ips_are_refused() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        create(&store, "n", "10.1.0.0/24").unwrap();
        for (a, reason) in [
            ("10.1.0.0", InvalidIpReason::NetworkAddress),
            ("10.1.0.1", InvalidIpReason::Gateway),
            ("10.1.0.255", InvalidIpReason::BroadcastAddress),
            ("10.1.1.5", InvalidIpReason::OutsideSubnet),
            ("192.168.0.1", InvalidIpReason::OutsideSubnet),
        ] {
            match reserve(&store, "n", Some(ip(a))) {
                Err(StateError::InvalidIp {
                    network,
                    subnet,
                    ip: got,
                    reason: r,
                }) => {
                    assert_eq!(network, "n");
                    assert_eq!(subnet, net("10.1.0.0/24"));
                    assert_eq!(got, ip(a));
                    assert_eq!(r, reason);
                }
                other => panic!("{a}: {other:?}"),
            }
        }
        let err = reserve(&store, "n", Some(ip("10.1.0.0"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.1.0.0 cannot be leased in network \"n\" (10.1.0.0/24): it is the network address"
        );
        let first = reserve(&store, "n", Some(ip("10.1.0.77"))).unwrap();
        assert_eq!(first.ip, ip("10.1.0.77"));
        assert_eq!(first.state, EndpointState::Creating);
        assert_eq!(first.prefix_len, 24);
        assert_eq!(first.gateway, ip("10.1.0.1"));
        let err = reserve(&store, "n", Some(ip("10.1.0.77"))).unwrap_err();
        assert!(
            matches!(&err, StateError::IpInUse { ip: a, endpoint, .. } if *a == ip("10.1.0.77") && *endpoint == first.id)
        );
        assert_eq!(
            err.to_string(),
            format!(
                "10.1.0.77 is already leased to endpoint {} in network \"n\"",
                first.id
            )
        );
        // Failed reservations wrote nothing.
        assert_eq!(store.list_endpoints(None).unwrap(), vec![first.clone()]);
        assert_eq!(all_leases(&store).len(), 1);

        // Other refusals.
        assert!(matches!(
            reserve(&store, "nope", None),
            Err(StateError::NetworkNotFound { .. })
        ));
        let mut dup = new_ep(&store, "n", None);
        dup.id = first.id.clone();
        assert!(matches!(
            store.reserve_endpoint(dup),
            Err(StateError::EndpointExists { .. })
        ));
        let mut dup = new_ep(&store, "n", None);
        dup.host_ifname = first.host_ifname.clone();
        assert!(matches!(
            store.reserve_endpoint(dup),
            Err(StateError::HostIfnameInUse { endpoint, .. }) if endpoint == first.id
        ));
        for bad in [
            "",
            "ABCDEF012345",
            "abcdef01234",
            "abcdef0123456",
            "abcdefg12345",
        ] {
            let mut e = new_ep(&store, "n", None);
            e.id = bad.into();
            assert!(matches!(
                store.reserve_endpoint(e),
                Err(StateError::InvalidEndpointId { .. })
            ));
        }
        assert_eq!(all_leases(&store).len(), 1);
    }

    #[test]
    fn tap_gets_a_host_route_prefix() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        create(&store, "n", "10.1.0.0/24").unwrap();
        let mut e = new_ep(&store, "n", None);
        e.kind = EndpointKind::Tap;
        e.host_ifname = "np-tap0".into();
        e.ifname = None;
        e.netns = None;
        e.uid = Some(1000);
        e.gid = Some(1000);
        e.queues = Some(4);
        let ep = store.reserve_endpoint(e).unwrap();
        assert_eq!(ep.prefix_len, 32);
        assert_eq!(ep.ip, ip("10.1.0.2"));
        assert_eq!(ep.queues, Some(4));
        assert_eq!(store.get_endpoint(&ep.id).unwrap(), ep);
    }

    #[test]
    fn slash_29_has_five_usable_addresses() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        // Default gateway (.1) and one in the middle of the range.
        create(&store, "low", "10.1.0.0/29").unwrap();
        create_gw(&store, "mid", "10.2.0.0/29", ip("10.2.0.4")).unwrap();
        for (name, expected) in [
            (
                "low",
                ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"],
            ),
            (
                "mid",
                ["10.2.0.1", "10.2.0.2", "10.2.0.3", "10.2.0.5", "10.2.0.6"],
            ),
        ] {
            let got: Vec<Ipv4Addr> = (0..5)
                .map(|_| reserve(&store, name, None).unwrap().ip)
                .collect();
            let expected: Vec<Ipv4Addr> = expected.iter().map(|a| ip(a)).collect();
            assert_eq!(got, expected);
            let err = reserve(&store, name, None).unwrap_err();
            assert!(matches!(&err, StateError::SubnetExhausted { network, .. } if network == name));
        }
        assert_eq!(
            reserve(&store, "low", None).unwrap_err().to_string(),
            "network \"low\" (10.1.0.0/29) has no free address left"
        );
    }

    #[test]
    fn remove_network_with_and_without_force() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        let a = create(&store, "a", "10.1.0.0/24").unwrap();
        create(&store, "b", "10.2.0.0/24").unwrap();
        let e1 = reserve(&store, "a", None).unwrap();
        let e2 = reserve(&store, "a", None).unwrap();
        let other = reserve(&store, "b", None).unwrap();

        let err = store.remove_network("a", false).unwrap_err();
        assert!(matches!(&err, StateError::NetworkInUse { name, endpoints: 2 } if name == "a"));
        assert_eq!(err.to_string(), "network \"a\" still has 2 endpoints");
        assert_eq!(store.list_endpoints(Some("a")).unwrap().len(), 2);

        let (removed, eps) = store.remove_network("a", true).unwrap();
        assert_eq!(removed, a);
        let mut expected = vec![e1, e2];
        expected.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(eps, expected);
        assert!(matches!(
            store.get_network("a"),
            Err(StateError::NetworkNotFound { .. })
        ));
        assert!(matches!(
            store.get_endpoint(&expected[0].id),
            Err(StateError::EndpointNotFound { .. })
        ));
        assert!(matches!(
            store.list_endpoints(Some("a")),
            Err(StateError::NetworkNotFound { .. })
        ));
        assert_eq!(store.list_endpoints(None).unwrap(), vec![other.clone()]);
        assert_eq!(all_leases(&store).len(), 1);
        assert!(matches!(
            store.remove_network("a", true),
            Err(StateError::NetworkNotFound { .. })
        ));

        // The id, subnet, addresses and host devices are free again.
        let again = create(&store, "a2", "10.1.0.0/24").unwrap();
        assert_eq!(again.id, a.id);
        let mut e = new_ep(&store, "a2", None);
        e.host_ifname = expected[0].host_ifname.clone();
        assert_eq!(store.reserve_endpoint(e).unwrap().ip, ip("10.1.0.2"));

        // An empty network goes without force.
        store.release_endpoint(&other.id).unwrap();
        let (b, eps) = store.remove_network("b", false).unwrap();
        assert_eq!(b.name, "b");
        assert!(eps.is_empty());
    }

    #[test]
    fn release_frees_the_ip() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        create(&store, "n", "10.1.0.0/24").unwrap();
        let eps: Vec<Endpoint> = (0..3)
            .map(|_| reserve(&store, "n", None).unwrap())
            .collect();
        assert_eq!(eps[1].ip, ip("10.1.0.3"));
        let released = store.release_endpoint(&eps[1].id).unwrap();
        assert_eq!(released, eps[1]);
        assert!(matches!(
            store.release_endpoint(&eps[1].id),
            Err(StateError::EndpointNotFound { .. })
        ));
        assert!(matches!(
            store.mark_ready(&eps[1].id),
            Err(StateError::EndpointNotFound { .. })
        ));
        let next = reserve(&store, "n", None).unwrap();
        assert_eq!(next.ip, ip("10.1.0.3"));
        assert_eq!(reserve(&store, "n", None).unwrap().ip, ip("10.1.0.5"));
        // A released requested address can be requested again.
        store.release_endpoint(&eps[0].id).unwrap();
        assert_eq!(
            reserve(&store, "n", Some(ip("10.1.0.2"))).unwrap().ip,
            ip("10.1.0.2")
        );
    }

    fn req(proto: Proto, host_ip: &str, host: HostPort, guest_port: u16) -> PortRequest {
        PortRequest {
            proto,
            host_ip: ip(host_ip),
            host,
            guest_port,
        }
    }

    #[test]
    fn port_leases_are_all_or_none() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        create(&store, "n", "10.1.0.0/24").unwrap();
        let a = reserve(&store, "n", None).unwrap();
        let b = reserve(&store, "n", None).unwrap();
        let none = |_: Proto, _: Ipv4Addr, _: u16| false;
        let eph = (20000, 20002);
        let taken = store
            .lease_ports(
                &a.id,
                &[req(Proto::Tcp, "0.0.0.0", HostPort::Exact(8080), 80)],
                eph,
                &none,
            )
            .unwrap();
        assert_eq!(taken[0].id, "tcp/0.0.0.0:8080");
        // B asks for 8081 and 8080 (A's, on every address): none of it is leased, and the
        // error names A's lease.
        let err = store
            .lease_ports(
                &b.id,
                &[
                    req(Proto::Tcp, "0.0.0.0", HostPort::Exact(8081), 81),
                    req(Proto::Tcp, "127.0.0.1", HostPort::Exact(8080), 80),
                ],
                eph,
                &none,
            )
            .unwrap_err();
        match &err {
            StateError::PortInUse {
                lease,
                holder,
                endpoint,
            } => {
                assert_eq!(lease, "tcp/127.0.0.1:8080");
                assert_eq!(holder, "tcp/0.0.0.0:8080");
                assert_eq!(endpoint, &a.id);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.list_ports().unwrap(), taken);
        // A host socket on 8082 makes a host range skip it, an exact request fail.
        let busy = |_: Proto, _: Ipv4Addr, p: u16| p == 8082;
        let range = HostPort::FirstFree(crate::portspec::Ports {
            first: 8080,
            last: 8084,
        });
        let got = store
            .lease_ports(
                &b.id,
                &[
                    req(Proto::Tcp, "0.0.0.0", range, 90),
                    req(Proto::Tcp, "0.0.0.0", range, 91),
                    req(Proto::Udp, "0.0.0.0", range, 92),
                ],
                eph,
                &busy,
            )
            .unwrap();
        let ports: Vec<u16> = got.iter().map(|l| l.host_port).collect();
        // 8080 is A's; 8082 is the host's; TCP and UDP are independent.
        assert_eq!(ports, [8081, 8083, 8080]);
        assert!(matches!(
            store.lease_ports(
                &b.id,
                &[req(Proto::Tcp, "0.0.0.0", HostPort::Exact(8082), 1)],
                eph,
                &busy
            ),
            Err(StateError::HostPortInUse { port: 8082, .. })
        ));
        // Ephemeral ports: the lowest free, then exhaustion with nothing leased.
        let e = store
            .lease_ports(
                &b.id,
                &[req(Proto::Udp, "0.0.0.0", HostPort::Ephemeral, 53)],
                eph,
                &none,
            )
            .unwrap();
        assert_eq!(e[0].host_port, 20000);
        let before = store.list_ports().unwrap();
        let many: Vec<PortRequest> = (0..3)
            .map(|i| req(Proto::Udp, "0.0.0.0", HostPort::Ephemeral, 60 + i))
            .collect();
        assert!(matches!(
            store.lease_ports(&b.id, &many, eph, &none),
            Err(StateError::PortsExhausted {
                first: 20000,
                last: 20002
            })
        ));
        assert_eq!(store.list_ports().unwrap(), before);
    }

    #[test]
    fn endpoints_are_found_by_unique_prefix() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        create(&store, "n", "10.1.0.0/24").unwrap();
        let with_id = |id: &str| {
            let mut new = new_ep(&store, "n", None);
            new.id = id.into();
            new.host_ifname = format!("np-{id}");
            store.reserve_endpoint(new).unwrap()
        };
        let a = with_id("aaaa00000001");
        let b = with_id("aaaa00000002");
        let c = with_id("bbbb00000001");
        assert_eq!(store.find_endpoint_by_prefix(&a.id).unwrap(), a);
        assert_eq!(store.find_endpoint_by_prefix("aaaa00000002").unwrap(), b);
        assert_eq!(store.find_endpoint_by_prefix("b").unwrap(), c);
        assert!(matches!(
            store.find_endpoint_by_prefix("aaaa"),
            Err(StateError::AmbiguousEndpointId { .. })
        ));
        for missing in ["", "c", "aaaa00000003", "bbbb000000011"] {
            assert!(
                matches!(
                    store.find_endpoint_by_prefix(missing),
                    Err(StateError::EndpointNotFound { .. })
                ),
                "{missing:?}"
            );
        }
    }

    #[test]
    fn clear_wipes_everything_but_keeps_working() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        create(&store, "n", "10.1.0.0/24").unwrap();
        reserve(&store, "n", None).unwrap();
        store.clear().unwrap();
        assert!(store.list_networks().unwrap().is_empty());
        assert!(store.list_endpoints(None).unwrap().is_empty());
        assert!(all_leases(&store).is_empty());
        let n = create(&store, "n", "10.1.0.0/24").unwrap();
        assert_eq!(n.id, 1);
        assert_eq!(reserve(&store, "n", None).unwrap().ip, ip("10.1.0.2"));
        drop(store);
        let store = Store::open(&dir.db()).unwrap();
        assert_eq!(store.list_networks().unwrap(), vec![n]);
    }

    #[test]
    fn unsupported_schema_is_refused() {
        let dir = TempDir::new();
        {
            let store = Store::open(&dir.db()).unwrap();
            let txn = store.db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        match Store::open(&dir.db()) {
            Err(StateError::UnsupportedSchema {
                found, supported, ..
            }) => {
                assert_eq!(found, SCHEMA_VERSION + 1);
                assert_eq!(supported, SCHEMA_VERSION);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn free_ip_search_scales_to_a_busy_slash_16() {
        let dir = TempDir::new();
        let store = Store::open(&dir.db()).unwrap();
        let n = create(&store, "big", "10.200.0.0/16").unwrap();
        // 20000 leases (10.200.0.2 …) written directly in one transaction, with a gap.
        let base = u32::from(ip("10.200.0.2"));
        let gap = base + 15_000;
        {
            let txn = store.db.begin_write().unwrap();
            {
                let mut t = txn.open_table(IP_LEASES).unwrap();
                for a in base..base + 20_000 {
                    if a != gap {
                        t.insert((n.id, a), "000000000000").unwrap();
                    }
                }
            }
            txn.commit().unwrap();
        }
        let start = Instant::now();
        assert_eq!(
            reserve(&store, "big", None).unwrap().ip,
            Ipv4Addr::from(gap)
        );
        assert_eq!(
            reserve(&store, "big", None).unwrap().ip,
            Ipv4Addr::from(base + 20_000)
        );
        // Generous bound: a per-address lookup loop is far slower, a scan is milliseconds.
        assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
    }

    /// Interleaved reserve/release/mark_ready on two networks (and reopening), compared
    /// with a plain in-memory model. Seed: NETPATH_STATE_SEED, else random (printed).
    #[test]
    fn randomized_against_model() {
        let seed = std::env::var("NETPATH_STATE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        println!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = TempDir::new();
        let mut store = Store::open(&dir.db()).unwrap();
        let nets = [
            create(&store, "a", "10.1.0.0/27").unwrap(),
            create_gw(&store, "b", "10.2.0.0/28", ip("10.2.0.9")).unwrap(),
        ];
        // Model: per network, ip → endpoint id; endpoints by id.
        let mut leases: [BTreeMap<u32, String>; 2] = Default::default();
        let mut endpoints: BTreeMap<String, Endpoint> = BTreeMap::new();

        for step in 0..600 {
            let n = rng.random_range(0..2usize);
            let network = &nets[n];
            let lo = u32::from(network.subnet.network());
            let hi = u32::from(network.subnet.broadcast());
            let usable = |a: u32| a > lo && a < hi && a != u32::from(network.gateway);
            match rng.random_range(0..10) {
                0..=3 => {
                    let expected = (lo + 1..hi).find(|a| usable(*a) && !leases[n].contains_key(a));
                    match reserve(&store, &network.name, None) {
                        Ok(ep) => {
                            assert_eq!(Some(u32::from(ep.ip)), expected, "step {step}");
                            leases[n].insert(u32::from(ep.ip), ep.id.clone());
                            endpoints.insert(ep.id.clone(), ep);
                        }
                        Err(StateError::SubnetExhausted { .. }) => {
                            assert_eq!(expected, None, "step {step}")
                        }
                        Err(e) => panic!("step {step}: {e}"),
                    }
                }
                4..=5 => {
                    let a = rng.random_range(lo.saturating_sub(2)..=hi + 2);
                    match reserve(&store, &network.name, Some(Ipv4Addr::from(a))) {
                        Ok(ep) => {
                            assert!(usable(a) && !leases[n].contains_key(&a), "step {step}");
                            assert_eq!(u32::from(ep.ip), a);
                            leases[n].insert(a, ep.id.clone());
                            endpoints.insert(ep.id.clone(), ep);
                        }
                        Err(StateError::InvalidIp { .. }) => assert!(!usable(a), "step {step}"),
                        Err(StateError::IpInUse { endpoint, .. }) => {
                            assert_eq!(leases[n].get(&a), Some(&endpoint), "step {step}")
                        }
                        Err(e) => panic!("step {step}: {e}"),
                    }
                }
                6..=7 => {
                    if endpoints.is_empty() || rng.random_bool(0.1) {
                        assert!(matches!(
                            store.release_endpoint("ffffffffffff"),
                            Err(StateError::EndpointNotFound { .. })
                        ));
                        continue;
                    }
                    let i = rng.random_range(0..endpoints.len());
                    let id = endpoints.keys().nth(i).unwrap().clone();
                    let model = endpoints.remove(&id).unwrap();
                    let m = nets.iter().position(|x| x.name == model.network).unwrap();
                    assert_eq!(leases[m].remove(&u32::from(model.ip)), Some(id.clone()));
                    assert_eq!(store.release_endpoint(&id).unwrap(), model, "step {step}");
                }
                8 => {
                    if let Some(id) = endpoints.keys().next().cloned() {
                        let ep = endpoints.get_mut(&id).unwrap();
                        ep.state = EndpointState::Ready;
                        assert_eq!(store.mark_ready(&id).unwrap(), *ep, "step {step}");
                    }
                }
                _ => {
                    if rng.random_bool(0.2) {
                        drop(store);
                        store = Store::open(&dir.db()).unwrap();
                    }
                    let all: Vec<Endpoint> = endpoints.values().cloned().collect();
                    assert_eq!(store.list_endpoints(None).unwrap(), all, "step {step}");
                    for (m, network) in nets.iter().enumerate() {
                        let ids: BTreeSet<&String> = leases[m].values().collect();
                        let listed = store.list_endpoints(Some(&network.name)).unwrap();
                        assert_eq!(listed.iter().map(|e| &e.id).collect::<BTreeSet<_>>(), ids);
                    }
                }
            }
        }
        // Final full comparison, leases included.
        let expected: BTreeMap<(u16, u32), String> = leases
            .iter()
            .enumerate()
            .flat_map(|(m, l)| {
                let nid = nets[m].id;
                l.iter().map(move |(a, id)| ((nid, *a), id.clone()))
            })
            .collect();
        assert_eq!(all_leases(&store), expected);
        assert_eq!(
            store.list_endpoints(None).unwrap(),
            endpoints.values().cloned().collect::<Vec<_>>()
        );
    }
}
