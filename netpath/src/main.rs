//! The `netpath` command line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, error::ErrorKind};
use netpath::{
    config::{DEFAULT_BPFFS_DIR, DEFAULT_SOCKET, DEFAULT_STATE_DIR, Paths},
    daemon::{self, DaemonOptions},
    datapath::{Datapath, Pins},
    error::{UserError, one_line},
    preflight, reset,
};

/// netpath: an eBPF/XDP + tc host datapath for containers and microVMs.
///
/// Start the daemon (it creates the default network 10.200.0.0/16 and loads the
/// datapath), inspect it, and remove everything with `netpath reset`.
#[derive(Parser)]
#[command(name = "netpath", version, propagate_version = true)]
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
    /// Run the daemon in the foreground: set up the default network, load (or adopt)
    /// the pinned datapath and attach it. Ctrl-C leaves the datapath running.
    Daemon {
        /// Load fresh eBPF programs even if a pinned datapath exists (for upgrades);
        /// pinned maps and attachments are kept and switched to the new programs.
        #[arg(long)]
        reload: bool,
    },
    /// Remove everything this netpath instance created: attachments, pins, links,
    /// state. Refuses while the daemon runs.
    Reset {
        /// Print what was removed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the datapath's packet counters (per hook and packet class).
    Stats {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        /// Include classes with zero packets.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    // SAFETY: restoring the default SIGPIPE disposition before any thread exists, so
    // `netpath ... | head` ends quietly instead of panicking on a closed stdout.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
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
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("netpath: {first} — see 'netpath --help'");
            return ExitCode::from(2);
        }
    };
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let paths = Paths {
        state_dir: cli.paths.state_dir,
        socket: cli.paths.socket,
        bpffs: cli.paths.bpffs,
    };
    match cli.command {
        Command::Daemon { reload } => daemon::run(DaemonOptions { paths, reload }).await,
        Command::Reset { json } => {
            preflight::require_privileges("netpath reset")?;
            let report = reset::reset(&paths).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
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
            }
            Ok(())
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
            let stats = Datapath::open(&paths.bpffs, false)?.stats()?;
            let stats: Vec<_> = stats.into_iter().filter(|s| all || s.packets > 0).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                println!(
                    "{:<12} {:<20} {:>12} {:>14}",
                    "HOOK", "CLASS", "PACKETS", "BYTES"
                );
                for s in stats {
                    println!(
                        "{:<12} {:<20} {:>12} {:>14}",
                        s.hook, s.class, s.packets, s.bytes
                    );
                }
            }
            Ok(())
        }
    }
}
