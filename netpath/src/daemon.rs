//! `netpath daemon`: owns the host datapath.
//!
//! This first version sets up the embedded default network (a bridge with the gateway
//! address), loads (or adopts) the pinned eBPF datapath, attaches it, reports what it
//! did and waits for SIGINT/SIGTERM. On exit it leaves everything in place: the datapath
//! is meant to outlive the daemon; `netpath reset` removes it.

use std::{
    fs, io,
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

use crate::{
    api::{self, SocketError},
    config::{DEFAULT_GATEWAY, DEFAULT_NETWORK, DEFAULT_SUBNET, Paths},
    control::{OpenError, Service, ServiceError},
    datapath::{Attachment, Origin},
    error::{UserError, chain},
    model::{Mode, Network, NetworkCreate},
    preflight,
};

/// Why the daemon could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A check before anything changes (privileges, bpffs).
    #[error(transparent)]
    Preflight(#[from] UserError),
    #[error("creating state directory {}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("opening {}", path.display())]
    OpenLock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another daemon holds the state directory's lock.
    #[error("another netpath daemon (pid {pid}) already uses {}", state_dir.display())]
    Locked { pid: String, state_dir: PathBuf },
    #[error("writing the daemon's pid to {}", path.display())]
    WritePid {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "--metrics-addr {0} is not a loopback address: anyone who reaches it reads the metrics (pass --metrics-public to allow it, or use 127.0.0.1)"
    )]
    MetricsNotLoopback(std::net::SocketAddr),
    #[error("cannot listen on --metrics-addr {addr}")]
    MetricsBind {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The Docker plugin's saved memory cannot be read.
    #[error("the Docker plugin: {0}")]
    DockerPlugin(String),
    #[error("cannot install the SIGINT/SIGTERM handlers")]
    Signals(#[source] io::Error),
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// Opening the state and the datapath (boxed: it holds the largest errors).
    #[error(transparent)]
    Open(Box<OpenError>),
    #[error("cannot create the default network")]
    DefaultNetwork {
        #[source]
        source: ServiceError,
    },
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<OpenError> for DaemonError {
    fn from(e: OpenError) -> Self {
        DaemonError::Open(Box::new(e))
    }
}

impl DaemonError {
    /// What the user can do about it, when there is something to do.
    pub fn hint(&self) -> Option<String> {
        match self {
            DaemonError::Preflight(e) => e.hint.clone(),
            DaemonError::Locked { .. } => {
                Some("stop it first, or pass a different --state-dir".into())
            }
            DaemonError::DefaultNetwork { source } => source.hint(),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub paths: Paths,
    /// Load fresh programs even if a pinned datapath exists (upgrades).
    pub reload: bool,
    /// Create the embedded default network (10.200.0.0/16) if it does not exist.
    pub default_network: bool,
    /// Host ports handed out when a `-p` spec gives none (inclusive).
    pub ephemeral_ports: (u16, u16),
    /// Where to serve the Docker plugin ([`crate::docker`]); `None`: not at all.
    pub docker_plugin_socket: Option<PathBuf>,
    /// Where to serve `GET /metrics` over TCP too; `None`: only on the API socket.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Whether `metrics_addr` may be other than a loopback address.
    pub metrics_public: bool,
    /// The group that may use the API socket besides root (`--socket-group`); `None`:
    /// [`api::SocketGroup::resolve`]'s default.
    pub socket_group: Option<String>,
}

/// What the daemon set up, as printed at start (and as JSON for tools).
#[derive(Debug, Serialize)]
pub struct SetupReport {
    pub instance: String,
    /// The default network, unless disabled.
    pub network: Option<Network>,
    pub datapath: &'static str,
    pub pins: PathBuf,
    pub attachments: Vec<String>,
    /// What reconciliation repaired or removed.
    pub reconciled: Vec<String>,
    /// Maps carried over from another build's layout (see `datapath::layout`).
    pub migrated: Vec<String>,
}

/// Holds the daemon's exclusive lock on its state directory.
pub struct StateLock {
    _file: fs::File,
}

/// Takes the state directory's lock, so two daemons never share one state.
/// Tunes glibc's allocator for a long-running daemon whose big answers (a `/metrics` of
/// 1,000 endpoints, a `/v1/flows` of 100,000 connections: tens of MiB) come and go: a
/// fixed mmap threshold (glibc raises its own after each large free, up to 32 MiB, and
/// keeps such buffers in the heap after they are freed), so that large buffers go back
/// to the kernel when freed; and two arenas, so that a scrape on another thread of the
/// runtime reuses the memory an earlier one freed instead of growing an arena of its
/// own. Measured (bench `footprint`): the RSS left behind by five `/v1/flows` of 100,000
/// connections went from 137 to 6 MiB. Call before any thread exists.
pub fn tune_allocator() {
    // SAFETY: `mallopt` only sets allocator parameters; called before other threads run.
    // Its return (1 on success) is not an error worth stopping for: defaults remain.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

pub fn lock_state_dir(state_dir: &Path) -> Result<StateLock, DaemonError> {
    fs::create_dir_all(state_dir).map_err(|source| DaemonError::StateDir {
        path: state_dir.to_owned(),
        source,
    })?;
    let path = state_dir.join("daemon.lock");
    let mut file = match fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(source) => return Err(DaemonError::OpenLock { path, source }),
    };
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        return Err(DaemonError::Locked {
            pid: holder.trim().to_owned(),
            state_dir: state_dir.to_owned(),
        });
    }
    if let Err(source) = file
        .set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
    {
        return Err(DaemonError::WritePid { path, source });
    }
    Ok(StateLock { _file: file })
}

/// True if a daemon currently holds the lock of `state_dir`.
pub fn daemon_running(state_dir: &Path) -> bool {
    let Ok(file) = fs::File::open(state_dir.join("daemon.lock")) else {
        return false;
    };
    // SAFETY: as above; a shared non-blocking probe, released when `file` drops.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

/// Opens the service (state + pinned datapath), reconciles, and makes sure the default
/// network exists unless disabled. Idempotent: a second run adopts what the first made.
pub async fn setup(opts: &DaemonOptions) -> Result<(SetupReport, Arc<Service>), DaemonError> {
    let paths = &opts.paths;
    let svc = Arc::new(Service::open(paths.clone(), opts.reload, opts.ephemeral_ports).await?);
    let reconciled = svc.reconcile().await?;
    let mut report = SetupReport {
        instance: paths.instance(),
        network: None,
        datapath: match svc.datapath_origin() {
            Origin::Loaded => "loaded",
            Origin::Adopted => "adopted",
        },
        pins: paths.bpffs.clone(),
        attachments: Vec::new(),
        reconciled,
        migrated: Vec::new(),
    };
    if opts.default_network {
        let network = match svc.get_network(DEFAULT_NETWORK).await {
            Ok(n) => n,
            Err(e) if e.is_not_found() => svc
                .create_network(NetworkCreate {
                    name: DEFAULT_NETWORK.into(),
                    subnet: Some(DEFAULT_SUBNET),
                    mode: Mode::Bridge,
                    gateway: Some(DEFAULT_GATEWAY),
                    subnet6: None,
                    gateway6: None,
                    uplink: None,
                    mtu: None,
                    no_masquerade: Vec::new(),
                    policy: Default::default(),
                    profile: None,
                })
                .await
                .map_err(|source| DaemonError::DefaultNetwork { source })?,
            Err(e) => return Err(e.into()),
        };
        if let Some(a) = svc.plumb(&network.name).await? {
            report.attachments.push(format!(
                "tc ingress (tcx) on {} [{}]",
                network.bridge.as_deref().unwrap_or_default(),
                match a {
                    Attachment::Attached => "attached",
                    Attachment::Adopted => "adopted",
                    Attachment::Replaced => "replaced",
                }
            ));
        }
        report.network = Some(network);
    }
    // Every attachment runs the new programs now (reconcile re-attached them).
    report.migrated = svc.finish_migrations().await?;
    Ok((report, svc))
}

/// Installs SIGINT/SIGTERM handlers now (so a signal right after start-up is not
/// lost) and returns a future that resolves on the first of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static, DaemonError>
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// Runs the daemon in the foreground until SIGINT/SIGTERM.
/// How often the daemon re-reads the host's addresses into the datapath without being
/// told of a change (a safety net: announcements can be lost when the socket's buffer
/// overflows), and how often when it cannot subscribe to announcements at all.
const LOCAL_ADDRS_SAFETY_NET: std::time::Duration = std::time::Duration::from_secs(30);
const LOCAL_ADDRS_POLL: std::time::Duration = std::time::Duration::from_secs(2);
/// How long after an address announcement the daemon waits for more before re-reading.
const LOCAL_ADDRS_SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

pub async fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    preflight::require_privileges("netpath daemon")?;
    preflight::require_bpffs(&opts.paths.bpffs)?;
    // SAFETY: setting a signal's disposition; no handler code runs. Rust's runtime
    // already ignores SIGPIPE; this makes sure of it whatever started us, so a client that
    // hangs up is an error of its request and never ends the daemon.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // The lock and the socket first: a start that must be refused (another daemon on this
    // state directory or this socket) is refused before anything in the kernel changes.
    if let Some(addr) = opts.metrics_addr
        && !addr.ip().is_loopback()
        && !opts.metrics_public
    {
        return Err(DaemonError::MetricsNotLoopback(addr));
    }
    let _lock = lock_state_dir(&opts.paths.state_dir)?;
    let metrics_listener = match opts.metrics_addr {
        Some(addr) => Some(
            (tokio::net::TcpListener::bind(addr).await)
                .map_err(|source| DaemonError::MetricsBind { addr, source })?,
        ),
        None => None,
    };
    let group = api::SocketGroup::resolve(opts.socket_group.as_deref(), api::SocketGroup::lookup)?;
    let listener = api::bind(&opts.paths.socket, group.as_ref()).await?;
    // dockerd runs as root: the plugin's socket is root's alone.
    let plugin_listener = match &opts.docker_plugin_socket {
        Some(socket) => Some((socket.clone(), api::bind(socket, None).await?)),
        None => None,
    };
    let shutdown = shutdown_signal()?;
    // Requests that arrive meanwhile wait in the socket's backlog until we serve.
    let (report, svc) = match setup(&opts).await {
        Ok(r) => r,
        Err(e) => {
            drop(listener);
            let _ = std::fs::remove_file(&opts.paths.socket);
            if let Some((socket, _)) = plugin_listener {
                let _ = std::fs::remove_file(socket);
            }
            return Err(e);
        }
    };

    crate::telemetry::mark_start();
    println!("netpath daemon (pid {}) is up", std::process::id());
    if let Some(n) = &report.network {
        let shown = |net: Option<String>, gw: Option<String>| {
            net.zip(gw).map(|(net, gw)| format!(" {net} gateway {gw}"))
        };
        println!(
            "  network   {}{}{} on bridge {}",
            n.name,
            shown(
                n.subnet.map(|s| s.to_string()),
                n.gateway.map(|g| g.to_string())
            )
            .unwrap_or_default(),
            shown(
                n.subnet6.map(|s| s.to_string()),
                n.gateway6.map(|g| g.to_string())
            )
            .unwrap_or_default(),
            n.bridge.as_deref().unwrap_or("-")
        );
    }
    println!(
        "  datapath  {} and pinned under {}",
        report.datapath,
        report.pins.display()
    );
    for a in &report.attachments {
        println!("  attached  {a}");
    }
    for r in &report.reconciled {
        println!("  reconcile {r}");
    }
    for m in &report.migrated {
        println!("  layout    {m}");
    }
    match &group {
        Some(g) => println!(
            "  api       {} (root and group {})",
            opts.paths.socket.display(),
            g.name
        ),
        None => println!("  api       {} (root only)", opts.paths.socket.display()),
    }
    if let Some((socket, _)) = &plugin_listener {
        // dockerd names a plugin after its socket file.
        let name = socket.file_stem().unwrap_or_default().to_string_lossy();
        println!("  docker    {} (plugin {name})", socket.display());
    }
    if let Some(l) = &metrics_listener
        && let Ok(addr) = l.local_addr()
    {
        println!("  metrics   http://{addr}/metrics");
    }
    println!("  state     {}", opts.paths.state_dir.display());
    println!(
        "Ctrl-C stops the daemon and leaves the datapath running; `netpath reset` removes it."
    );
    // Stops with the daemon's runtime (nothing to finish: each scrape only reads).
    let metrics = metrics_listener.map(|l| {
        let app = api::metrics_router(svc.clone());
        tokio::spawn(async move { axum::serve(l, app).await })
    });
    // The host's addresses, for 0.0.0.0 publishes, follow address changes (DHCP, new
    // interfaces) within a few seconds.
    let refresher = tokio::spawn(keep_local_addrs_current(svc.clone()));
    let sweeper = tokio::spawn(sweep_unfinished(svc.clone()));
    // The Docker plugin stops with the API (after it has stopped taking requests).
    let (stop_plugin, plugin_stopped) = tokio::sync::oneshot::channel::<()>();
    let plugin = match plugin_listener {
        Some((socket, l)) => {
            let plugin = crate::docker::Plugin::open(svc.clone(), &opts.paths.state_dir)
                .map_err(DaemonError::DockerPlugin)?;
            Some(tokio::spawn(async move {
                let stopped = async {
                    let _ = plugin_stopped.await;
                };
                api::serve_app(crate::docker::app(plugin), l, &socket, stopped).await
            }))
        }
        None => None,
    };
    let served = api::serve_app(api::router(svc), listener, &opts.paths.socket, shutdown).await;
    let _ = stop_plugin.send(());
    if let Some(task) = plugin {
        match task.await {
            Ok(r) => r?,
            Err(e) => eprintln!("netpath daemon: the Docker plugin's task failed: {e}"),
        }
    }
    served?;
    refresher.abort();
    sweeper.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    println!("netpath daemon: stopping; network and datapath stay in place");
    Ok(())
}

/// How often the daemon looks for endpoint records left `Creating` by an operation that
/// can no longer finish (see [`Service::sweep_unfinished`]).
const SWEEP_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// Rolls back unfinished endpoint records every [`SWEEP_PERIOD`], logging each.
async fn sweep_unfinished(svc: Arc<Service>) {
    let mut tick = tokio::time::interval(SWEEP_PERIOD);
    loop {
        tick.tick().await;
        match svc.sweep_unfinished().await {
            Ok(actions) => {
                for a in actions {
                    println!("netpath daemon: sweep: {a}");
                }
            }
            Err(e) => eprintln!(
                "netpath daemon: sweeping unfinished endpoints: {}",
                chain(&e)
            ),
        }
    }
}

/// Keeps the datapath's list of the host's addresses (and the uplinks' NAT66 addresses,
/// [`Service::refresh_uplinks6`]) current: re-read whenever the kernel announces an
/// address change (either family), and every [`LOCAL_ADDRS_SAFETY_NET`]; every
/// [`LOCAL_ADDRS_POLL`] if announcements are unavailable. The announcements of one
/// [`LOCAL_ADDRS_SETTLE`] are one re-read: adding a thousand routed TAPs (each host side
/// gets the gateway address) must not mean a thousand dumps of every address.
async fn keep_local_addrs_current(svc: Arc<Service>) {
    use futures::{FutureExt as _, StreamExt as _};
    let (mut changes, period) = match crate::netlink::Netlink::address_changes() {
        Ok(s) => (Some(Box::pin(s)), LOCAL_ADDRS_SAFETY_NET),
        Err(e) => {
            eprintln!(
                "netpath daemon: {}; polling the host's addresses instead",
                chain(&e)
            );
            (None, LOCAL_ADDRS_POLL)
        }
    };
    let mut tick = tokio::time::interval(period);
    loop {
        let announced = async {
            match changes.as_mut() {
                Some(c) => c.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(()) = announced => {
                tokio::time::sleep(LOCAL_ADDRS_SETTLE).await;
                if let Some(c) = changes.as_mut() {
                    while let Some(Some(())) = c.next().now_or_never() {}
                }
            }
            _ = tick.tick() => {}
        }
        if let Err(e) = svc.refresh_local_addrs().await {
            eprintln!(
                "netpath daemon: refreshing the host's addresses: {}",
                chain(&e)
            );
        }
        // And the uplinks' NAT66 addresses (SLAAC may bring one after the start).
        if let Err(e) = svc.refresh_uplinks6().await {
            eprintln!(
                "netpath daemon: refreshing the uplinks' IPv6 addresses: {}",
                chain(&e)
            );
        }
    }
}
