//! The daemon's persistent state: networks, endpoints and IP leases in a redb database.
//!
//! This is the single source of truth of the control plane. Every mutating operation is
//! one redb write transaction that either fully happens or not at all; redb serializes
//! write transactions, so concurrent callers (many tokio tasks sharing one
//! `Arc<Store>`) never see or produce a half-done change. The calls block, so async
//! callers should run them with `tokio::task::spawn_blocking`.
//!
//! The operations live by record kind: `networks`, `endpoints` (with their IP
//! leases), `ports`; errors in `error`.
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
//! | `ip6_leases` | `(network id u16, IPv6 as u128)` | endpoint id (dual-stack networks) |
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
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use redb::{
    Database, Durability, ReadableTable, StorageBackend, Table, TableDefinition, WriteTransaction,
    backends::FileBackend,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    model::{
        Endpoint, EndpointDetails, EndpointKind, EndpointState, MacAddr, Mode, Network,
        NetworkPolicy, PortLease,
    },
    portspec::{HostPort, PortRequest, Proto},
};

/// Version of the table layout and encoding this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;
const SCHEMA_VERSION_KEY: &str = "schema_version";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const NETWORK_IDS: TableDefinition<u16, &str> = TableDefinition::new("network_ids");
const ENDPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("endpoints");
const HOST_IFNAMES: TableDefinition<&str, &str> = TableDefinition::new("host_ifnames");
const IP_LEASES: TableDefinition<(u16, u32), &str> = TableDefinition::new("ip_leases");
const IP6_LEASES: TableDefinition<(u16, u128), &str> = TableDefinition::new("ip6_leases");
/// Port leases by (protocol number, host port, host address as u32; 0 = every address)
/// → JSON `PortLease`. Keyed port-first so all leases of one (protocol, port) are one
/// range, which is what conflict checks scan.
const PORT_LEASES: TableDefinition<(u8, u16, u32), &[u8]> = TableDefinition::new("port_leases");
/// [`PORT_LEASES`] for IPv6 host addresses (as u128; 0 = every IPv6 address). A table of
/// its own: the IPv4 one's keys stay as they were, and a database of an older build
/// simply gains it.
const PORT6_LEASES: TableDefinition<(u8, u16, u128), &[u8]> = TableDefinition::new("port6_leases");

/// Length of an endpoint id (lowercase hex digits).
pub const ENDPOINT_ID_LEN: usize = 12;

mod endpoints;
mod error;
mod networks;
mod ports;
#[cfg(test)]
mod tests;

pub use self::{
    endpoints::BRIDGE_MAX_PORTS,
    error::{InvalidIpReason, StateError},
};

type Result<T, E = StateError> = std::result::Result<T, E>;

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
    /// The requested IPv6 address (dual-stack networks only); `None`: the lowest free
    /// one, in a dual-stack network.
    pub ip6: Option<Ipv6Addr>,
    pub mac: MacAddr,
    pub host_ifname: String,
    pub details: EndpointDetails,
}

impl NewEndpoint {
    /// An endpoint of `kind` with what every kind has; the kind's own fields are `None`.
    pub fn new(
        id: String,
        network: String,
        kind: EndpointKind,
        ip: Option<Ipv4Addr>,
        mac: MacAddr,
        host_ifname: String,
    ) -> NewEndpoint {
        NewEndpoint {
            id,
            network,
            kind,
            ip,
            ip6: None,
            mac,
            host_ifname,
            details: EndpointDetails::default(),
        }
    }
}

/// The state database. Cheap to share: put it in an `Arc`.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Where the search for a network's lowest free address may start, by (network id,
    /// IPv6): every address of its subnet below it is leased (or the gateway). In memory
    /// only — a fresh store searches from the subnet's start once — lowered when an
    /// address is freed and forgotten when networks go, so it never skips a free
    /// address. Without it every add scanned every lease before the first gap: O(N) an
    /// add, 13 ms at 10,000 routed TAPs.
    free_from: std::sync::Mutex<std::collections::HashMap<(u16, bool), u128>>,
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
    ip6_leases: Table<'t, (u16, u128), &'static str>,
    port_leases: Table<'t, (u8, u16, u32), &'static [u8]>,
    port6_leases: Table<'t, (u8, u16, u128), &'static [u8]>,
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
            ip6_leases: txn.open_table(IP6_LEASES)?,
            port_leases: txn.open_table(PORT_LEASES)?,
            port6_leases: txn.open_table(PORT6_LEASES)?,
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
            free_from: Default::default(),
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

    /// Removes every network, endpoint and lease (the schema version stays).
    pub fn clear(&self) -> Result<()> {
        self.forget_free_from();
        self.write(|t| {
            t.networks.retain(|_, _| false)?;
            t.network_ids.retain(|_, _| false)?;
            t.endpoints.retain(|_, _| false)?;
            t.host_ifnames.retain(|_, _| false)?;
            t.ip_leases.retain(|_, _| false)?;
            t.ip6_leases.retain(|_, _| false)?;
            t.port_leases.retain(|_, _| false)?;
            t.port6_leases.retain(|_, _| false)?;
            Ok(())
        })
    }
}

