//! The `netpath` command line: a thin client of the daemon's API (plus `daemon`, and
//! the commands that work without a daemon: `reset`, `stats`).

use std::{net::Ipv4Addr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, error::ErrorKind};
use ipnet::Ipv4Net;
use netpath::{
    client::Client,
    config::{DEFAULT_BPFFS_DIR, DEFAULT_SOCKET, DEFAULT_STATE_DIR, Paths},
    daemon::{self, DaemonOptions},
    datapath::{Datapath, Pins},
    error::{UserError, one_line},
    model::{
        Endpoint, EndpointCreate, EndpointKind, EndpointState, Mode, Network, NetworkCreate,
        PortLease, PortPublish, TapCreate,
    },
    preflight, reset,
};
use serde::Serialize;

/// netpath: an eBPF/XDP + tc host datapath for containers and microVMs.
///
/// Start the daemon (it creates the default network 10.200.0.0/16 and loads the
/// datapath), then create networks, attach containers (veth into their network
/// namespace) and microVMs (TAP devices), and remove everything with `netpath reset`.
///
/// Examples:
///   sudo netpath daemon &
///   netpath network create web --subnet 10.50.0.0/24
///   netpath endpoint add web --netns /run/netns/c1
///   netpath tap add web --name fc-tap0 --uid 1000 --gid 1000
///   netpath ls
#[derive(Parser)]
#[command(
    name = "netpath",
    version,
    propagate_version = true,
    verbatim_doc_comment
)]
struct Cli {
    #[command(flatten)]
    paths: PathArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct PathArgs {
    /// Directory of the daemon's state database and lock.
    #[arg(long, global = true, env = "NETPATH_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Unix socket of the daemon's HTTP/JSON API.
    #[arg(long, global = true, env = "NETPATH_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// bpffs directory where the datapath's maps, programs and links are pinned.
    #[arg(long, global = true, env = "NETPATH_BPFFS", default_value = DEFAULT_BPFFS_DIR)]
    bpffs: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground: load (or adopt) the pinned datapath, reconcile
    /// state with the kernel, create the default network, serve the API on --socket.
    /// Ctrl-C leaves the datapath running.
    Daemon {
        /// Load fresh eBPF programs even if a pinned datapath exists (for upgrades);
        /// pinned maps and attachments are kept and switched to the new programs.
        #[arg(long)]
        reload: bool,
        /// Do not create the default network (10.200.0.0/16).
        #[arg(long)]
        no_default_network: bool,
    },
    /// Create, remove and list networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Attach containers: a veth pair with one end in the container's network namespace.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Attach microVMs: a TAP device owned by the VMM's uid/gid, the guest a /32.
    #[command(subcommand)]
    Tap(TapCmd),
    /// Publish ports of an endpoint to the host (DNAT in BPF, no proxy, no iptables).
    #[command(subcommand)]
    Port(PortCmd),
    /// List networks and endpoints.
    Ls {
        /// Print as JSON: {"networks": [...], "endpoints": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Remove everything this netpath instance created: attachments, pins, links,
    /// state. Refuses while the daemon runs.
    Reset {
        /// Print what was removed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the datapath's counters: packets per hook and class, per endpoint, the fast
    /// path's forwards (endpoint → endpoint, uplink → endpoint, endpoint → uplink) and
    /// drops by reason; works while the daemon is down, since the datapath outlives it.
    Stats {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Include classes with zero packets.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum NetworkCmd {
    /// Create a network.
    Create {
        name: String,
        /// IPv4 subnet, e.g. 10.50.0.0/24.
        #[arg(long)]
        subnet: Ipv4Net,
        /// bridge: endpoints are ports of a Linux bridge; routed: a /32 route each.
        #[arg(long, value_enum, default_value = "bridge")]
        mode: ModeArg,
        /// Gateway address (default: the subnet's first host address).
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        /// Interface traffic leaves through (default: that of the default route).
        #[arg(long)]
        uplink: Option<String>,
        /// MTU of the network's devices (default 1500).
        #[arg(long)]
        mtu: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a network (refused while it has endpoints, unless --force).
    Rm {
        name: String,
        /// Also remove its endpoints.
        #[arg(long)]
        force: bool,
    },
    /// List networks.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Bridge,
    Routed,
}

#[derive(Subcommand)]
enum EndpointCmd {
    /// Attach a container: prints id, ip/prefix, mac, gateway and host interface.
    Add {
        network: String,
        /// The container's network namespace file (e.g. /run/netns/c1).
        #[arg(long, conflicts_with = "pid", required_unless_present = "pid")]
        netns: Option<PathBuf>,
        /// A process in the container (its /proc/PID/ns/net is used).
        #[arg(long)]
        pid: Option<u32>,
        /// Address to lease (default: the lowest free one).
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Interface name inside the container.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// MAC address (default: random, locally administered).
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Detach endpoints (container veths or TAPs) by id or unique id prefix.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List endpoints.
    Ls {
        /// Only this network's.
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PortCmd {
    /// Publish: `-p [HOSTIP:][HOSTPORT[-END]:]GUESTPORT[-END][/tcp|/udp]` (Docker's
    /// syntax; no host port = an ephemeral one; a host range for one guest port = the
    /// first free port of it). Repeatable: every -p is published, or none is.
    Publish {
        /// Endpoint id (container or TAP).
        endpoint: String,
        #[arg(short = 'p', long = "publish", required = true)]
        specs: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Unpublish: a lease id (`tcp/0.0.0.0:8080`, as `port ls` shows it), every port of
    /// an endpoint (its id), or both (the lease, only if it is that endpoint's).
    Rm {
        #[arg(required = true, num_args = 1..=2, value_name = "ENDPOINT|LEASE")]
        what: Vec<String>,
    },
    /// List published ports.
    Ls {
        #[arg(long)]
        json: bool,
    },
}

fn print_ports(leases: &[PortLease]) {
    let rows: Vec<[String; 5]> = leases
        .iter()
        .map(|l| {
            [
                l.id.clone(),
                l.endpoint.clone(),
                l.proto.to_string(),
                format!("{}:{}", l.host_ip, l.host_port),
                format!("{}:{}", l.guest_ip, l.guest_port),
            ]
        })
        .collect();
    print_table(["ID", "ENDPOINT", "PROTO", "HOST", "GUEST"], &rows);
}

#[derive(Subcommand)]
enum TapCmd {
    /// Create a TAP for a microVM: prints id, guest ip, mac, gateway and the TAP.
    Add {
        network: String,
        /// TAP device name (what the VMM opens).
        #[arg(long)]
        name: String,
        /// Owner allowed to open the TAP without privileges.
        #[arg(long)]
        uid: Option<u32>,
        /// Group allowed to open the TAP without privileges.
        #[arg(long)]
        gid: Option<u32>,
        /// Queues (a multiqueue TAP when > 1).
        #[arg(long)]
        queues: Option<u16>,
        /// Guest address to lease (default: the lowest free one).
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Guest MAC (default: random, locally administered).
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove TAP endpoints by id or unique id prefix (container endpoints are refused:
    /// `netpath endpoint rm` removes those).
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => {
            // One line instead of clap's multi-line usage dump.
            // One line: clap's message up to its usage block, lines joined.
            let rendered = e.render().to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("netpath: {message} — see 'netpath --help'");
            return ExitCode::from(2);
        }
    };
    if !matches!(cli.command, Command::Daemon { .. }) {
        // SAFETY: restoring the default SIGPIPE disposition before any thread exists, so
        // `netpath ... | head` ends quietly instead of panicking on a closed stdout. Never
        // for the daemon: there a write to a client that hung up must be an error of
        // that one request (Rust's runtime ignores SIGPIPE), not the end of the process.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netpath: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netpath: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Removes endpoints `ids` one after another (each is one request, which completes
/// whatever happens to this client), printing `done` for each; with `kind`, an endpoint of
/// another kind is refused before anything is removed. Goes on past a failure, as
/// `docker rm` does, and fails at the end if any failed.
async fn remove_endpoints(
    client: &Client,
    ids: &[String],
    kind: Option<EndpointKind>,
    done: impl Fn(&Endpoint) -> String,
) -> anyhow::Result<()> {
    if let Some(kind) = kind {
        for id in ids {
            let e = client.get_endpoint(id).await.map_err(UserError::from)?;
            if e.kind != kind {
                return Err(UserError::new(format!(
                    "endpoint {} is a {}, not a {}; nothing was removed",
                    e.id,
                    kind_name(e.kind),
                    kind_name(kind)
                ))
                .hint(format!("remove it with `netpath endpoint rm {}`", e.id))
                .into());
            }
        }
    }
    let mut failed = Vec::new();
    for id in ids {
        match client.remove_endpoint(id).await {
            Ok(e) => println!("{}", done(&e)),
            Err(e) => {
                let e = UserError::from(e);
                if ids.len() == 1 {
                    return Err(e.into());
                }
                eprintln!("netpath: {id}: {}", one_line(&e.into()));
                failed.push(id.as_str());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(UserError::new(format!(
            "{} of {} endpoints not removed: {}",
            failed.len(),
            ids.len(),
            failed.join(", ")
        ))
        .into())
    }
}

fn kind_name(kind: EndpointKind) -> &'static str {
    match kind {
        EndpointKind::Veth => "container endpoint (veth)",
        EndpointKind::Tap => "microVM TAP",
    }
}

fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints rows under headers, each column as wide as its widest cell (the last one
/// unpadded), as `docker ps` does.
fn print_table<const N: usize>(headers: [&str; N], rows: &[[String; N]]) {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers);
    for row in rows {
        line(std::array::from_fn(|i| row[i].as_str()));
    }
}

fn print_networks(networks: &[Network]) {
    let rows: Vec<[String; 8]> = networks
        .iter()
        .map(|n| {
            [
                n.name.clone(),
                n.id.to_string(),
                n.subnet.to_string(),
                n.gateway.to_string(),
                match n.mode {
                    Mode::Bridge => "bridge",
                    Mode::Routed => "routed",
                }
                .into(),
                n.bridge.clone().unwrap_or_else(|| "-".into()),
                n.uplink.clone().unwrap_or_else(|| "-".into()),
                n.mtu.to_string(),
            ]
        })
        .collect();
    print_table(
        [
            "NAME", "ID", "SUBNET", "GATEWAY", "MODE", "BRIDGE", "UPLINK", "MTU",
        ],
        &rows,
    );
}

fn state_name(state: EndpointState) -> &'static str {
    match state {
        EndpointState::Creating => "creating",
        EndpointState::Ready => "ready",
    }
}

fn print_endpoints(eps: &[Endpoint]) {
    let rows: Vec<[String; 9]> = eps
        .iter()
        .map(|e| {
            let place = match (&e.netns, &e.ifname) {
                (Some(ns), Some(ifn)) => format!("{ifn} in {}", ns.display()),
                _ => format!(
                    "uid {} gid {} queues {}",
                    e.uid.map_or("-".into(), |v| v.to_string()),
                    e.gid.map_or("-".into(), |v| v.to_string()),
                    e.queues.unwrap_or(1)
                ),
            };
            [
                e.id.clone(),
                e.network.clone(),
                format!("{:?}", e.kind).to_lowercase(),
                state_name(e.state).into(),
                format!("{}/{}", e.ip, e.prefix_len),
                e.mac.clone(),
                e.gateway.to_string(),
                e.host_ifname.clone(),
                place,
            ]
        })
        .collect();
    print_table(
        [
            "ID", "NETWORK", "KIND", "STATE", "IP", "MAC", "GATEWAY", "HOST IF", "WHERE",
        ],
        &rows,
    );
}

fn print_endpoint(e: &Endpoint, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(e);
    }
    println!("id        {}", e.id);
    println!("state     {}", state_name(e.state));
    println!("ip        {}/{}", e.ip, e.prefix_len);
    println!("mac       {}", e.mac);
    println!("gateway   {}", e.gateway);
    println!("host if   {}", e.host_ifname);
    if let Some(ifn) = &e.ifname {
        println!("ifname    {ifn}");
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let paths = Paths {
        state_dir: cli.paths.state_dir,
        socket: cli.paths.socket,
        bpffs: cli.paths.bpffs,
    };
    let client = Client::new(paths.socket.clone());
    // Every API call goes through here: daemon errors become one line with a hint.
    macro_rules! api {
        ($e:expr) => {
            $e.await.map_err(UserError::from)?
        };
    }
    match cli.command {
        Command::Daemon {
            reload,
            no_default_network,
        } => {
            daemon::run(DaemonOptions {
                paths,
                reload,
                default_network: !no_default_network,
            })
            .await
        }
        Command::Network(cmd) => match cmd {
            NetworkCmd::Create {
                name,
                subnet,
                mode,
                gateway,
                uplink,
                mtu,
                json,
            } => {
                let n = api!(client.create_network(&NetworkCreate {
                    name,
                    subnet,
                    mode: match mode {
                        ModeArg::Bridge => Mode::Bridge,
                        ModeArg::Routed => Mode::Routed,
                    },
                    gateway,
                    uplink,
                    mtu,
                }));
                if json {
                    print_json(&n)
                } else {
                    print_networks(&[n]);
                    Ok(())
                }
            }
            NetworkCmd::Rm { name, force } => {
                let n = api!(client.remove_network(&name, force));
                println!("removed network {}", n.name);
                Ok(())
            }
            NetworkCmd::Ls { json } => {
                let ns = api!(client.list_networks());
                if json {
                    print_json(&ns)
                } else {
                    print_networks(&ns);
                    Ok(())
                }
            }
        },
        Command::Endpoint(cmd) => match cmd {
            EndpointCmd::Add {
                network,
                netns,
                pid,
                ip,
                ifname,
                mac,
                json,
            } => {
                // The daemon has its own working directory: send an absolute path.
                let netns = netns.map(std::path::absolute).transpose()?;
                let e = api!(client.add_endpoint(&EndpointCreate {
                    network,
                    netns,
                    pid,
                    ip,
                    ifname: Some(ifname),
                    mac,
                    container_id: None,
                }));
                print_endpoint(&e, json)
            }
            EndpointCmd::Rm { ids } => {
                remove_endpoints(&client, &ids, None, |e| {
                    format!("removed endpoint {} ({})", e.id, e.ip)
                })
                .await
            }
            EndpointCmd::Ls { network, json } => {
                let eps = api!(client.list_endpoints(network.as_deref()));
                if json {
                    print_json(&eps)
                } else {
                    print_endpoints(&eps);
                    Ok(())
                }
            }
        },
        Command::Tap(cmd) => match cmd {
            TapCmd::Add {
                network,
                name,
                uid,
                gid,
                queues,
                ip,
                mac,
                json,
            } => {
                let e = api!(client.add_tap(&TapCreate {
                    network,
                    name,
                    uid,
                    gid,
                    queues,
                    ip,
                    mac,
                }));
                print_endpoint(&e, json)
            }
            TapCmd::Rm { ids } => {
                remove_endpoints(&client, &ids, Some(EndpointKind::Tap), |e| {
                    format!("removed tap {} {} ({})", e.id, e.host_ifname, e.ip)
                })
                .await
            }
        },
        Command::Port(cmd) => match cmd {
            PortCmd::Publish {
                endpoint,
                specs,
                json,
            } => {
                // One request: all or none.
                let all = api!(client.publish_ports(&PortPublish {
                    endpoint,
                    spec: None,
                    specs,
                }));
                if json {
                    print_json(&all)
                } else {
                    print_ports(&all);
                    Ok(())
                }
            }
            PortCmd::Rm { what } => {
                // A lease id has a protocol and an address: `tcp/0.0.0.0:8080`.
                let (leases, endpoints): (Vec<&String>, Vec<&String>) =
                    what.iter().partition(|w| w.contains('/'));
                if leases.len() > 1 || endpoints.len() > 1 {
                    return Err(UserError::new(
                        "give one endpoint, one lease id (tcp/0.0.0.0:8080), or one of each",
                    )
                    .hint("`netpath port ls` lists the leases and their endpoints")
                    .into());
                }
                let gone = api!(client.unpublish(
                    endpoints.first().map(|s| s.as_str()),
                    leases.first().map(|s| s.as_str())
                ));
                for l in &gone {
                    println!("unpublished {} (endpoint {})", l.id, l.endpoint);
                }
                Ok(())
            }
            PortCmd::Ls { json } => {
                let leases = api!(client.list_ports());
                if json {
                    print_json(&leases)
                } else {
                    print_ports(&leases);
                    Ok(())
                }
            }
        },
        Command::Ls { json } => {
            let networks = api!(client.list_networks());
            let endpoints = api!(client.list_endpoints(None));
            if json {
                #[derive(Serialize)]
                struct All {
                    networks: Vec<Network>,
                    endpoints: Vec<Endpoint>,
                }
                print_json(&All {
                    networks,
                    endpoints,
                })
            } else {
                print_networks(&networks);
                println!();
                print_endpoints(&endpoints);
                Ok(())
            }
        }
        Command::Reset { json } => {
            preflight::require_privileges("netpath reset")?;
            let report = reset::reset(&paths).await?;
            if json {
                print_json(&report)
            } else {
                println!(
                    "removed {} link(s){}{}, {} pin(s), state {}",
                    report.links_removed.len(),
                    if report.links_removed.is_empty() {
                        ""
                    } else {
                        ": "
                    },
                    report.links_removed.join(", "),
                    report.pins_removed,
                    if report.state_removed {
                        "removed"
                    } else {
                        "absent"
                    }
                );
                Ok(())
            }
        }
        Command::Stats { json, all } => {
            preflight::require_privileges("netpath stats")?;
            if !Pins::new(&paths.bpffs).complete() {
                return Err(UserError::new(format!(
                    "no netpath datapath is pinned under {}",
                    paths.bpffs.display()
                ))
                .hint("start it with `netpath daemon` (or pass the --bpffs it uses)")
                .into());
            }
            let dp = Datapath::open(&paths.bpffs, false)?;
            let classes: Vec<_> = dp
                .stats()?
                .into_iter()
                .filter(|s| all || s.packets > 0)
                .collect();
            let endpoints = dp.endpoint_stats()?;
            let drops: Vec<_> = dp
                .drops()?
                .into_iter()
                .filter(|d| all || d.packets > 0)
                .collect();
            let forwards = dp.forwards()?;
            if json {
                #[derive(Serialize)]
                struct Stats<T, E, F, D> {
                    classes: T,
                    endpoints: E,
                    forwards: F,
                    drops: D,
                }
                print_json(&Stats {
                    classes: &classes,
                    endpoints: &endpoints,
                    forwards: &forwards,
                    drops: &drops,
                })
            } else {
                println!("packets by hook and class");
                println!(
                    "  {:<12} {:<20} {:>12} {:>14}",
                    "HOOK", "CLASS", "PACKETS", "BYTES"
                );
                for s in &classes {
                    println!(
                        "  {:<12} {:<20} {:>12} {:>14}",
                        s.hook, s.class, s.packets, s.bytes
                    );
                }
                println!("endpoints (tx: sent by the endpoint; rx: delivered by the fast path)");
                println!(
                    "  {:<16} {:>8} {:>12} {:>14} {:>12} {:>14}",
                    "IP", "IFINDEX", "TX PACKETS", "TX BYTES", "RX PACKETS", "RX BYTES"
                );
                for e in &endpoints {
                    println!(
                        "  {:<16} {:>8} {:>12} {:>14} {:>12} {:>14}",
                        e.ip.to_string(),
                        e.ifindex,
                        e.tx_packets,
                        e.tx_bytes,
                        e.rx_packets,
                        e.rx_bytes
                    );
                }
                println!("fast-path forwards (past the kernel's path)");
                println!("  {:<20} {:>12} {:>14}", "WAY", "PACKETS", "BYTES");
                for f in &forwards {
                    println!("  {:<20} {:>12} {:>14}", f.way, f.packets, f.bytes);
                }
                println!("drops");
                println!("  {:<20} {:>12} {:>14}", "REASON", "PACKETS", "BYTES");
                for d in &drops {
                    println!("  {:<20} {:>12} {:>14}", d.reason, d.packets, d.bytes);
                }
                Ok(())
            }
        }
    }
}
