//! netpath's build driver: `cargo xtask <command>` (see `cargo xtask --help`).
//!
//! Every command that builds anything first runs `setup` (Debian packages, the pinned
//! toolchains, bpf-linker), which is idempotent and quick once everything is in place.

mod bench;
mod cmd;
mod install;
mod setup;
mod tasks;
mod workspace;

use std::{ffi::OsString, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::workspace::Workspace;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, lint, test and run netpath"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and tests need: Debian packages, the pinned nightly with
    /// rust-src and clippy, and bpf-linker (under .tools/). Idempotent.
    Setup,
    /// Set up, then build the netpath binary (with its eBPF object embedded) and the
    /// CNI plugin netpath-cni, into target/{release,debug}/.
    Build {
        /// Build the debug profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Set up, check formatting, run clippy (host and eBPF), build, then run the tests.
    Test {
        /// Skip the fmt and clippy steps.
        #[arg(long)]
        skip_lint: bool,
        /// Extra arguments for `cargo test`, after `--` (e.g. `-- -p tests -- --test-threads=1`).
        #[arg(last = true)]
        extra: Vec<OsString>,
    },
    /// Set up, build (release), then replace xtask with `netpath daemon ARGS...` (needs root).
    Run {
        /// Arguments for `netpath daemon`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Build (release), then install netpath and netpath-cni into <prefix>/bin, the
    /// plugin into /usr/lib/cni and /opt/cni/bin, an example CNI network
    /// /etc/cni/net.d/netpath.conflist and /etc/systemd/system/netpath.service (an
    /// existing different configuration file is kept; the new one becomes *.example).
    Install(install::InstallArgs),
    /// Set up, then run clippy on the host crates and on the eBPF crate (-D warnings).
    Clippy,
    /// Format every workspace member (`cargo +<pinned nightly> fmt --all`: rustfmt.toml uses unstable options).
    Fmt,
    /// Set up, build (release), then run `netpath-bench` (needs root): netpath against
    /// direct veth, Linux bridge, `ip` commands and CNI; report in target/bench/latest/.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the failed step and the cause chain.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Cmd) -> Result<()> {
    let ws = Workspace::locate()?;
    match command {
        Cmd::Setup => {
            let env = setup::setup(&ws)?;
            println!(
                "==> setup complete: {} and bpf-linker {}",
                env.nightly,
                env.bpf_linker.display()
            );
            Ok(())
        }
        Cmd::Build { debug } => tasks::build(ws, debug),
        Cmd::Test { skip_lint, extra } => tasks::test(ws, skip_lint, &extra),
        Cmd::Run { args } => tasks::run(ws, &args),
        Cmd::Install(args) => install::install(ws, &args),
        Cmd::Clippy => tasks::clippy(ws),
        Cmd::Fmt => tasks::fmt(ws),
        Cmd::Bench(args) => bench::bench(ws, &args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_passes_extra_args_through() {
        let cli = Cli::try_parse_from([
            "xtask",
            "test",
            "--skip-lint",
            "--",
            "-p",
            "tests",
            "--",
            "--test-threads=1",
        ])
        .unwrap();
        let Cmd::Test { skip_lint, extra } = cli.command else {
            panic!("not test");
        };
        assert!(skip_lint);
        assert_eq!(extra, ["-p", "tests", "--", "--test-threads=1"]);
    }

    #[test]
    fn install_takes_destdir_and_prefix() {
        let cli =
            Cli::try_parse_from(["xtask", "install", "--destdir", "/tmp/d", "--no-build"]).unwrap();
        let Cmd::Install(a) = cli.command else {
            panic!("not install");
        };
        assert_eq!(a.destdir.as_deref(), Some(std::path::Path::new("/tmp/d")));
        assert_eq!(a.prefix, std::path::Path::new("/usr/local"));
        assert!(a.no_build);
    }

    #[test]
    fn run_passes_daemon_args_through() {
        let cli = Cli::try_parse_from(["xtask", "run", "--config", "x.json", "-v"]).unwrap();
        let Cmd::Run { args } = cli.command else {
            panic!("not run");
        };
        assert_eq!(args, ["--config", "x.json", "-v"]);
    }
}