const NETWORKS_NAME: &str = "network";
const PORTS_NAME: &str = "port lease";

/// The endpoint holding a lease that conflicts with (`proto`, `host_ip`, `port`): a
/// lease of the same family whose address is the same, or either is that family's
/// every-address.
fn port_holder(
    t: &Tables<'_>,
    proto: Proto,
    host_ip: IpAddr,
    port: u16,
) -> Result<Option<PortLease>> {
    match host_ip {
        IpAddr::V4(ip) => holder_in(&t.port_leases, proto, u32::from(ip), port),
        IpAddr::V6(ip) => holder_in(&t.port6_leases, proto, u128::from(ip), port),
    }
}

/// [`port_holder`] in one family's table, whose address keys are `A` (0: every address).
fn holder_in<A>(
    leases: &impl ReadableTable<(u8, u16, A), &'static [u8]>,
    proto: Proto,
    host_ip: A,
    port: u16,
) -> Result<Option<PortLease>>
where
    A: redb::Key + lease_key::AddrKey + Copy + PartialEq + std::fmt::Display + 'static,
    for<'a> A: redb::Value<SelfType<'a> = A>,
{
    let n = proto.number();
    for item in leases.range((n, port, A::MIN)..=(n, port, A::MAX))? {
        let (k, v) = item?;
        let ip = k.value().2;
        if ip == A::MIN || host_ip == A::MIN || ip == host_ip {
            return Ok(Some(decode(
                PORTS_NAME,
                &format!("{n}/{ip}:{port}"),
                v.value(),
            )?));
        }
    }
    Ok(None)
}

