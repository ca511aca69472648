//! `netpath daemon`: owns the host datapath.
//!
//! This first version sets up the embedded default network (a bridge with the gateway
//! address), loads (or adopts) the pinned eBPF datapath, attaches it, reports what it
//! did and waits for SIGINT/SIGTERM. On exit it leaves everything in place: the datapath
//! is meant to outlive the daemon; `netpath reset` removes it.

use std::{
    fs,
    io::Write,
    net::IpAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::Context;
use serde::Serialize;

use crate::{
    config::{self, DEFAULT_GATEWAY, DEFAULT_NETWORK, DEFAULT_SUBNET, Paths},
    datapath::{Attachment, Datapath, Origin},
    error::UserError,
    netlink::Netlink,
    preflight,
};

#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub paths: Paths,
    /// Load fresh programs even if a pinned datapath exists (upgrades).
    pub reload: bool,
}

/// What the daemon set up, as printed at start (and as JSON for tools).
#[derive(Debug, Serialize)]
pub struct SetupReport {
    pub instance: String,
    pub network: String,
    pub subnet: String,
    pub gateway: String,
    pub bridge: String,
    pub bridge_ifindex: u32,
    pub datapath: &'static str,
    pub pins: PathBuf,
    pub attachments: Vec<String>,
}

/// Holds the daemon's exclusive lock on its state directory.
pub struct StateLock {
    _file: fs::File,
}

/// Takes the state directory's lock, so two daemons never share one state.
pub fn lock_state_dir(state_dir: &Path) -> anyhow::Result<StateLock> {
    fs::create_dir_all(state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))?;
    let path = state_dir.join("daemon.lock");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let holder = fs::read_to_string(&path).unwrap_or_default();
        return Err(UserError::new(format!(
            "another netpath daemon (pid {}) already uses {}",
            holder.trim(),
            state_dir.display()
        ))
        .hint("stop it first, or pass a different --state-dir")
        .into());
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
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

/// Sets up the default network and the datapath. Idempotent: a second run adopts what
/// the first created.
pub async fn setup(opts: &DaemonOptions) -> anyhow::Result<(SetupReport, Datapath)> {
    let paths = &opts.paths;
    let instance = paths.instance();
    let nl = Netlink::connect()?;

    let bridge_name = config::bridge_name(DEFAULT_NETWORK);
    let alias = config::link_alias(&instance, "bridge", DEFAULT_NETWORK);
    let bridge = nl.ensure_bridge(&bridge_name, &alias, None).await?;
    if !config::is_owned_by(&instance, &bridge.name, bridge.alias.as_deref()) {
        return Err(UserError::new(format!(
            "interface {bridge_name} exists but was not created by this netpath instance"
        ))
        .hint("remove it (ip link del) or run the daemon with the --state-dir that created it")
        .into());
    }
    nl.add_address(
        bridge.index,
        IpAddr::V4(DEFAULT_GATEWAY),
        DEFAULT_SUBNET.prefix_len(),
    )
    .await?;
    nl.set_up(bridge.index).await?;

    let mut datapath = Datapath::open(&paths.bpffs, opts.reload)?;
    let tc = datapath.attach_tc_ingress(&bridge.name, bridge.index)?;
    let report = SetupReport {
        instance,
        network: DEFAULT_NETWORK.into(),
        subnet: DEFAULT_SUBNET.to_string(),
        gateway: DEFAULT_GATEWAY.to_string(),
        bridge: bridge.name.clone(),
        bridge_ifindex: bridge.index,
        datapath: match datapath.origin() {
            Origin::Loaded => "loaded",
            Origin::Adopted => "adopted",
        },
        pins: paths.bpffs.clone(),
        attachments: vec![format!(
            "tc ingress (tcx) on {} [{}]",
            bridge.name,
            match tc {
                Attachment::Attached => "attached",
                Attachment::Adopted => "adopted",
                Attachment::Replaced => "replaced",
            }
        )],
    };
    Ok((report, datapath))
}

/// Runs the daemon in the foreground until SIGINT/SIGTERM.
pub async fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    preflight::require_privileges("netpath daemon")?;
    preflight::require_bpffs(&opts.paths.bpffs)?;
    let _lock = lock_state_dir(&opts.paths.state_dir)?;
    let (report, _datapath) = setup(&opts).await?;

    println!("netpath daemon (pid {}) is up", std::process::id());
    println!(
        "  network   {} {} gateway {} on bridge {} (ifindex {})",
        report.network, report.subnet, report.gateway, report.bridge, report.bridge_ifindex
    );
    println!(
        "  datapath  {} and pinned under {}",
        report.datapath,
        report.pins.display()
    );
    for a in &report.attachments {
        println!("  attached  {a}");
    }
    println!("  state     {}", opts.paths.state_dir.display());
    println!(
        "Ctrl-C stops the daemon and leaves the datapath running; `netpath reset` removes it."
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("netpath daemon: stopping; network and datapath stay in place");
    Ok(())
}
