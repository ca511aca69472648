//! The control plane: networks, container endpoints, microVM TAPs and published ports.
//!
//! Each operation keeps the state database and the kernel in step:
//! 1. validate the request ([`validate`]; nothing changes on bad input);
//! 2. lease/record in one database transaction (`Creating` for endpoints);
//! 3. create the devices; on failure, remove them and roll the record back;
//! 4. register the endpoint in the datapath's maps and mark the record `Ready`.
//!
//! A crash between 2 and 4 leaves a `Creating` record, which [`Service::reconcile`]
//! rolls back at the next start (and [`Service::sweep_unfinished`] while running);
//! devices without a record are removed there too. Operations on one network are
//! serialized by a per-network lock; different networks proceed in parallel.
//!
//! The kernel is reached through two seams ([`host`]): [`Host`] for devices, addresses,
//! routes and namespaces, [`Maps`] for the datapath. The unit tests drive every
//! operation through recording fakes that fail at any chosen call.
//!
//! | module | owns |
//! |---|---|
//! | [`networks`] | create, plumb (bridge, masquerade) and remove networks |
//! | [`policy`] | network policy (isolate, internal), set on running endpoints |
//! | [`endpoints`] | container endpoints (veth pairs) and the datapath registration |
//! | [`taps`] | microVM TAP endpoints |
//! | [`ports`] | published ports |
//! | [`reconcile`] | bringing records and kernel back in step; rollback of unfinished work |
//! | [`validate`] | checks of request fields, before anything changes |

pub mod endpoints;
#[cfg(test)]
pub(crate) mod fake;
pub mod host;
pub mod networks;
pub mod policy;
pub mod ports;
mod proc_routes;
pub mod reconcile;
pub mod taps;
#[cfg(test)]
mod tests;
pub mod validate;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub use self::host::{Host, KernelHost, MapWrite, Maps};
use crate::{
    config::{self, ConfigError, IFNAME_MAX, Paths},
    datapath::{Datapath, DatapathError, EndpointStat, Origin},
    model::{EventFilter, EventType, Flow, FlowFilter, StatsReport},
    netlink::NetlinkError,
    sandbox::SandboxError,
    state::{StateError, Store},
    sysctl::{self, SysctlError},
    tap::TapError,
};

/// Longest network name: its bridge `np-<name>` must fit an interface name.
pub const NETWORK_NAME_MAX: usize = IFNAME_MAX - config::LINK_PREFIX.len();
pub const DEFAULT_MTU: u32 = 1500;

