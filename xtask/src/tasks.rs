//! The commands that build, lint, test and run netpath, on top of [`setup`](crate::setup).

use std::{ffi::OsString, os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::{self, Steps, step},
    setup::{self, Env},
    workspace::Workspace,
};

/// The eBPF crate: built only for `bpfel-unknown-none` (by netpath's build script, or here
/// for clippy), never for the host.
const EBPF_CRATE: &str = "netpath-ebpf";
const EBPF_TARGET: &str = "bpfel-unknown-none";

/// A located workspace plus the environment setup produced.
pub struct Ctx {
    pub ws: Workspace,
    pub env: Env,
}

impl Ctx {
    pub fn new(ws: Workspace) -> Result<Self> {
        let env = setup::setup(&ws)?;
        Ok(Self { ws, env })
    }

    /// `cargo` (the rustup proxy) for the workspace's pinned stable.
    fn cargo(&self) -> Command {
        let mut cmd = self.ws.command("cargo");
        self.env.apply(&mut cmd);
        cmd
    }

    /// `cargo +<pinned nightly>`.
    fn cargo_nightly(&self) -> Command {
        let mut cmd = self.cargo();
        cmd.arg(format!("+{}", self.env.nightly));
        cmd
    }
}

/// The `bpf_target_arch` cfg aya-ebpf needs when the eBPF crate is compiled directly (aya-build
/// sets it from the host arch when netpath's build script builds it).
fn bpf_target_arch() -> &'static str {
    match std::env::consts::ARCH {
        a if a.starts_with("riscv64") => "riscv64",
        a => a,
    }
}

pub fn build(ws: Workspace, debug: bool) -> Result<()> {
    let ctx = Ctx::new(ws)?;
    let bin = step("build", &build_what(!debug), || build_netpath(&ctx, !debug))?;
    println!("==> built {}", bin.display());
    Ok(())
}

pub(crate) fn build_what(release: bool) -> String {
    let profile = if release { "release" } else { "debug" };
    format!("netpath and netpath-cni ({profile}, with the eBPF object)")
}

/// `cargo build [--release] -p netpath --bins` (`netpath` and the CNI plugin
/// `netpath-cni`, side by side); returns the `netpath` binary.
pub(crate) fn build_netpath(ctx: &Ctx, release: bool) -> Result<PathBuf> {
    let mut c = ctx.cargo();
    c.arg("build");
    if release {
        c.arg("--release");
    }
    cmd::run(c.args(["-p", "netpath", "--bins"]))?;
    let bin = ctx.ws.netpath_bin(release);
    for b in [bin.clone(), bin.with_file_name("netpath-cni")] {
        if !b.is_file() {
            bail!("the build succeeded but {} is missing", b.display());
        }
    }
    Ok(bin)
}

/// `rustfmt.toml` uses unstable options (import grouping, as aya's): the nightly's rustfmt.
fn fmt_check(ctx: &Ctx) -> Result<()> {
    cmd::run(ctx.cargo_nightly().args(["fmt", "--all", "--check"]))
}

fn clippy_host(ctx: &Ctx) -> Result<()> {
    // `--workspace` minus the eBPF crate: it is `no_std`/`no_main` and only ever built for
    // the BPF target (the workspace's default-members leave it out for the same reason).
    cmd::run(ctx.cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        EBPF_CRATE,
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))
}

fn clippy_ebpf(ctx: &Ctx) -> Result<()> {
    let target_dir = ctx.ws.target_dir.join("ebpf-clippy");
    cmd::run(
        ctx.cargo_nightly()
            .env(
                "RUSTFLAGS",
                format!(r#"--cfg bpf_target_arch="{}""#, bpf_target_arch()),
            )
            .args([
                "clippy",
                "-p",
                EBPF_CRATE,
                "--bins",
                "--release",
                "--target",
                EBPF_TARGET,
                "-Z",
                "build-std=core",
                "--target-dir",
            ])
            .arg(target_dir)
            .args(["--", "-D", "warnings"]),
    )
}

const CLIPPY_HOST: (&str, &str) = ("clippy-host", "clippy on the host crates, -D warnings");
const CLIPPY_EBPF: (&str, &str) = (
    "clippy-ebpf",
    "clippy on netpath-ebpf for bpfel-unknown-none, -D warnings",
);

pub fn test(ws: Workspace, skip_lint: bool, extra: &[OsString]) -> Result<()> {
    let mut steps = Steps::new();
    let ctx = steps.run("setup", "toolchains, packages, bpf-linker", || Ctx::new(ws))?;
    if skip_lint {
        steps.skip("fmt, clippy-host, clippy-ebpf", "--skip-lint");
    } else {
        steps.run("fmt", "cargo +nightly fmt --all --check", || {
            fmt_check(&ctx)
        })?;
        steps.run(CLIPPY_HOST.0, CLIPPY_HOST.1, || clippy_host(&ctx))?;
        steps.run(CLIPPY_EBPF.0, CLIPPY_EBPF.1, || clippy_ebpf(&ctx))?;
    }
    let bin = steps.run("build", &build_what(true), || build_netpath(&ctx, true))?;
    steps.run("test", "cargo test (release)", || {
        cmd::run(
            ctx.cargo()
                .env("NETPATH_BIN", &bin)
                .args(["test", "--workspace", "--exclude", EBPF_CRATE, "--release"])
                .args(extra),
        )
    })?;
    steps.print_summary();
    println!("==> all steps passed");
    Ok(())
}

pub fn clippy(ws: Workspace) -> Result<()> {
    let mut steps = Steps::new();
    let ctx = steps.run("setup", "toolchains, packages, bpf-linker", || Ctx::new(ws))?;
    steps.run(CLIPPY_HOST.0, CLIPPY_HOST.1, || clippy_host(&ctx))?;
    steps.run(CLIPPY_EBPF.0, CLIPPY_EBPF.1, || clippy_ebpf(&ctx))?;
    steps.print_summary();
    Ok(())
}

pub fn fmt(ws: Workspace) -> Result<()> {
    let nightly = format!("+{}", ws.nightly()?);
    step(
        "fmt",
        "cargo fmt --all (the pinned nightly's rustfmt)",
        || cmd::run(ws.command("cargo").args([nightly.as_str(), "fmt", "--all"])),
    )
}

pub fn run(ws: Workspace, args: &[OsString]) -> Result<()> {
    if !setup::is_root() {
        bail!("netpath daemon needs root (CAP_NET_ADMIN, CAP_BPF): run `sudo -E cargo xtask run`");
    }
    let invoked_from = ws.invoked_from.clone();
    let ctx = Ctx::new(ws)?;
    let bin = step("build", &build_what(true), || build_netpath(&ctx, true))?;
    let mut daemon = ctx.ws.command(&bin);
    ctx.env.apply(&mut daemon);
    // The daemon's own arguments (config paths, …) are relative to where we were started.
    daemon.current_dir(&invoked_from).arg("daemon").args(args);
    println!("==> run: {}", cmd::display(&daemon));
    // exec: the daemon replaces xtask, so Ctrl-C and SIGTERM reach it directly.
    let err = daemon.exec();
    Err(err).with_context(|| format!("cannot exec {}", bin.display()))
}