/// The address keys of the port lease tables: u32 (IPv4), u128 (IPv6).
mod lease_key {
    pub trait AddrKey {
        const MIN: Self;
        const MAX: Self;
    }
    impl AddrKey for u32 {
        const MIN: u32 = 0;
        const MAX: u32 = u32::MAX;
    }
    impl AddrKey for u128 {
        const MIN: u128 = 0;
        const MAX: u128 = u128::MAX;
    }
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

/// Every record of `table`, decoded, in key order; `key` writes a key for the error
/// about a record that does not decode.
fn decode_all<K: redb::Key + 'static, T: DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    name: &'static str,
    key: impl for<'a> Fn(K::SelfType<'a>) -> String,
) -> Result<Vec<T>> {
    let decode_one = |item: std::result::Result<_, redb::StorageError>| {
        let (k, v): (redb::AccessGuard<K>, redb::AccessGuard<&[u8]>) = item?;
        decode(name, &key(k.value()), v.value())
    };
    table.iter()?.map(decode_one).collect()
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

/// The ids of the endpoints holding a lease (of either family) in network `network_id`,
/// sorted.
fn leased_endpoint_ids(
    leases: &impl ReadableTable<(u16, u32), &'static str>,
    leases6: &impl ReadableTable<(u16, u128), &'static str>,
    network_id: u16,
) -> Result<Vec<String>> {
    let mut ids = std::collections::BTreeSet::new();
    for item in leases.range((network_id, 0)..=(network_id, u32::MAX))? {
        ids.insert(item?.1.value().to_owned());
    }
    // An IPv6-only network's endpoints have IPv6 leases alone.
    for item in leases6.range((network_id, 0)..=(network_id, u128::MAX))? {
        ids.insert(item?.1.value().to_owned());
    }
    Ok(ids.into_iter().collect())
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
    let other =
        |v: &[u8]| serde_json::from_slice::<PortLease>(v).map_or(true, |l| l.endpoint != id);
    t.port_leases.retain(|_, v| other(v))?;
    t.port6_leases.retain(|_, v| other(v))?;
    let id = endpoint.id.as_str();
    if let Some(nid) = network_id {
        if let Some(ip) = endpoint.ip {
            remove_if_held(&mut t.ip_leases, (nid, u32::from(ip)), id)?;
        }
        if let Some(ip6) = endpoint.ip6 {
            remove_if_held(&mut t.ip6_leases, (nid, u128::from(ip6)), id)?;
        }
    }
    remove_if_held(&mut t.host_ifnames, endpoint.host_ifname.as_str(), id)
}

/// Removes the row `key` of an endpoint index if it still names endpoint `id`.
fn remove_if_held<K>(
    table: &mut Table<'_, K, &'static str>,
    key: K::SelfType<'_>,
    id: &str,
) -> Result<()>
where
    K: redb::Key + 'static,
    for<'a> K::SelfType<'a>: Copy,
{
    if table.get(key)?.is_some_and(|g| g.value() == id) {
        table.remove(key)?;
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

fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why `ip` is not a leasable host address of `subnet` (`gateway`: also excluded). An
/// IPv6 subnet has no broadcast address; its first (the subnet-router anycast address)
/// is as reserved as IPv4's network address.
fn unusable_reason(subnet: IpNet, gateway: Option<IpAddr>, ip: IpAddr) -> Option<InvalidIpReason> {
    if !subnet.contains(&ip) {
        Some(InvalidIpReason::OutsideSubnet)
    } else if ip == subnet.network() {
        Some(InvalidIpReason::NetworkAddress)
    } else if matches!(subnet, IpNet::V4(_)) && ip == subnet.broadcast() {
        Some(InvalidIpReason::BroadcastAddress)
    } else if Some(ip) == gateway {
        Some(InvalidIpReason::Gateway)
    } else {
        None
    }
}

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

impl Store {
    /// The lowest free address of (network, family) as `search` finds it from
    /// [`Store::free_from`]'s start, which then moves up to it: everything below it is
    /// taken (and it is being leased, in this transaction).
    fn lowest_from<A: Copy + Into<IpAddr>>(
        &self,
        key: (u16, bool),
        search: impl FnOnce(Option<u128>) -> Result<Option<A>>,
    ) -> Result<Option<A>> {
        let mut hints = self.free_from.lock().unwrap_or_else(|p| p.into_inner());
        let found = search(hints.get(&key).copied())?;
        if let Some(ip) = found {
            hints.insert(key, ip_number(ip.into()));
        }
        Ok(found)
    }

    /// Address `ip` of network `id` is free again: its family's search starts there at
    /// the latest.
    fn freed(&self, id: u16, ip: IpAddr) {
        let mut hints = self.free_from.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hints.get_mut(&(id, ip.is_ipv6())) {
            *h = (*h).min(ip_number(ip));
        }
    }

    /// Forgets every start (networks went, and their ids may be reused).
    fn forget_free_from(&self) {
        self.free_from
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// An address as the number the searches count in.
fn ip_number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => v6.into(),
    }
}

/// The lowest host address of subnet `subnet` (gateway `gateway`) of network
/// `network_id` that is neither the gateway nor leased, searching from `from` (every
/// address below it taken; see [`Store::free_from`]): one ordered range scan over the
/// network's leases, stopping at the first gap.
fn lowest_free_ip(
    leases: &impl ReadableTable<(u16, u32), &'static str>,
    network_id: u16,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    from: Option<u128>,
) -> Result<Option<Ipv4Addr>> {
    let (first, last) = (subnet.network(), subnet.broadcast());
    let (first, last) = (u32::from(first) + 1, u32::from(last) - 1);
    let first = from.map_or(first, |f| (f.min(u128::from(last)) as u32).max(first));
    let leased = leases.range((network_id, first)..=(network_id, last))?;
    let leased = leased.map(|item| Ok(u128::from(item?.0.value().1)));
    let free = lowest_free(leased, first.into(), last.into(), u32::from(gateway).into())?;
    // In range of `first..=last`, which are u32s.
    Ok(free.map(|ip| Ipv4Addr::from(ip as u32)))
}

/// [`lowest_free_ip`] for an IPv6 subnet.
fn lowest_free_ip6(
    leases: &impl ReadableTable<(u16, u128), &'static str>,
    network_id: u16,
    subnet: Ipv6Net,
    gateway: Ipv6Addr,
    from: Option<u128>,
) -> Result<Option<Ipv6Addr>> {
    let first = u128::from(subnet.network()) + 1;
    let last = u128::from(subnet.broadcast());
    let first = from.map_or(first, |f| f.clamp(first, last));
    let leased = leases.range((network_id, first)..=(network_id, last))?;
    let leased = leased.map(|item| Ok(item?.0.value().1));
    Ok(lowest_free(leased, first, last, gateway.into())?.map(Ipv6Addr::from))
}

/// The lowest of `first..=last` that is not `gateway` and not `leased` (ascending, all
/// within the range): one pass, stopping at the first gap.
fn lowest_free(
    leased: impl Iterator<Item = Result<u128>>,
    first: u128,
    last: u128,
    gateway: u128,
) -> Result<Option<u128>> {
    let skip_gateway = |ip: u128| {
        if ip == gateway {
            ip.checked_add(1)
        } else {
            Some(ip)
        }
    };
    let mut candidate = skip_gateway(first);
    for ip in leased {
        let ip = ip?;
        match candidate {
            Some(c) if ip == c => candidate = c.checked_add(1).and_then(skip_gateway),
            Some(c) if ip > c => break,
            _ => {}
        }
    }
    Ok(candidate.filter(|c| *c <= last))
}

fn is_endpoint_id(id: &str) -> bool {
    id.len() == ENDPOINT_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