/// Host ports handed out by default when a `-p` spec gives none (`netpath daemon
/// --ephemeral-ports`). Kept clear of Linux's ephemeral range (32768-60999), which
/// masquerade and host sockets use.
pub const EPHEMERAL_PORTS: (u16, u16) = (20000, 29999);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    // Refusals: the request was checked and nothing changed (`hint`: what to do).
    /// The request is malformed or contradicts itself (HTTP 400).
    #[error("{what}")]
    Invalid { what: String, hint: Option<String> },
    /// The request clashes with what exists: a name, an address, a port (409).
    #[error("{what}")]
    Conflict { what: String, hint: Option<String> },
    /// The request names a network or endpoint that does not exist (404).
    #[error("{what}")]
    NotFound { what: String, hint: Option<String> },
    // Failures of a layer below; a multi-step operation rolled back what it had done.
    /// The state database: a conflict it found, or a storage failure.
    #[error(transparent)]
    State(#[from] StateError),
    /// A netlink request (links, addresses, routes, neighbours).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// Work inside a container's network namespace.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// Creating or configuring a TAP device.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// Loading, attaching or writing the eBPF datapath.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Reading or setting a sysctl (forwarding, `accept_ra`).
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// A broken invariant or a task that died: a bug, reported rather than hidden.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub(crate) fn invalid(what: impl Into<String>) -> Self {
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

/// Why [`Service::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the state directory {}", path.display())]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] ConfigError),
    /// A step the service also takes at run time (state, datapath, netlink, sysctl).
    #[error(transparent)]
    Service(#[from] ServiceError),
}

pub(crate) type Result<T, E = ServiceError> = std::result::Result<T, E>;

pub struct Service {
    paths: Paths,
    instance: String,
    store: Arc<Store>,
    host: Arc<dyn Host>,
    maps: Mutex<Box<dyn Maps>>,
    net_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Host ports handed out when a `-p` spec gives none.
    ephemeral_ports: (u16, u16),
    /// Endpoints whose container end the last sweeps found in the host's namespace, with
    /// how many sweeps in a row did (see [`Service::sweep_unfinished`]).
    stranded: Mutex<HashMap<String, u32>>,
    /// The datapath's live events (`None`: a datapath without an event ring, or a
    /// service over fakes).
    hub: Option<Arc<crate::monitor::Hub>>,
}

/// Runs a blocking state-database call off the async workers.
pub(crate) async fn db<T: Send + 'static>(
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
pub(crate) fn read<T>(store: &Store, f: impl FnOnce(&Store) -> Result<T, StateError>) -> Result<T> {
    f(store).map_err(ServiceError::from)
}

impl Service {
    /// Opens the state database and the pinned datapath (adopting it if present), on
    /// the real kernel.
    pub async fn open(
        paths: Paths,
        reload: bool,
        ephemeral_ports: (u16, u16),
    ) -> Result<Service, OpenError> {
        std::fs::create_dir_all(&paths.state_dir).map_err(|source| OpenError::StateDir {
            path: paths.state_dir.clone(),
            source,
        })?;
        // Each step's error is the service's own (as the API reports it at run time).
        sysctl::enable_forwarding().map_err(ServiceError::from)?;
        let store = Store::open(&paths.state_dir.join("state.redb")).map_err(ServiceError::from)?;
        let mut datapath = Datapath::open(&paths.bpffs, reload).map_err(ServiceError::from)?;
        let hub = match datapath.events().map_err(ServiceError::from)? {
            Some((control, ring)) => {
                Some(crate::monitor::Hub::start(control, ring).map_err(ServiceError::from)?)
            }
            None => None,
        };
        let cgroup = crate::config::cgroup2_root()?;
        datapath
            .attach_host_local(&cgroup)
            .map_err(ServiceError::from)?;
        let host = KernelHost::connect().map_err(ServiceError::from)?;
        let mut service = Service::new(
            paths,
            Arc::new(store),
            Arc::new(host),
            Box::new(datapath),
            ephemeral_ports,
        );
        service.hub = hub;
        service.refresh_local_addrs().await?;
        Ok(service)
    }

    /// A service over the given state, host and datapath.
    pub fn new(
        paths: Paths,
        store: Arc<Store>,
        host: Arc<dyn Host>,
        maps: Box<dyn Maps>,
        ephemeral_ports: (u16, u16),
    ) -> Service {
        Service {
            instance: paths.instance(),
            paths,
            store,
            host,
            maps: Mutex::new(maps),
            net_locks: Mutex::new(HashMap::new()),
            ephemeral_ports,
            stranded: Mutex::default(),
            hub: None,
        }
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    fn datapath(&self) -> std::sync::MutexGuard<'_, Box<dyn Maps>> {
        // A panic while holding the lock cannot leave the kernel maps inconsistent
        // (each map op is atomic), so a poisoned lock is still usable.
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn net_lock(&self, network: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.net_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(network.to_owned())
            .or_default()
            .clone()
    }

    /// Ends the migration of maps pinned with another layout, once the programs run
    /// everywhere (after [`Service::reconcile`]); a line per map migrated.
    pub async fn finish_migrations(&self) -> Result<Vec<String>> {
        Ok(self.datapath().finish_migrations()?)
    }

    /// Whether the datapath was loaded by this process or adopted from pins.
    pub fn datapath_origin(&self) -> Origin {
        self.datapath().origin()
    }

    /// Tells the datapath which addresses are this host's: a 0.0.0.0 publish answers on
    /// those only (socket hooks and uplink DNAT). The daemon calls it at start, whenever
    /// the kernel announces an address change (addresses come and go, e.g. with
    /// DHCP), and periodically as a safety net.
    pub async fn refresh_local_addrs(&self) -> Result<()> {
        let mut addrs = self.host.all_addresses().await?;
        // Loopback is the datapath's own (127.0.0.0/8, ::1).
        addrs.retain(|a| !a.is_loopback());
        self.datapath().write(MapWrite::SetLocalAddrs(addrs))?;
        Ok(())
    }

    /// Every counter of the datapath, endpoints under their ids.
    pub async fn stats(&self) -> Result<StatsReport> {
        let records = self.list_endpoints(None).await?;
        Ok(self.datapath().report(&records)?)
    }

    /// The translated connections `filter` selects (its `endpoint` an id or a unique
    /// prefix), endpoints under their ids.
    pub async fn flows(&self, mut filter: FlowFilter) -> Result<Vec<Flow>> {
        let records = self.list_endpoints(None).await?;
        if let Some(id) = &filter.endpoint {
            filter.endpoint = Some(self.get_endpoint(id).await?.id);
        }
        let tracked = self.datapath().tracked()?;
        let now = crate::datapath::nat_now();
        Ok(crate::flows::list(&tracked, &records, &filter, now))
    }

    /// Starts watching the datapath's events as `filter` asks: drops (`type=drop`),
    /// traces (`type=trace`: one forward in `trace_every`, default 1), or drops and, if
    /// `trace_every` is given, traces (no `type`).
    pub fn watch(&self, filter: &EventFilter) -> Result<(crate::monitor::Watch, u64)> {
        let Some(hub) = &self.hub else {
            return Err(ServiceError::Invalid {
                what: "this datapath reports no events (it was loaded by an older netpath)".into(),
                hint: Some("restart the daemon with --reload to load this build's datapath".into()),
            });
        };
        let trace_every = match filter.kind {
            Some(EventType::Drop) => 0,
            Some(EventType::Trace) => filter.trace_every.unwrap_or(1),
            None => filter.trace_every.unwrap_or(0),
        };
        let drops = filter.kind != Some(EventType::Trace);
        if filter.kind == Some(EventType::Trace) && trace_every == 0 {
            return Err(ServiceError::Invalid {
                what: "trace_every 0 traces nothing".into(),
                hint: Some("give 1 (every forward) or more (one in N)".into()),
            });
        }
        let wants = crate::monitor::Wants { drops, trace_every };
        Ok((hub.watch(wants)?, hub.lost()))
    }

    /// Events the datapath's ring could not take so far (0 without one).
    pub fn events_lost(&self) -> u64 {
        self.hub.as_ref().map_or(0, |h| h.lost())
    }

    /// Per-endpoint traffic counters.
    pub async fn endpoint_stats(&self) -> Result<Vec<EndpointStat>> {
        Ok(self.datapath().endpoint_stats()?)
    }

    /// Packets dropped for `reason` so far.
    pub fn drop_count(&self, reason: netpath_common::maps::DropReason) -> Result<u64> {
        Ok(self.datapath().drop_packets(reason)?)
    }
}
